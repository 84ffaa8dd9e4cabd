# %% [markdown]
# # Lesson 11 — When data parallelism goes wrong: a field guide
#
# Data-parallel code rarely fails because a formula is wrong. It fails because one rank did
# something the others did not: it called one collective more, it never got rank 0's weights, it
# divided by the world size twice, it read the same shuffle every epoch, it ran out of data first,
# it read a checkpoint that another rank was still writing. Some of these **hang**, some **crash**
# far from the cause, and the worst ones **train quietly to the wrong model**.
#
# **The question of this lesson:** given a run that hangs or trains wrong, how do you find *which
# rank*, *which step* and *which collective*, quickly and without guessing?
#
# Six families of bugs, each with the same three parts:
#
# | family | the symptom | the tool that finds it |
# |---|---|---|
# | 1. mismatched collectives | a hang (or a crash inside gloo) | the launcher's stuck-rank report, `TORCH_DISTRIBUTED_DEBUG=DETAIL`, the flight recorder |
# | 2. divergence between ranks | none: replicas drift apart silently | the divergence detector (`dpcourse.debugging`) |
# | 3. wrong averaging | none: a slower, different training | a comparison with one process |
# | 4. data-order bugs | none: each epoch repeats the last | logging per rank |
# | 5. uneven inputs | a hang at the end of the data | the stuck-rank report, then `Join` |
# | 6. checkpoint races | a crash on *another* rank, sometimes | logging per rank, with times |
#
# Every broken example below really runs, with a short timeout, and you see what a learner sees.
# All of them train the same small classifier with the hand-written data parallelism of lesson 05
# (rank 0's weights broadcast at the start, one all-reduce of the gradients per step), built from
# the helpers in `dpcourse.debugging_lab` — the same ones exercise 11 uses.

# %%
import contextlib
import io
import json
import os
import tempfile
import time

import matplotlib.pyplot as plt
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

import dpcourse
from dpcourse import debugging
from dpcourse.debugging_lab import (Case, average_gradients, broadcast_parameters, make_data, make_model,
                                    read_shard, reference, slow_save)

WORLD = 2
CONFIG = {"seed": 0, "n": 48, "features": 8, "classes": 3, "hidden": 16, "batch_size": 4, "epochs": 2, "lr": 0.2}
STEPS = CONFIG["epochs"] * CONFIG["n"] // (WORLD * CONFIG["batch_size"])
print(f"torch {torch.__version__}; {WORLD} ranks on gloo, {CONFIG['batch_size']} samples per rank per step, "
      f"{STEPS} steps; CPU cores: {os.cpu_count()}")


def rank_batches(config, n):
    """``(step, indices)`` of this rank's batches: a DistributedSampler, reshuffled every epoch
    (``set_epoch``). Section 4's bugs live in this loop, so there it is written out."""
    sampler = DistributedSampler(range(n), num_replicas=dist.get_world_size(), rank=dist.get_rank(),
                                 seed=config["seed"])
    step = 0
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            yield step, order[start:start + config["batch_size"]]
            step += 1


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def one_process(config, **case):
    """What a correct version computes: one process on the global batch (WORLD x batch_size)."""
    import numpy as np

    want = reference(Case(0, case.pop("family", "hang"), case, config, ""), world=WORLD)
    return {k: torch.from_numpy(np.asarray(v)) for k, v in want.items()}


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in b)


def symptom(fn, *args, timeout=4, **kw):
    """Launch a broken function and show what the learner sees. Returns (the exception or the
    results, everything the ranks wrote to stderr - the stuck-rank report among it)."""
    start = time.monotonic()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            outcome = dpcourse.launch(fn, WORLD, *args, timeout=timeout, **kw)
        how = f"finished after {time.monotonic() - start:.1f} s, no error"
    except dpcourse.LaunchError as exc:
        outcome = exc
        first = str(exc).splitlines()[0].replace(tempfile.gettempdir(), "$TMPDIR")  # no machine paths
        how = f"after {time.monotonic() - start:.1f} s: {type(exc).__name__}: {first[:300]}"
    shown = [line for line in err.getvalue().splitlines() if "site-packages" not in line and "c10d_logger" not in line]
    print("\n".join(shown[-40:]))
    print(f"\n==> {how}")
    return outcome, err.getvalue()

