# %% [markdown]
# # Lesson 07 — DistributedDataParallel for real
#
# Lesson 05 wrote DDP by hand; lesson 06 showed why one process per device wins. Now we use PyTorch's
# own `DistributedDataParallel` the way it is used in production: a **training script** started by
# **`torchrun`**, one process per device, on one machine or several.
#
# **The question of this lesson:** what does a real data-parallel training script need beyond
# `DDP(model)`? We port lesson 01's digits training and add, one at a time, the pieces that real runs
# need — and check each against what the math says it must do:
#
# 1. a process group from `torchrun`'s environment, and a launch from the notebook;
# 2. `DistributedSampler` and `set_epoch`: every rank sees different samples, in a new order each epoch;
# 3. uneven inputs across ranks (`Join`);
# 4. gradient accumulation without extra communication (`no_sync`);
# 5. `SyncBatchNorm`, `bucket_cap_mb` and `gradient_as_bucket_view`;
# 6. checkpoints written by rank 0 and loaded by every rank — and surviving a crash with `torchrun --max-restarts`;
# 7. bf16 autocast on GPUs, several machines (and what a job survives when one is lost), and the whole
#    ladder from one process to DDP.
#
# The script is `scripts/train_ddp.py`. It is importable (its `train(config)` runs on every rank of an
# existing process group) and runnable (`torchrun ... scripts/train_ddp.py --flags`).

# %%
import os
import sys

import matplotlib.pyplot as plt
import torch

import dpcourse
from dpcourse.plots import plot_bars

sys.path.insert(0, "scripts")
import train_ddp  # noqa: E402  (lessons/scripts/train_ddp.py)

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
WORLD = 2           # ranks; on a 2-core machine more than 2 are oversubscribed
EPOCHS = 3          # turn up on a bigger machine
print(f"torch {torch.__version__}, GPUs: {GPUS}, CPU cores: {os.cpu_count()}")
print("Config fields:", ", ".join(f.name for f in train_ddp.Config.__dataclass_fields__.values()))

# %% [markdown]
# ## 1. From lesson 01's loop to a DDP script
#
# Lesson 01's loop is: build the model, make an optimizer, and for each epoch shuffle the data, cut it
# into batches, and do forward, backward, step. The port changes four things, and nothing else:
#
# ```python
# dist.init_process_group(backend)                    # rank, world size, address: from torchrun's environment
# ddp = DDP(model)                                    # broadcasts rank 0's weights; averages gradients in backward
# sampler = DistributedSampler(train_set, seed=seed)  # rank r gets every world-th sample of one shared shuffle
# sampler.set_epoch(epoch)                            # ... and a different shuffle each epoch
# if rank == 0: print(...); save_checkpoint(...)      # one rank speaks and writes
# ```
#
# `torchrun` starts `--nproc_per_node` copies of the script and gives each one `RANK`, `LOCAL_RANK`,
# `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`; `init_process_group` reads them. With
# `--standalone` it also runs the rendezvous on this machine, on a free port.
#
# Here is the production launch, from the notebook (`!` runs a shell command). Compare the time
# the training took (the script's `done:` line) with the time the whole launch took, printed last:
# the rest is starting two fresh Python processes that each import torch.

# %%
import time

launch_start = time.perf_counter()
# !OMP_NUM_THREADS=1 {sys.executable} -m torch.distributed.run --standalone --nproc_per_node={WORLD} scripts/train_ddp.py --epochs {EPOCHS} 2>&1 | grep -v "^W.*OMP_NUM_THREADS\|^\*\*\*\|^W1"
print(f"the whole torchrun launch, start to finish: {time.perf_counter() - launch_start:.1f} s")

# %% [markdown]
# The same function runs under `dpcourse.launch` too: it forks the ranks from this kernel in a
# fraction of a second, which is why the rest of the lesson uses it. Every rank returns its result;
# DDP keeps the replicas identical, so all ranks must end with the same parameters.

# %%
results = dpcourse.launch(train_ddp.train, WORLD, dict(epochs=EPOCHS))
same = all(torch.equal(results[0]["params"][k], r["params"][k]) for r in results for k in r["params"])
print(f"test accuracy {results[0]['accuracy']:.3f} after {results[0]['steps']} steps;"
      f" identical parameters on all ranks: {same}")
