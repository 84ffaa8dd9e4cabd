# %% [markdown]
# # Exercise 11 — The debugging lab
#
# Six training functions, each broken by **one** bug from lesson 11's six families: a mismatched
# collective (hang), divergence between ranks, wrong averaging, a data-order bug, uneven inputs, a
# checkpoint race. Which case is which family, and in each one which rank, which step, which layer
# and which collective go wrong, is drawn from **your student id** — your classmates' cases differ.
# Each case runs on 3 ranks through `dpcourse.launch`. For every case you
#
# 1. run it and watch the symptom;
# 2. find the bug with the lesson's tools (stuck-rank report, `TORCH_DISTRIBUTED_DEBUG=DETAIL`, the
#    flight recorder, the divergence detector, a comparison with one process, per-rank logs);
# 3. write down a **diagnosis** in `diagnosis()` below;
# 4. write **`fixed_<n>(config)`**: the same training without the bug. It must return what the broken
#    one returns, end with the parameters one process computes on the global batch (to about 1e-9,
#    everything is float64), call the same collectives on every rank, and finish. Keep what the case
#    is meant to do: a layer that is frozen for some steps stays frozen for them; a checkpoint is still
#    written by the same rank and reloaded by every rank each epoch (the grader checks the epochs each
#    rank reloaded); and with uneven inputs every sample is used — for that case "one process" means:
#    each step, the sum of the gradients of the ranks that still have a batch, divided by the number of
#    ranks (what `Join` computes).
#
# ## The diagnosis
#
# `diagnosis()` returns `{case number: entry}`; each entry is a dict with
#
# | key | value |
# |---|---|
# | `"family"` | one of `"hang"`, `"divergence"`, `"averaging"`, `"data order"`, `"uneven inputs"`, `"checkpoint race"` |
# | `"ranks"` | a list of ranks (or `"all"`), see below |
# | `"op"`, `"seq"` | hang only: the operation the culprit calls as DETAIL names it (e.g. `"BROADCAST"`) and DETAIL's `SequenceNumber` — or give the flight recorder's number as `"collective_seq_id"` instead of `"seq"`; count on the function as it is (a tool that calls collectives itself, like the divergence detector, shifts the numbers) |
# | `"step"` | divergence: the first step the detector reports; data order: the first step at which a rank reads a batch a correct program would not; uneven inputs: the step at which the others wait for it (steps count from 0) |
# | `"parameter"` | divergence: the first parameter the detector names; averaging: the first parameter (in the model's order) that differs from one process **after one step** |
#
# Which ranks: for a hang, the rank that calls the collective the others do not; for divergence, the
# ranks whose parameters differ from rank 0's; for averaging, the ranks that average wrongly; for data
# order, the ranks that read a wrong batch at that step; for uneven inputs, the rank that runs out of
# data; for a checkpoint race, the ranks that read the checkpoint before it is complete.
#
# **Grading**, per family: 1 point for the family, 2 for the ranks and details, 3 for the fix. The
# family and detail checks are hidden (`check` tells you only whether your diagnosis is well-formed);
# the fixes are checked by `check("11")` below.
#
# ## Your id
#
# Replace the line in the next cell with `STUDENT_ID = "..."`: your student id or e-mail, exactly as
# your course knows you. The grader builds your cases from it; a different id means different cases.

# %% tags=["graded"]
### BEGIN SOLUTION
STUDENT_ID = "solution@dpcourse"
### END SOLUTION

# %%
import json
import tempfile

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

import dpcourse
from dpcourse import debugging
from dpcourse.debugging_lab import WORLD, DebuggingLab, make_data, make_model

lab = DebuggingLab(STUDENT_ID)
print(lab)


def run(n, timeout=5, env=None, on_step=None, config=None):
    """Launch broken_<n> on WORLD ranks, print what you see, and return the results (or the exception).
    ``on_step(step, model, batch, loss)`` is called on every rank after each step: attach tools there."""
    if config is None:
        config = lab.config(n, checkpoint=tempfile.mktemp(suffix=".pt"))
    try:
        results = dpcourse.launch(lab.broken(n, on_step=on_step), WORLD, config, timeout=timeout, env=env or {})
    except dpcourse.LaunchError as exc:
        first = str(exc).splitlines()[0].replace(tempfile.gettempdir() + "/", "$TMPDIR/")  # no machine paths
        print(f"==> {type(exc).__name__}: {first[:250]}")
        return exc
    print("==> finished without an error")
    return results