# %% [markdown]
# ## 1. Hangs from mismatched collectives
#
# A collective is a meeting: it completes only when **every** rank of the group has called the
# **same** collective. Here is the bug from a hundred issue trackers: rank 0 prints a progress line
# every few steps — and, to keep the others from running ahead, calls `dist.barrier()`. Only rank 0.

# %%
def train_log_barrier(config, every=3):
    rank = dist.get_rank()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)                      # collectives #0-#5: one per parameter
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    for step, idx in rank_batches(config, len(y)):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        average_gradients(list(model.parameters()))  # one all-reduce per step
        opt.step()
        if rank == 0 and (step + 1) % every == 0:    # THE BUG: a collective on one rank only
            print(f"step {step}: loss {loss.item():.4f}")
            dist.barrier()
    return params_of(model)


hang, report = symptom(train_log_barrier, CONFIG, timeout=4)

# %% [markdown]
# **What you see.** Nothing happens for the whole timeout; then the launcher stops the ranks and
# raises `LaunchTimeout` naming the ones still running. Just before it kills them, it asks each one
# where it is — that is **the launcher's stuck-rank report**, the `stuck here` stacks above. Read
# the last line of each stack: one rank waits in `dist.barrier()`, the other in the all-reduce inside
# `average_gradients`. Two ranks in two *different* collectives: that is the signature of a
# mismatch. (On a real cluster, `py-spy dump --pid PID` on each rank gives you the same picture.)

# %%
stuck_in = {r: [line for line in report.splitlines() if line.startswith(f"[rank {r}]") and "dist." in line][-1:]
            for r in range(WORLD)}
print("ranks still running when the timeout hit:", hang.ranks)
for r, lines in stuck_in.items():
    print(f"rank {r} is stuck at: {lines[0].split(']', 1)[1].strip() if lines else '?'}")
assert isinstance(hang, dpcourse.LaunchTimeout) and "barrier" in stuck_in[0][0] and "barrier" not in stuck_in[1][0]

# %% [markdown]
# ### `TORCH_DISTRIBUTED_DEBUG=DETAIL`: turn the hang into an error
#
# With `TORCH_DISTRIBUTED_DEBUG=DETAIL` torch wraps the process group: before every collective the
# ranks first compare *fingerprints* — a sequence number, the operation, the tensor shapes — over a
# side channel, and raise at the first one that differs. That adds communication before every
# collective (use it to debug, not to train), and it needs nothing but the environment variable.

# %%
detail, _ = symptom(train_log_barrier, CONFIG, timeout=20, env={"TORCH_DISTRIBUTED_DEBUG": "DETAIL"})
mismatch = debugging.parse_mismatch(str(detail))
print("\nparsed:", mismatch)

# %% [markdown]
# The message says which ranks disagree, the **sequence number** of the collective (DETAIL counts the
# group's collectives from 0) and what each rank was calling. The number points at the line: the
# function first broadcast 6 parameters (numbers 0 to 5), then made one all-reduce per step (6 + step).

# %%
assert mismatch is not None
extra_after = mismatch.seq - 6 - 1
print(f"collective #{mismatch.seq} = 6 broadcasts + {mismatch.seq - 6} all-reduces before it: the extra call "
      f"came right after the all-reduce of step {extra_after}, and (step + 1) % 3 == 0 first holds at step 2: "
      f"{extra_after == 2}")