assert same

# %% [markdown]
# ### What the math says, checked
#
# With a mean loss, the average of the ranks' gradients over `WORLD` shards of 32 samples is the
# gradient over the 64 samples together. And `DistributedSampler` deals one shared shuffle out like
# cards (rank `r` gets positions `r, r + WORLD, r + 2·WORLD, ...`), so step `s` on all ranks together
# covers exactly the samples that step `s` of one process with a batch of 64 would take from the same
# shuffle. Same samples, same gradient, same update: **2 ranks × 32 must equal 1 process × 64**. In
# float64 the only difference left is the order of additions.

# %%
# NBVAL_CHECK_OUTPUT
def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


two_ranks = dpcourse.launch(train_ddp.train, 2, dict(epochs=2, batch_size=32, double=True))[0]
one_rank = dpcourse.launch(train_ddp.train, 1, dict(epochs=2, batch_size=64, double=True))[0]
ddp_vs_one = max_diff(two_ranks["params"], one_rank["params"])
assert two_ranks["steps"] == one_rank["steps"] and ddp_vs_one < 1e-10
print(f"2 ranks x 32 vs 1 process x 64, {one_rank['steps']} steps: max difference below 1e-10: OK")

# %% [markdown]
# ## 2. `DistributedSampler` and `set_epoch`
#
# The sampler needs no process group to be understood: give it the world size and a rank and it
# lists the sample indices that rank will see. Watch the first indices of each rank in two epochs —
# with `set_epoch`, and without it.

# %%
# NBVAL_CHECK_OUTPUT
from torch.utils.data import DistributedSampler

data = list(range(16))
for call_set_epoch in (True, False):
    print("with set_epoch:" if call_set_epoch else "without set_epoch:")
    for epoch in range(2):
        rows = []
        for r in range(2):
            sampler = DistributedSampler(data, num_replicas=2, rank=r, shuffle=True, seed=0)
            if call_set_epoch:
                sampler.set_epoch(epoch)
            rows.append(f"rank {r}: {list(sampler)[:6]}")
        print(f"  epoch {epoch}  " + "   ".join(rows))

# %% [markdown]
# The two ranks never share an index, and together they cover the data. Without `set_epoch` the
# sampler shuffles with the same seed every epoch: each rank sees its samples **in the same order
# every epoch**, and always the same half of the data. Training still runs — nothing warns you — it
# just shuffles less than you think. Call `sampler.set_epoch(epoch)` at the top of every epoch.
#
# (When the dataset does not divide evenly, the sampler repeats a few samples so every rank gets the
# same count; `drop_last=True` drops them instead.)
#
# ## 3. Uneven inputs: `Join`
#
# DDP's all-reduce is a collective: every rank must call it, once per backward. If one rank has
# fewer batches, it leaves the loop early while the others wait in an all-reduce it will never join.
# That is what happens when ranks read different files, or when you shard data yourself instead of
# using the sampler. Here rank 0 gets half the data and rank 1 a third. Without `Join`, the launch
# fails: the ranks' collectives stop matching, and it ends in an error or a hang (the launcher's
# timeout stops it).

# %%
try:
    dpcourse.launch(train_ddp.train, 2, dict(epochs=1, uneven=True, join=False), timeout=15)
except dpcourse.LaunchError as exc:
    print("failed as expected:", type(exc).__name__, "-", str(exc).splitlines()[0][:150])

# %% [markdown]
# `with Join([ddp]):` around the loop fixes it. A rank that runs out of data "joins": from then on it
# shadows the others' collectives — it takes part in their all-reduces with zeros — until every rank
# has finished. Nobody waits forever, and all ranks end with the same parameters.

# %%
joined = dpcourse.launch(train_ddp.train, 2, dict(epochs=1, uneven=True))
same = all(torch.equal(joined[0]["params"][k], joined[1]["params"][k]) for k in joined[0]["params"])
print(f"with Join: finished, identical parameters on both ranks: {same}")
assert same