def one_process(config):
    """Plain training in one process on the global batch (WORLD x batch_size), in DistributedSampler's
    order: what a correct version of a case without freezing or uneven shards ends with."""
    x, y = make_data(config)
    model = make_model(config)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    batch = WORLD * config["batch_size"]
    for epoch in range(config["epochs"]):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(config["seed"] + epoch))
        for start in range(0, len(y), batch):
            idx = order[start:start + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

# %% [markdown]
# ## Your tools
#
# Every case calls `on_step(step, model, batch, loss)` after each optimizer step, on every rank;
# `run(n, on_step=f)` puts your function `f` there, so a tool attaches without editing the case.
#
# | question | tool |
# |---|---|
# | where is each rank stuck? | `run(n)`: the launcher prints the stuck-rank report at the timeout; `exc.ranks` lists the ranks still running |
# | which collective differs? | `exc = run(n, env={"TORCH_DISTRIBUTED_DEBUG": "DETAIL"}, timeout=20)`, then `debugging.parse_mismatch(str(exc))` |
# | what did every rank enqueue? | `run(n, env={"TORCH_FR_BUFFER_SIZE": "2000"}, on_step=start)` with a `start` that enters `debugging.FlightRecorder(folder, after=2)` once; then `debugging.analyse_flight_records(debugging.read_flight_records(folder))` |
# | do the replicas still agree? | an `on_step` that calls `detector.check(step)` on a `debugging.DivergenceDetector(model)` made at its first call |
# | does it match one process? | `one_step = {**lab.config(n), "n": WORLD * lab.config(n)["batch_size"], "epochs": 1}`; `debugging.first_difference(results[0]["params"], one_process(one_step))` |
# | what did each rank read, and when? | an `on_step` that writes `debugging.rank_logger(folder).info(...)`; `debugging.read_logs(folder)` merges the files |
#
# In each "investigate" cell, replace the `raise` line with your investigation.
#
# ## When you are stuck
#
# **Hints** (click to open; try each one before the next). They are about the six families, not
# about your cases: which case is which, and where each goes wrong, is yours to find.
#
# <details><summary>Hint 1: which family is it?</summary>
#
# Sort the cases by what `run(n)` did. Did it stop at the timeout (or crash inside gloo)? Then are
# the ranks stuck in *different* collectives, or is one rank missing from the stuck-rank report
# because it has already returned? Did it raise on a rank that never wrote anything, with an error
# about the file it tried to read? Or did it finish: then do all ranks end with the same parameters,
# and are those the parameters `one_process` computes?
#
# </details>
#
# <details><summary>Hint 2: a hang — who calls what?</summary>
#
# In which line is each rank in the stuck-rank report? A collective inside `if rank == ...:` is
# called by that rank alone: what does every other rank call at that moment instead? DETAIL names
# both calls and a `SequenceNumber`; check the number by counting the `dist.` calls in
# `lab.source(n)`: how many collectives does every rank make before step 0's all-reduce, and how
# many per step after it? For a rank that has returned: how many batches did it have, and at which
# step do the others wait for it?
#
# </details>
#
# <details><summary>Hint 3: replicas that disagree, or agree on the wrong model</summary>
#
# The divergence detector names the first step and parameter at which the ranks differ. Which
# parameters reach `average_gradients` at that step, and when was that list made? A parameter left
# out is stepped by each rank with its own gradient. When the ranks agree but differ from one
# process, compare after **one** step: do the first layers still match, and only a later layer is
# off? Then read how that layer's gradient is reduced: an all-reduce sums; how many times is the
# sum divided by the world size (`ReduceOp.AVG` divides too)? If every layer is off, the ranks did
# not train on the batch one process used: see hint 4.
#
# </details>
#
# <details><summary>Hint 4: what each rank reads, and when</summary>
#
# Log each rank's batch at every step (`on_step` gets its indices). A correct program deals **one**
# shuffle per epoch out to the ranks: at each step their batches are disjoint pieces of the same
# permutation, and the permutation changes every epoch. Compare the log with
# `DistributedSampler(range(n), num_replicas=WORLD, rank=r, seed=config["seed"])` after
# `set_epoch(epoch)`: at which step does a rank first read something else? Do all ranks pass the
# same seed, and is `set_epoch` called every epoch? For the checkpoint: log a line before and after
# the save and before each load (`rank_logger` stamps the time). Which ranks can reach
# `torch.load` before the writer is done, and what do they find there?
#
# </details>
#
# <details><summary>Hint 5 (the answer: the fix of each family)</summary>
#
# - **Hang:** every rank calls every collective. Keep the logging collective but call it on all
#   ranks (the same operation, the same `src` for a broadcast) and let only the one rank print. In
#   DETAIL's count, from 0, `broadcast_parameters` makes numbers 0 to 5 (one per parameter) and step
#   `s`'s gradient all-reduce is `6 + s`, up to the culprit's extra call; the flight recorder counts
#   the same calls from 1.
# - **Divergence:** at every step, average the parameters that are trained at that step:
#   `average_gradients([p for p in model.parameters() if p.requires_grad])` inside the loop. The
#   freezing schedule stays.
# - **Wrong averaging:** one average for every parameter, `average_gradients(list(model.parameters()))`,
#   and no second all-reduce or division for the later layers.
# - **Data order:** the same `seed=config["seed"]` on every rank, and `sampler.set_epoch(epoch)` at
#   the top of every epoch.
# - **Uneven inputs:** `with Join([ddp]):` around the loop over epochs, with
#   `from torch.distributed.algorithms.join import Join`. A rank out of data joins the others'
#   all-reduces with zeros, so every sample is used and the mean still divides by the world size.
# - **Checkpoint race:** `dist.barrier()` after the save and before anyone loads, so nobody reads a
#   file the writer has not finished. The next save cannot overwrite it under a reader, since the
#   next epoch's all-reduces wait for every rank's load; a second barrier after the loads says so
#   in the code. (On a real disk, also save to a temporary name and `os.replace` it onto the
#   checkpoint.) The same rank still writes, and every rank still reloads every epoch.
#
# </details>
#
# ## Case 1
#
# Read the code, then run it. (`lab.config(1)` is its config; every case's `on_step(...)` line is a
# callback slot that does nothing unless you pass `run(1, on_step=your_function)`.)

# %%
print(lab.source(1))

# %%
symptom_1 = run(1)

# %% [markdown]
# Investigate case 1 here.

# %%
### BEGIN SOLUTION
outcome = run(1, env={"TORCH_DISTRIBUTED_DEBUG": "DETAIL"}, timeout=20)
print(debugging.parse_mismatch(str(outcome)))
### END SOLUTION

# %% [markdown]
# ## Case 2

# %%
print(lab.source(2))

# %%
symptom_2 = run(2)

# %% [markdown]
# Investigate case 2 here.

# %%
### BEGIN SOLUTION
one_step = {**lab.config(2), "n": WORLD * lab.config(2)["batch_size"], "epochs": 1}
ranks = run(2, config=one_step)
print("ranks agree:", all(torch.equal(ranks[0]["params"][k], r["params"][k]) for r in ranks for k in ranks[0]["params"]))
print("first difference from one process after one step:",
      debugging.first_difference(ranks[0]["params"], one_process(one_step)))
### END SOLUTION

# %% [markdown]
# ## Case 3

# %%
print(lab.source(3))

# %%
symptom_3 = run(3)

# %% [markdown]
# Investigate case 3 here.

# %%
### BEGIN SOLUTION
folder = tempfile.mkdtemp()


def log_steps(step, model, batch, loss):
    debugging.rank_logger(folder).info(f"step {step} done")


outcome = run(3, on_step=log_steps)
print("raised on rank", getattr(outcome, "rank", None), "- last lines of the merged logs:")
for t, r, m in debugging.read_logs(folder)[-3:]:
    print(f"  {t:.3f} rank {r}: {m}")
### END SOLUTION

# %% [markdown]
# ## Case 4

# %%
print(lab.source(4))

# %%
symptom_4 = run(4)

# %% [markdown]
# Investigate case 4 here.

# %%
### BEGIN SOLUTION
folder = tempfile.mkdtemp()


def log_batches(step, model, batch, loss):
    debugging.rank_logger(folder).info(f"step {step} reads {json.dumps(sorted(int(i) for i in batch))}")


run(4, on_step=log_batches)
read = {(r, int(m.split()[1])): json.loads(m.split(" reads ")[1]) for _, r, m in debugging.read_logs(folder)}
config = lab.config(4)
steps_per_epoch = config["n"] // (WORLD * config["batch_size"])
wrong = {}
for r in range(WORLD):
    sampler = DistributedSampler(range(config["n"]), num_replicas=WORLD, rank=r, seed=config["seed"])
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for b in range(steps_per_epoch):
            step = epoch * steps_per_epoch + b
            if sorted(order[b * config["batch_size"]:(b + 1) * config["batch_size"]]) != read[(r, step)]:
                wrong.setdefault(step, []).append(r)
print("first step with a wrong batch, and the ranks that read one:", min(wrong), wrong[min(wrong)])
### END SOLUTION

# %% [markdown]
# ## Case 5

# %%
print(lab.source(5))

# %%
symptom_5 = run(5)

# %% [markdown]
# Investigate case 5 here.

# %%
### BEGIN SOLUTION
def detect(step, model, batch, loss, _seen={}):
    detector = _seen.setdefault("detector", debugging.DivergenceDetector(model, every=1))
    if detector.check(step) is not None and not _seen.get("printed") and dist.get_rank() == 0:
        _seen["printed"] = True
        print(detector.divergence)


_ = run(5, on_step=detect)
### END SOLUTION

# %% [markdown]
# ## Case 6

# %%
print(lab.source(6))

# %%
symptom_6 = run(6)

# %% [markdown]
# Investigate case 6 here.

# %%
### BEGIN SOLUTION
print("still running at the timeout:", symptom_6.ranks, "- shard sizes:", lab.config(6)["shard_sizes"],
      "- batches per rank:", [s // lab.config(6)["batch_size"] for s in lab.config(6)["shard_sizes"]])
### END SOLUTION

# %% [markdown]
# ## Your diagnoses

# %% tags=["graded"]
def diagnosis():
    """{case number: {"family": ..., "ranks": [...], ...}} - see the table at the top."""
    ### BEGIN SOLUTION
    return {
        1: {"family": "hang", "ranks": [1], "op": "ALLREDUCE", "seq": 10},
        2: {"family": "averaging", "ranks": "all", "parameter": "4.weight"},
        3: {"family": "checkpoint race", "ranks": [0, 1]},
        4: {"family": "data order", "ranks": [1, 2], "step": 0},
        5: {"family": "divergence", "ranks": [1, 2], "step": 4, "parameter": "4.weight"},
        6: {"family": "uneven inputs", "ranks": [0], "step": 2},
    }
    ### END SOLUTION

# %% [markdown]
# ## Your fixes
#
# Start from `print(lab.source(n))`: copy the function, rename it `fixed_<n>`, fix the bug. Keep the
# imports you need in the cell (the grader runs these cells, and the imports of the other cells).

# %% tags=["graded"]
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel as DDP

from dpcourse.debugging_lab import average_gradients, broadcast_parameters, read_shard, slow_save


def fixed_1(config):
    ### BEGIN SOLUTION
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    step = 0
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))
            opt.step()
            if (step + 1) % 4 == 0:  # every rank joins the all-reduce for the log; rank 1 prints it
                mean = loss.detach().reshape(1).clone()
                dist.all_reduce(mean)
                if rank == 1:
                    print(f"step {step}: mean loss {mean.item() / world:.4f}")
            step += 1
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    ### END SOLUTION


def fixed_2(config):
    ### BEGIN SOLUTION
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))  # the head too: summed, then divided, like the rest
            opt.step()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    ### END SOLUTION