# %% [markdown]
# (How a barrier is described varies: the rank inside it shows `BARRIER`; seen from the other rank,
# torch reports the internal collective the barrier is made of. The sequence number is what to trust.)
#
# ### The flight recorder
#
# PyTorch's **flight recorder** keeps, on every rank, a ring buffer of the last collectives it
# enqueued (`TORCH_FR_BUFFER_SIZE` entries), with a sequence number (counted from **1**), the
# operation, the shapes and a state. Dumped from a stuck job, it tells you where each rank got to.
# It was written for NCCL; does this torch record on gloo too? Test it, don't assume:

# %%
FR_ON_GLOO = debugging.flight_recorder_supported("gloo")
print(f"torch {torch.__version__}: flight recorder on gloo: {FR_ON_GLOO}")

# %% [markdown]
# `dpcourse.debugging.FlightRecorder(folder, after=s)` dumps the rank's trace to `folder/rank<r>.json`
# when the rank is still busy after `s` seconds (from a thread of its own: a rank waiting in a
# collective does not hold Python's lock), and `analyse_flight_records` lines the ranks up.

# %%
def recorded(folder, config):
    with debugging.FlightRecorder(folder, after=2.0):
        return train_log_barrier(config)


if FR_ON_GLOO:
    fr_folder = tempfile.mkdtemp(prefix="fr-")
    symptom(recorded, fr_folder, CONFIG, timeout=4, env={"TORCH_FR_BUFFER_SIZE": "2000"})
    print()
    fr_report = debugging.analyse_flight_records(debugging.read_flight_records(fr_folder))
    print(fr_report)
    assert f"first disagreement at collective #{mismatch.seq + 1}:" in fr_report and "barrier" in fr_report
else:
    print("This torch has no flight recorder for gloo: use the stuck-rank report and DETAIL here; "
          "on GPUs, set TORCH_FR_BUFFER_SIZE and dump with torch's NCCL trace.")

# %% [markdown]
# The first disagreement is the bug: one rank enqueued a barrier where the other enqueued the next
# all-reduce. The recorder's number is DETAIL's plus one (it counts from 1). On GPUs the same
# recorder runs inside NCCL (`TORCH_FR_BUFFER_SIZE`, dumped on a watchdog timeout to
# `TORCH_FR_DUMP_TEMP_FILE`, analysed with `python -m torch.distributed.flight_recorder.fr_trace`);
# `tests/test_debugging.py` runs our helper on NCCL when a GPU is present, and so does the next cell.

# %%
def nccl_recorded(folder):
    t = torch.ones(4, device=dpcourse.device())
    with debugging.FlightRecorder(folder, after=30.0):
        for _ in range(3):
            dist.all_reduce(t)
        torch.cuda.synchronize()
    return True


if torch.cuda.is_available() and debugging.flight_recorder_supported("nccl"):
    nccl_folder = tempfile.mkdtemp(prefix="fr-nccl-")
    dpcourse.launch(nccl_recorded, 1, nccl_folder, backend="nccl", env={"TORCH_FR_BUFFER_SIZE": "100"}, timeout=120)
    entries = debugging.read_flight_records(nccl_folder)[0]["entries"]
    print("NCCL flight recorder:", [(e["collective_seq_id"], e["profiling_name"]) for e in entries])
else:
    print("no GPU with NCCL here: the NCCL flight recorder is skipped (tests/test_debugging.py runs it on GPU machines).")

# %% [markdown]
# **The fix:** every rank calls the same collectives in the same order. Put the barrier outside the
# `if`, or drop it — a barrier "to let the others catch up" buys nothing, the next all-reduce waits
# anyway.

# %%
def train_log_fixed(config, every=3):
    rank = dist.get_rank()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    for step, idx in rank_batches(config, len(y)):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        average_gradients(list(model.parameters()))
        opt.step()
        if (step + 1) % every == 0:
            if rank == 0:                            # one rank prints ...
                print(f"step {step}: loss {loss.item():.4f}")
            dist.barrier()                           # ... every rank meets (or drop the barrier)
    return params_of(model)