# %% [markdown]
# ## 4. Gradient accumulation with `no_sync`
#
# To train with a larger batch than fits in memory we add up the gradients of several micro-batches
# before one optimizer step (lesson 02). Under DDP every backward triggers an all-reduce — but only
# the sum at the end matters. Inside `with ddp.no_sync():` backward keeps gradients local; the last
# micro-batch runs outside it and its all-reduce carries the sum of all of them. Fewer all-reduces,
# same result: 2 micro-batches of 16 per rank must equal one batch of 32 per rank.

# %%
# NBVAL_CHECK_OUTPUT
accumulated = dpcourse.launch(train_ddp.train, 2, dict(epochs=2, batch_size=16, accumulate=2, double=True))[0]
accumulate_diff = max_diff(accumulated["params"], two_ranks["params"])
assert accumulate_diff < 1e-10 and accumulated["steps"] == two_ranks["steps"]
print(f"2 x 16 with no_sync vs 32, {two_ranks['steps']} steps: max difference below 1e-10: OK")

# %% [markdown]
# One detail in the script: each micro-batch's loss is weighted by its share of the step's samples.
# Dividing by the number of micro-batches is the same thing when they are all full; the last batch
# of an epoch usually is not.
#
# ## 5. `SyncBatchNorm`, `bucket_cap_mb`, `gradient_as_bucket_view`
#
# **BatchNorm** normalises with the mean and variance of the *batch*. Under DDP each rank sees only
# its shard, so each normalises with its own statistics: the result differs from one process on the
# whole batch, more so the smaller the shard. `nn.SyncBatchNorm.convert_sync_batchnorm(model)`
# replaces every BatchNorm layer with one that all-reduces the statistics first. It only runs on GPUs
# (`--sync-bn` in the script). On the CPU we can do its arithmetic by hand: all-reduce each rank's sum,
# sum of squares and count, and the global mean and variance come out.

# %%
def batch_statistics():
    import torch.distributed as dist
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mine = x.chunk(dpcourse.world_size())[dpcourse.rank()]
    local_mean = mine.mean(0)
    sums = torch.stack([mine.sum(0), (mine ** 2).sum(0), torch.full((4,), float(len(mine)), dtype=torch.float64)])
    dist.all_reduce(sums)  # what SyncBatchNorm does, per layer, in every forward
    mean = sums[0] / sums[2]
    var = sums[1] / sums[2] - mean ** 2
    return {"local vs global mean": (local_mean - x.mean(0)).abs().max().item(),
            "synced vs global mean": (mean - x.mean(0)).abs().max().item(),
            "synced vs global var": (var - x.var(0, unbiased=False)).abs().max().item()}


stats = dpcourse.launch(batch_statistics, 2)[0]
for what, value in stats.items():
    print(f"{what:<24} {value:.1e}")
assert stats["synced vs global mean"] < 1e-12 < stats["local vs global mean"]

# %% [markdown]
# **`bucket_cap_mb`** (default 25) sets the size of the gradient buckets DDP all-reduces while
# backward is still running (lesson 05 built the same thing). Smaller buckets start communicating
# earlier but pay more per-message latency; larger ones the opposite. **`gradient_as_bucket_view=True`**
# makes each `.grad` a view into its bucket instead of a separate tensor, saving one copy of the
# gradients in memory and a copy per step. Neither may change the numbers — only speed and memory:

# %%
# NBVAL_CHECK_OUTPUT
tuned = dpcourse.launch(train_ddp.train, 2, dict(epochs=2, batch_size=32, double=True, bucket_cap_mb=0.01,
                                                 grad_as_bucket_view=True))[0]
bucket_diff = max_diff(tuned["params"], two_ranks["params"])
assert bucket_diff < 1e-12
print("tiny buckets + gradient_as_bucket_view give the same parameters: OK")