def fixed_3(config):
    ### BEGIN SOLUTION
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    loaded = []
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))
            opt.step()
        if rank == 2:
            slow_save({"model": model.state_dict(), "epoch": epoch}, config["checkpoint"])
        dist.barrier()  # nobody reads before the writer is done
        state = torch.load(config["checkpoint"], weights_only=True)
        model.load_state_dict(state["model"])
        loaded.append(state["epoch"])
        dist.barrier()  # and the writer does not overwrite it while others still read
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}, "loaded": loaded}
    ### END SOLUTION


def fixed_4(config):
    ### BEGIN SOLUTION
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True,
                                 seed=config["seed"])  # one seed for all ranks: one shuffle, dealt out
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))
            opt.step()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    ### END SOLUTION


def fixed_5(config):
    ### BEGIN SOLUTION
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    frozen = list(model[4].parameters())
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    step = 0
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            if step == 4:
                for p in frozen:
                    p.requires_grad_(True)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients([p for p in model.parameters() if p.requires_grad])  # every trained layer, every step
            opt.step()
            step += 1
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    ### END SOLUTION


def fixed_6(config):
    ### BEGIN SOLUTION
    rank = dist.get_rank()
    x, y = read_shard(config, rank)
    model = make_model(config)
    ddp = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    with Join([ddp]):  # the rank that runs out of data shadows the others' all-reduces
        for epoch in range(config["epochs"]):
            for start in range(0, len(y), config["batch_size"]):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(ddp(x[start:start + config["batch_size"]]),
                                                   y[start:start + config["batch_size"]])
                loss.backward()
                opt.step()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    ### END SOLUTION

# %% [markdown]
# ## Self-check
#
# Runs the visible tests in separate processes: whether your diagnosis is well-formed, and every fix
# (a fix that still hangs is stopped, and says so). The diagnosis itself is graded by the instructor.

# %%
from dpcourse.grading import check

check("11")