fixed = dpcourse.launch(train_log_fixed, WORLD, CONFIG, timeout=30)
hang_fix_diff = max_diff(fixed[0], one_process(CONFIG))
print(f"finished; max difference from one process on the global batch: {hang_fix_diff:.1e}")
assert hang_fix_diff < 1e-9 and max_diff(fixed[0], fixed[1]) == 0

# %% [markdown]
# ## 2. Divergence between ranks
#
# Data parallelism rests on one invariant: **all replicas hold the same parameters** after every
# step. Break it and nothing hangs, nothing crashes — each rank just trains its own model, and the
# one you save is rank 0's. Here is a realistic way to break it: the first layer is frozen for the
# first 3 steps, then unfrozen. The list of parameters whose gradients get averaged was built
# *before* the unfreeze — so from step 3 on, each rank updates layer 0 with its own gradient only.

# %%
def with_frozen_layer(config, layer):
    """The model, the same on every rank, with layer `layer` frozen; and a function that unfreezes it."""
    model = make_model(config)
    broadcast_parameters(model)
    model[layer].requires_grad_(False)
    return model, lambda: model[layer].requires_grad_(True)


def train_unfreeze(config, layer=0, unfreeze_at=3, every=1):
    x, y = make_data(config)
    model, unfreeze = with_frozen_layer(config, layer)
    averaged = [p for p in model.parameters() if p.requires_grad]   # THE BUG: built once, before the unfreeze
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    detector = debugging.DivergenceDetector(model, every=every)     # THE TOOL
    for step, idx in rank_batches(config, len(y)):
        if step == unfreeze_at:
            unfreeze()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        average_gradients(averaged)
        opt.step()
        detector.check(step)                                    # on every rank: it is a collective
    return {"params": params_of(model), "divergence": detector.divergence}


drifted, _ = symptom(train_unfreeze, CONFIG, timeout=30)
apart = max_diff(drifted[0]["params"], drifted[1]["params"])
print(f"largest difference between rank 0's and rank 1's parameters at the end: {apart:.2e}")

# %% [markdown]
# **What you see:** nothing — the run finishes. Only comparing the ranks' parameters shows that they
# are no longer one model. **The tool:** `DivergenceDetector(model, every=k)`. Every `k` steps each
# rank computes one checksum per parameter (a position-weighted sum, so even two swapped values
# change it), an `all_gather` brings all of them to every rank, and the first step and the first
# parameter where a rank disagrees with rank 0 are recorded:

# %%
print("every=1:", drifted[0]["divergence"])
coarse = dpcourse.launch(train_unfreeze, WORLD, CONFIG, 0, 3, 4, timeout=30)[0]["divergence"]
print("every=4:", coarse)
assert drifted[0]["divergence"].step == 3 and drifted[0]["divergence"].parameter == "0.weight"

# %% [markdown]
# With `every=1` the detector names the exact step; with `every=4` it checks four times less often
# and can only bracket the split between two checks — the price of a cheaper check. A checksum is 8
# bytes per parameter *tensor*, so even `every=1` costs far less than the gradient all-reduce.
#
# Other ways to get here: no broadcast at the start with a seed that depends on the rank; BatchNorm
# running statistics that each rank keeps for itself (they are buffers: check
# `model.named_buffers()` too); a random augmentation or dropout seeded identically where it must
# differ, or the reverse; an optimizer step taken on one rank only.
#
# **The fix:** average the gradients of every parameter that has one, every step.

# %%
def train_unfreeze_fixed(config, layer=0, unfreeze_at=3):
    x, y = make_data(config)
    model, unfreeze = with_frozen_layer(config, layer)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    detector = debugging.DivergenceDetector(model, every=1, stop=True)  # stop at once if they split
    for step, idx in rank_batches(config, len(y)):
        if step == unfreeze_at:
            unfreeze()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        average_gradients([p for p in model.parameters() if p.requires_grad])  # every step, every layer
        opt.step()
        detector.check(step)
    return params_of(model)