# %% [markdown]
# ## 6. Checkpoints, and surviving a crash
#
# A checkpoint holds everything the rest of the run depends on: the model's weights (of
# `ddp.module`, so without the `module.` prefix), the optimizer state (momentum!) and where we are
# (epoch, step). **Rank 0 writes it** — all ranks hold the same values, so one copy is enough, and
# several ranks writing the same file would corrupt it. It writes to a temporary name and renames, so
# a crash mid-write never leaves half a file; then a barrier keeps the others from reading too early.
# **Every rank loads it**, mapped to its own device.
#
# Resuming must be invisible: 1 epoch, stop, resume for 1 more must equal 2 epochs straight (the
# 2-rank run of section 1).

# %%
# NBVAL_CHECK_OUTPUT
import tempfile

with tempfile.TemporaryDirectory() as ckpt_dir:
    base = dict(batch_size=32, double=True, checkpoint_dir=ckpt_dir)
    dpcourse.launch(train_ddp.train, 2, dict(base, epochs=1))
    resumed = dpcourse.launch(train_ddp.train, 2, dict(base, epochs=2, resume=True))[0]
resume_diff = max_diff(resumed["params"], two_ranks["params"])
assert resumed["start_epoch"] == 1 and resume_diff < 1e-12
print(f"resumed at epoch {resumed['start_epoch']}; same parameters as 2 epochs straight: OK")

# %% [markdown]
# Now the production version. `torchrun --max-restarts=1` watches its workers; when one dies, it
# stops the others and starts the whole group again (`TORCHELASTIC_RESTART_COUNT` tells the new
# workers which attempt they are). `--crash-at-step 30` makes rank 1 kill itself with `SIGKILL` at
# step 30 of the first attempt, in the middle of epoch 1; `--resume` makes the restarted workers load
# the checkpoint of epoch 0. Rank 0 saves the final parameters with `--out`, and we compare them with
# the uninterrupted 2-rank run of section 1 (same settings: 2 epochs, 32 per rank, float64).
# In the log, look for the crash, torchrun's report of the failed worker, and the resume.

# %%
# !rm -rf scripts/checkpoints/crash-demo
# !OMP_NUM_THREADS=1 {sys.executable} -m torch.distributed.run --standalone --nproc_per_node=2 --max-restarts=1 --monitor-interval=0.5 scripts/train_ddp.py --epochs 2 --double --checkpoint-dir scripts/checkpoints/crash-demo --resume --crash-at-step 30 --out scripts/checkpoints/crash-demo/final.pt 2>&1 | grep -E "crash|resumed|epoch|done|failed" | sed "s#{sys.executable}#python#" | cut -c1-150

# %%
# NBVAL_CHECK_OUTPUT
after_crash = torch.load("scripts/checkpoints/crash-demo/final.pt", weights_only=True)
crash_diff = max_diff(after_crash["params"], two_ranks["params"])
assert after_crash["steps"] == two_ranks["steps"] and crash_diff < 1e-12
print("crashed, restarted, resumed: same parameters as the uninterrupted run: OK")

# %% [markdown]
# ## 7. GPUs, several machines, and the whole ladder
#
# ### bf16 autocast
#
# On a GPU, `--amp` runs the forward pass under `torch.autocast("cuda", dtype=torch.bfloat16)`:
# matrix multiplies in bfloat16 (faster, half the activation memory), while the parameters, the
# gradients DDP all-reduces and the optimizer stay in float32. bfloat16 keeps float32's exponent
# range, so unlike float16 it needs no loss scaling. With NCCL, `torchrun --nproc_per_node=<GPUs>`
# gives each process one GPU (`LOCAL_RANK`), which the script selects with `torch.cuda.set_device`.

# %%
if GPUS:
    amp = dpcourse.launch(train_ddp.train, 1, dict(epochs=1, amp=True), backend="nccl")[0]
    print(f"bf16 autocast on cuda: {amp['steps']} steps, test accuracy {amp['accuracy']:.3f}")
else:
    print("no GPU here: the bf16 path is skipped (it runs in tests/test_gpu.py on GPU machines).")

# %% [markdown]
# ### Several machines
#
# Nothing in the script changes. On each node you start one `torchrun`, the **same command** on
# every node: where the rendezvous lives (any reachable host:port; the first node is the usual
# choice), an id for the run, and the flags that let the job survive what section 6 showed, a
# killed worker. `scripts/lose_a_node.py` builds the command, so that what this lesson prints is
# what its test runs (on localhost), and `scripts/slurm_2nodes.sbatch` passes the same flags:

# %%
from lose_a_node import torchrun_command  # lessons/scripts/lose_a_node.py

JOIN_TIMEOUT = 300   # seconds every rendezvous waits for all nodes
two_nodes = torchrun_command("10.0.0.1:29400", "digits-42", nnodes="2", nproc_per_node=4,
                             max_restarts=3, join_timeout=JOIN_TIMEOUT, script_args=("--epochs", "20"))


def show(cmd):
    """One flag group per line, the way you would type it."""
    breaks = {i for i, a in enumerate(cmd) if a.startswith(("--rdzv-backend", "--max-restarts", "--checkpoint-dir"))
              or a.endswith(".py")}
    lines, line = [], []
    for i, a in enumerate(cmd):
        if i in breaks:
            lines.append(" ".join(line))
            line = []
        line.append(a)
    print(" \\\n    ".join(lines + [" ".join(line)]))


print("# on node A (10.0.0.1) and on node B, the same command:")
show(two_nodes)

# %% [markdown]
# * `--rdzv-backend=c10d --rdzv-endpoint=10.0.0.1:29400 --rdzv-id=digits-42`: the two `torchrun`s
#   meet at a small key-value store that the `torchrun` on 10.0.0.1 hosts, agree on node ranks and
#   hand out global ranks 0–7; `MASTER_ADDR`/`MASTER_PORT` for the process group come from there.
#   The id keeps two runs that use the same endpoint apart.
# * `--max-restarts=3` with `--checkpoint-dir … --resume`: when a worker dies on *any* node, every
#   `torchrun` stops its workers, the nodes meet again (a new rendezvous *round*) and the whole group
#   starts over from the last checkpoint, up to 3 times: section 6, across machines.
# * `--rdzv-conf=join_timeout=…`: how long a rendezvous round waits for every node. Without it
#   torchrun waits its default (printed further down), and the timeout applies to the first start
#   too: set it above the slowest node's start-up time, not lower.
#
# ### What a fixed `--nnodes=2` job survives, and what it doesn't
#
# | what dies | what happens |
# |---|---|
# | a worker (an exception, a segfault, the OOM killer) | its `torchrun` sees it, all nodes restart from the checkpoint: costs one of `--max-restarts` |
# | a whole node (power, kernel panic, its network) | the survivors' next collective fails; their `torchrun` starts a new round and waits `join_timeout` for a second node that never comes, then exits with `RendezvousTimeoutError`. The checkpoint is still there: resubmit the job and it resumes |
# | the node that hosts the rendezvous (the endpoint) | nothing can go on, whatever `--nnodes` says: the store the others meet at is gone (the `etcd` backend keeps it outside the job) |
#
# **Elastic jobs.** `--nnodes=1:2` (MIN:MAX) lets a round finish with fewer nodes: once MIN are
# there, the rendezvous waits `last_call_timeout` (default 30 s) more for others, then starts. A
# survivor then carries on alone from the checkpoint, with fewer ranks, so with a per-rank batch the
# *global* batch shrinks (the `DistributedSampler` re-shards by itself; the learning rate does not
# know): an elastic job must be written for a changing world size. The lost node leaves the
# rendezvous only once its heartbeats have been missing for `keep_alive_interval` ×
# `keep_alive_max_attempt` seconds (5 × 3 by default), so an elastic job's `join_timeout` must be
# longer than that plus `last_call_timeout`, or the survivor gives up too. A node that comes back
# joins at the next round; `torchrun` restarts the group to let it in without using up a restart.
#
# **How long the survivors wait, silently.** First their collective must fail. When a process is
# killed, its operating system closes its connections, and the survivors' gloo collective fails at
# once ("Connection closed by peer" in the log of `scripts/lose_a_node.py`). A machine that lost power closes
# nothing: the collective waits for the process group's timeout, `init_process_group(timeout=…)`
# (the script's `--collective-timeout`). Then the rendezvous waits `join_timeout`. Set both, and
# put `LOGLEVEL=INFO` before `torchrun` to see each rendezvous round in the log as it happens. The
# defaults you would otherwise get, read from this PyTorch:

# %%
import torch.distributed.constants
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import RendezvousTimeout

defaults = RendezvousTimeout()
print(f"process group timeout (gloo): {torch.distributed.constants.default_pg_timeout}  "
      f"-> the script's --collective-timeout: {train_ddp.Config.collective_timeout:.0f} s")
print(f"rendezvous join_timeout:      {defaults.join}  -> the command above: {JOIN_TIMEOUT} s")
print(f"rendezvous last_call_timeout: {defaults.last_call}  (elastic jobs only)")

# %% [markdown]
# You can lose a node for real on this machine: `scripts/lose_a_node.py` runs two `torchrun`
# "nodes" on localhost with the command above, short timeouts and a fast heartbeat, and kills the
# second node, `torchrun` and worker together, at step 30, in the middle of epoch 1. What the
# survivor does is printed below; `tests/test_scripts.py` runs the same two cases and checks that a
# fixed-size survivor gives up with `RendezvousTimeoutError` and an elastic one resumes alone and
# finishes. Each run takes tens of seconds, so here it is off until you switch it on:

# %%
LOSE_A_NODE = False   # True: run both cases here
if LOSE_A_NODE:
    from lose_a_node import describe, lose_a_node
    for nnodes in ("2", "1:2"):
        outcome = lose_a_node(nnodes=nnodes, join_timeout=30, last_call_timeout=10, keep_alive=(1, 2))
        print(f"--nnodes={nnodes}: {describe(outcome)}")
else:
    print("skipped: set LOSE_A_NODE = True, or run  python scripts/lose_a_node.py --nnodes 1:2")

# %% [markdown]
# On a Slurm cluster, `srun` starts the command on every node of the allocation;
# `scripts/slurm_2nodes.sbatch` is such a job script, with the same flags
# (`tests/test_scripts.py` runs two "nodes" on localhost to completion):

# %%
# !sed -n '/^srun/,$p' scripts/slurm_2nodes.sbatch

# %% [markdown]
# ### The ladder
#
# One model, one stream of batches, four ways to train it: one process; lesson 05's hand-written
# `BucketedDDP`; `nn.DataParallel`; PyTorch's DDP. The math says all four compute the same updates, so
# their final parameters must agree up to float32 rounding. The step times are this machine's, from
# this run. **What to look for on 2 CPU cores:** the baseline is one process with one thread; the
# 2-rank rungs split the work over both cores but pay for an all-reduce every step, so whether they
# win depends on how much compute a step has next to its communication, and on what else the
# machine is doing: the cell prints each rung's speed relative to the baseline. `DataParallel` runs
# the single process's code, because without GPUs it does nothing: any difference in its time is
# noise, and a measure of how steady this machine is.

# %%
from dpcourse.torch_ddp import climb, max_difference, table

ladder = climb("digits-cnn", steps=8, batch_size=64, world_size=2, threads=1)
print(table(ladder))
plot_bars({r.name: r.step_ms for r in ladder}, ylabel="median step time (ms)",
          title="The same 8 steps of a 151 k-parameter CNN, batch 64", fmt="{:.1f} ms")
plt.show()
for r in ladder[1:]:
    print(f"{r.name:<18} {ladder[0].step_ms / r.step_ms:.2f}x the speed of the single process (1 rank, 1 thread)")
ladder_agree = max(max_difference(ladder[0], r) for r in ladder)
assert ladder_agree < 1e-5

# %% [markdown]
# ## Check yourself

# %%
# NBVAL_CHECK_OUTPUT
assert ddp_vs_one < 1e-10, "DDP over 2 ranks must equal one process with the global batch"
assert accumulate_diff < 1e-10, "no_sync accumulation must equal the bigger batch"
assert bucket_diff < 1e-12 and resume_diff < 1e-12 and crash_diff < 1e-12
assert stats["synced vs global var"] < 1e-12
assert ladder_agree < 1e-5, "all rungs of the ladder must agree"
print("lesson 07 checks passed")

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids

lesson_aids("07")