agree = dpcourse.launch(train_unfreeze_fixed, WORLD, CONFIG, timeout=30)
diverge_fix_diff = max_diff(agree[0], one_process(CONFIG, family="divergence", layer=0, step=3))
print(f"no divergence at any step; max difference from one process: {diverge_fix_diff:.1e}")
assert diverge_fix_diff < 1e-9

# %% [markdown]
# ## 3. Wrong averaging
#
# DDP averages gradients for you. Add your own division on top — `all_reduce(op=ReduceOp.AVG)` and
# then `/ world`, or a loss divided by the world size "because there are several ranks" — and every
# update is `world` times too small. Forget the division (a plain sum) and they are `world` times too
# large, which is the same as a learning rate `world` times larger: the classic *lr not scaled with
# the global batch* in reverse. Every rank makes the same mistake, so the replicas **agree**: the
# divergence detector stays silent.

# %%
def train_avg_twice(config):
    world = dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    detector = debugging.DivergenceDetector(model, every=1)
    for step, idx in rank_batches(config, len(y)):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        for p in model.parameters():
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)   # averaged ...
            p.grad /= world                                  # ... THE BUG: and divided again
        opt.step()
        detector.check(step)
    return {"params": params_of(model), "divergence": detector.divergence}


one_step = {**CONFIG, "n": WORLD * CONFIG["batch_size"], "epochs": 1}   # one step: the cleanest comparison
twice = dpcourse.launch(train_avg_twice, WORLD, one_step, timeout=30)
print("divergence detector:", twice[0]["divergence"])
initial = params_of(make_model(CONFIG))
want = one_process(one_step)
name, diff, _ = debugging.first_difference(twice[0]["params"], want)
got_update = twice[0]["params"][name] - initial[name]
want_update = want[name] - initial[name]
update_ratio = (got_update.norm() / want_update.norm()).item()
print(f"first parameter that differs from one process: {name!r} (max difference {diff:.2e}); "
      f"its update is {update_ratio:.3f} x the right one (1/world = {1 / WORLD:.3f})")
assert twice[0]["divergence"] is None and abs(update_ratio - 1 / WORLD) < 1e-9

# %% [markdown]
# **The tool** here is the oldest one: compare with a single process on the global batch (lesson
# 02's identity), after **one** step. After one step the factor is exact; after several, the wrong
# updates change the losses and the gradients too, and the error spreads to every layer. Comparing
# *updates* (parameters minus their starting values), not parameters, shows the factor.
#
# **The fix:** reduce with a sum and divide once (or use `ReduceOp.AVG` alone). With DDP, do nothing:
# it already divides by the world size.

# %%
twice_fixed = dpcourse.launch(train_log_fixed, WORLD, one_step, timeout=30)
avg_fix_diff = max_diff(twice_fixed[0], want)
print(f"averaging once (the section-1 function): max difference from one process after one step {avg_fix_diff:.1e}")
assert avg_fix_diff < 1e-9

# %% [markdown]
# ## 4. Data-order bugs
#
# `DistributedSampler` deals one shuffle out to the ranks, and `set_epoch(epoch)` reseeds it every
# epoch. Forget `set_epoch` and every epoch repeats epoch 0's order; seed each rank's sampler
# differently ("so the ranks see different data") and the ranks' shards overlap, so some samples are
# seen twice per epoch and others never. Neither warns. **The tool:** log, per rank, what each step
# reads — `debugging.rank_logger(folder)` gives each rank its own file with every line stamped with
# rank and time, and `read_logs(folder)` merges them.

# %%
def train_logging_batches(config, folder, bug):
    rank, world = dist.get_rank(), dist.get_world_size()
    log = debugging.rank_logger(folder)                        # THE TOOL: one file per rank
    seed = config["seed"] + (rank if bug == "seed per rank" else 0)
    sampler = DistributedSampler(range(config["n"]), num_replicas=world, rank=rank, seed=seed)
    for epoch in range(config["epochs"]):
        if bug != "no set_epoch":
            sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            log.info(f"epoch {epoch} batch {start // config['batch_size']} reads {order[start:start + config['batch_size']]}")
    return True


orders = {}
for bug in ("no set_epoch", "seed per rank", None):
    folder = tempfile.mkdtemp(prefix="logs-")
    dpcourse.launch(train_logging_batches, WORLD, CONFIG, folder, bug, timeout=30)
    lines = debugging.read_logs(folder)
    orders[bug] = {(r, m.split(" reads ")[0]): json.loads(m.split(" reads ")[1]) for _, r, m in lines}
    if bug == "no set_epoch":
        for _, r, m in lines:
            if r == 0 and " batch 0 " in m:
                print(f"rank {r}: {m}")


def samples_seen(order, epoch):
    seen = [i for (r, what), idx in order.items() if what.startswith(f"epoch {epoch} ") for i in idx]
    return len(seen), len(set(seen))


repeat = orders["no set_epoch"][(0, "epoch 0 batch 0")] == orders["no set_epoch"][(0, "epoch 1 batch 0")]
total, distinct = samples_seen(orders["seed per rank"], 0)
print(f"without set_epoch, epoch 1 starts with epoch 0's batch: {repeat}")
print(f"seeded per rank: {total} reads in epoch 0 but only {distinct} distinct samples of {CONFIG['n']}")
print(f"correct: {samples_seen(orders[None], 0)[1]} distinct samples of {CONFIG['n']} in epoch 0, "
      f"new order in epoch 1: {orders[None][(0, 'epoch 0 batch 0')] != orders[None][(0, 'epoch 1 batch 0')]}")
assert repeat and distinct < CONFIG["n"] == samples_seen(orders[None], 0)[1]

# %% [markdown]
# **The fix:** one seed for all ranks' samplers, and `sampler.set_epoch(epoch)` at the top of every
# epoch (lesson 07). The logs make the check a one-liner: each epoch, the union of the ranks' reads
# is the whole data set, and epoch `e + 1` does not repeat epoch `e`.
#
# ## 5. Uneven inputs and `Join`
#
# When every rank reads its own file, the files rarely hold the same number of batches. DDP
# all-reduces in every backward; the rank that runs out of data leaves the loop and the others wait
# for it in an all-reduce it will never join. Here rank 1 has 2 batches and rank 0 has 4.

# %%
UNEVEN = {**CONFIG, "epochs": 1, "n": 24, "shard_sizes": [16, 8]}


def train_uneven(config, join=False):
    from torch.distributed.algorithms.join import Join
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank = dist.get_rank()
    x, y = read_shard(config, rank)                 # every rank reads its own file
    model = make_model(config)
    ddp = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    with Join([ddp]) if join else contextlib.nullcontext():
        for start in range(0, len(y), config["batch_size"]):
            opt.zero_grad()
            b = slice(start, start + config["batch_size"])
            nn.functional.cross_entropy(ddp(x[b]), y[b]).backward()
            opt.step()
    result = params_of(model)
    del ddp, opt
    return result


uneven, _ = symptom(train_uneven, UNEVEN, timeout=4)

# %% [markdown]
# **The tool:** the stuck-rank report again. Only rank 0 is still running — stuck in `backward()`,
# where DDP's all-reduce waits — and rank 1, the one with less data, is not: it finished. A rank
# that is *missing* from the report is as telling as a rank in it.

# %%
print("still running:", uneven.ranks, "- finished:", sorted(set(range(WORLD)) - set(uneven.ranks)))
assert uneven.ranks == [0]

# %% [markdown]
# **The fix:** `with Join([ddp]):` around the loop. A rank that runs out of data *joins*: it keeps
# taking part in the others' all-reduces with zero gradients until everyone is done, and at the end
# the final parameters are synchronised. The math is then: each step, the sum of the gradients of
# the ranks that still had a batch, divided by the whole world — which one process can compute too.

# %%
joined = dpcourse.launch(train_uneven, WORLD, UNEVEN, True, timeout=30)
join_diff = max_diff(joined[0], one_process(UNEVEN, family="uneven inputs"))
print(f"with Join: finished; ranks identical: {max_diff(joined[0], joined[1]) == 0}; "
      f"max difference from that one-process computation: {join_diff:.1e}")
assert join_diff < 1e-9

# %% [markdown]
# (Dropping the extra batches — every rank stops at the shortest shard — is the other fix, when
# the data may be cut. `DistributedSampler` avoids the problem by padding every rank to the same
# count.)
#
# ## 6. Checkpoint races
#
# Rank 0 saves a checkpoint; then every rank reloads it, to check that resuming works. Writing takes
# time — on a network file system, a lot of it (`slow_save` writes half, waits half a second, writes
# the rest). Without a barrier the readers do not wait for the writer.

# %%
def train_save_reload(config, path, folder, barrier=False):
    rank = dist.get_rank()
    log = debugging.rank_logger(folder)
    model = make_model(config)
    for epoch in range(2):
        if rank == 0:
            log.info(f"epoch {epoch}: writing")
            tmp = f"{path}.tmp{rank}"
            slow_save({"model": model.state_dict(), "epoch": epoch}, tmp if barrier else path)
            if barrier:
                os.replace(tmp, path)               # atomic: a reader sees the old file or the new one
            log.info(f"epoch {epoch}: written")
        if barrier:
            dist.barrier()                          # nobody reads before the writer is done
        log.info(f"epoch {epoch}: reading")
        state = torch.load(path, weights_only=True)
        log.info(f"epoch {epoch}: read epoch {state['epoch']}")
        if barrier:
            dist.barrier()                          # and nobody overwrites it while others read
    return True


race_dir = tempfile.mkdtemp(prefix="ckpt-")
race, _ = symptom(train_save_reload, CONFIG, f"{race_dir}/ckpt.pt", f"{race_dir}/logs", timeout=30)
print()
t0 = min(t for t, _, _ in debugging.read_logs(f"{race_dir}/logs"))
for t, r, m in debugging.read_logs(f"{race_dir}/logs"):
    print(f"{t - t0:7.3f} s  rank {r}: {m}")

# %% [markdown]
# **What you see** is a crash on a rank that did nothing wrong by itself — usually `FileNotFoundError`
# or torch's "failed finding central directory" (a half-written zip file). Which one you get, and
# when, depends on timing: run it twice and the message can change, which is the mark of a race.
# **The tool:** the per-rank logs with times, merged: a rank reads while no `written` line exists
# yet. **The fix:** write to a temporary name and `os.replace` it (atomic on one file
# system), and put a `dist.barrier()` between the write and the reads (and another before the next
# write). Saving from *every* rank to one path is the same race with more writers: save on one rank.

# %%
if isinstance(race, dpcourse.LaunchError):
    first = str(race).splitlines()[0].replace(tempfile.gettempdir(), "$TMPDIR")
    print(f"broken: {type(race).__name__} on rank {getattr(race, 'rank', '?')}: {first[:120]}")
else:
    print("broken: this time every reader happened to come late enough - the race did not show (run it again)")
calm_dir = tempfile.mkdtemp(prefix="ckpt-")
dpcourse.launch(train_save_reload, WORLD, CONFIG, f"{calm_dir}/ckpt.pt", f"{calm_dir}/logs", True, timeout=30)
reads = [m for _, r, m in debugging.read_logs(f"{calm_dir}/logs") if "read epoch" in m]
print(f"fixed: {len(reads)} reads, all after the write: {reads}")
assert len(reads) == 2 * WORLD

# %% [markdown]
# ## Where the time went
#
# Each tool answers a different question, and costs different amounts. The hangs cost the most:
# a whole timeout each. DETAIL turned the same bug into an error at once.

# %%
timings = {}
for label, run in [("hang, plain", lambda: dpcourse.launch(train_log_barrier, WORLD, CONFIG, timeout=3)),
                   ("hang, DETAIL", lambda: dpcourse.launch(train_log_barrier, WORLD, CONFIG, timeout=20,
                                                            env={"TORCH_DISTRIBUTED_DEBUG": "DETAIL"}))]:
    start = time.monotonic()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            run()
        except dpcourse.LaunchError:
            pass
    timings[label] = time.monotonic() - start
plt.figure(figsize=(5, 2.2))
plt.barh(list(timings), list(timings.values()))
plt.xlabel("seconds until you know")
plt.title("The same bug: waiting for a timeout (3 s) vs DETAIL")
plt.tight_layout()
plt.show()
print(", ".join(f"{k}: {v:.1f} s" for k, v in timings.items()),
      f"- DETAIL answered {'sooner' if timings['hang, DETAIL'] < timings['hang, plain'] else 'not sooner'}")

# %% [markdown]
# ## The checklist to keep
#
# **Before you launch**
# - Every collective sits on a path that **every rank** takes: no `dist.*` inside `if rank == 0`
#   (logging, saving, evaluation), none after a data-dependent `continue` or `break`.
# - Rank 0's weights reach everyone (DDP broadcasts them; by hand, `broadcast` every parameter).
# - Gradients are averaged **once**: DDP, or a sum and one division — not both, and no loss scaled
#   by the world size on top. Scale the learning rate with the *global* batch on purpose, or not at all.
# - One sampler seed for all ranks; `sampler.set_epoch(epoch)` every epoch.
# - Ranks with different amounts of data: `Join`, or cut to the shortest.
# - One rank writes checkpoints, to a temporary name, then `os.replace`; a barrier before anyone reads.
#
# **When it hangs**
# 1. Launch with a timeout (`dpcourse.launch(..., timeout=)`, `init_process_group(timeout=)`); read
#    the stuck-rank report: which ranks are stuck, and in which line — two ranks in different
#    collectives is a mismatch; a rank missing from the report finished early.
# 2. Re-run with `TORCH_DISTRIBUTED_DEBUG=DETAIL`: the first mismatched collective, its sequence
#    number (from 0), each rank's operation and shapes.
# 3. On a big job: the flight recorder (`TORCH_FR_BUFFER_SIZE`; sequence numbers from 1) — dump, line
#    the ranks up, find the first disagreement.
#
# **When it trains wrong**
# 1. Do the ranks agree? `DivergenceDetector(model, every=k)`: first step and first parameter.
# 2. Do they agree *with one process*? Run one step both ways and compare the updates: a factor of
#    `world` (or `1/world`) is an averaging bug.
# 3. Does each rank read what it should? Log the batch indices per rank and check each epoch's
#    union and order.
#
# ## Exercise 11
#
# `exercises/11_debugging.ipynb` gives you six broken training functions — one per family, with the
# rank, step, layer and collective drawn from your student id, so your answers are yours. For each,
# you write a diagnosis (family, ranks, and what the tools report) and a fixed function; the grader
# knows your variant's truth and runs your fixes against one process.
#
# ## Check yourself

# %%
# NBVAL_CHECK_OUTPUT
assert hang_fix_diff < 1e-9 and diverge_fix_diff < 1e-9 and avg_fix_diff < 1e-9 and join_diff < 1e-9
assert abs(update_ratio - 1 / WORLD) < 1e-9, "AVG then / world makes every update world times too small"
assert drifted[0]["divergence"].parameter == "0.weight", "the unfrozen layer is the first to split"
try:  # every hang above ended at its timeout, and the launcher reaped every worker it started
    os.waitpid(-1, os.WNOHANG)
    left_behind = True
except ChildProcessError:
    left_behind = False
assert not left_behind, "a worker process outlived its launch"
print("lesson 11 checks passed")

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids

lesson_aids("11")
