# %% [markdown]
# # Lesson 03 — Processes that talk: ranks, messages and collectives
#
# Data-parallel training runs one program in several processes. Each has its own copy of the
# model and its own slice of the batch, and after every backward pass they must all end up with
# the **same** gradient. Processes share no memory, so that agreement has to travel as messages.
#
# This lesson asks:
#
# 1. What is a *rank*, a *world size*, a *backend*?
# 2. How does one process send a tensor to another (point-to-point)?
# 3. Which group-wide patterns (*collectives*) does `torch.distributed` offer, and what does each
#    rank hold before and after? Every picture below is drawn from values a real run returned.
# 4. What happens when ranks disagree about the order of collectives, and how do you debug it?
#
# The workers are real operating-system processes started from this notebook by
# `dpcourse.launch(fn, world_size)`: it runs `fn` in each, with the process group already set up,
# and returns their results in rank order.

# %%
import datetime
import os
import time

import matplotlib.pyplot as plt
import torch
import torch.distributed as dist

import dpcourse
from dpcourse.plots.collectives import show_collectives

WORLD = 4  # ranks for the pictures; on a 2-core machine 4 processes share 2 cores (oversubscribed),
           # which is fine here: this lesson is about who holds what, not about speed
print(f"CPU cores: {os.cpu_count()}, CUDA GPUs: {torch.cuda.device_count()}, ranks used: {WORLD}")

# %% [markdown]
# ## 1. Ranks, world size, backend
#
# Start with the smallest possible experiment: ask every worker who it is.

# %%
def who_am_i():
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(),
            "backend": dist.get_backend(), "pid": os.getpid()}


infos = dpcourse.launch(who_am_i, WORLD)
for info in infos:
    print(info)
assert [i["rank"] for i in infos] == list(range(WORLD))
assert len({i["pid"] for i in infos}) == WORLD, "each rank is a separate process"

# %% [markdown]
# What to see: four different process ids, so four separate programs with four separate
# memories, each knowing two numbers:
#
# * the **rank**, its position in the group, `0 … world_size − 1`. Code branches on it
#   ("rank 0 writes the checkpoint");
# * the **world size**, how many ranks there are.
#
# The **backend** is the library that moves the bytes:
#
# | backend | tensors on | moves data over | where you meet it |
# |---|---|---|---|
# | `gloo` | CPU | TCP sockets (shared memory would be faster; gloo does not use it) | everywhere; this course on a laptop |
# | `nccl` | NVIDIA GPUs | NVLink, PCIe, InfiniBand, straight between GPU memories | every serious GPU training run |
# | `mpi` | CPU (GPU with a CUDA-aware MPI) | whatever the MPI library uses | HPC clusters, only if torch was built with it |
#
# `dpcourse.launch` picks `nccl` when there is one GPU per rank and `gloo` otherwise. Which
# ones this machine has:

# %%
print("gloo available:", dist.is_gloo_available())
print("nccl available:", dist.is_nccl_available(), "| usable GPUs:", torch.cuda.device_count())
print("launch() would pick:", infos[0]["backend"], f"for {WORLD} ranks here")

# %% [markdown]
# ## 2. Point-to-point: one sender, one receiver
#
# `dist.send(tensor, dst)` and `dist.recv(tensor, src)` are the atoms everything else is built
# from. Notice what the receiver must do first: allocate a tensor of the right shape and dtype.
# A message carries bytes, not a description of them.

# %%
def ping():
    x = torch.zeros(3, device=dpcourse.device())  # the CPU under gloo, this rank's GPU under NCCL
    if dist.get_rank() == 0:
        x += torch.tensor([1.0, 2.0, 3.0], device=x.device)
        dist.send(x, dst=1)
    elif dist.get_rank() == 1:
        dist.recv(x, src=0)  # blocks until rank 0's bytes have landed in x
    return x.tolist()


# %%
# NBVAL_CHECK_OUTPUT
got = dpcourse.launch(ping, 2)
print(got)
assert got == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]

# %% [markdown]
# `send` and `recv` **block**: `recv` returns once the data has arrived, `send` once its buffer
# may be reused. That is easy to reason about but dangerous when *every* rank must both send
# and receive. If all ranks first call `recv`, all of them wait for a message nobody is sending.
#
# The non-blocking versions `isend`/`irecv` return a *request* at once; `request.wait()` blocks
# until that transfer is done (do not touch the buffer before). Posting the send and the receive
# together and then waiting on both lets every rank pass a tensor to its right-hand neighbour at
# the same time — the move the ring all-reduce of lesson 04 is made of:

# %%
def shift_right(n):
    r, w = dist.get_rank(), dist.get_world_size()
    mine = torch.full((n,), float(r), device=dpcourse.device())
    incoming = torch.empty_like(mine)
    requests = [dist.isend(mine, dst=(r + 1) % w), dist.irecv(incoming, src=(r - 1) % w)]
    for req in requests:
        req.wait()
    return incoming[0].item()


# %%
# NBVAL_CHECK_OUTPUT
got = dpcourse.launch(shift_right, WORLD, 1000)
print("rank r received the values of rank r-1:", got)
assert got == [float((r - 1) % WORLD) for r in range(WORLD)]

# %% [markdown]
# ## 3. Collectives: the whole group at once
#
# A **collective** is called by *every* rank of the group, and it returns only when this rank's
# part is done. Six of them cover nearly all of distributed training. One run below starts each
# rank from a small, recognisable tensor (rank `r` holds `10·r + 1, 10·r + 2, …`), calls each
# collective, and records what the rank held before and after.

# %%
def tour_of_collectives():
    r, w = dist.get_rank(), dist.get_world_size()

    def start():
        return torch.arange(1.0, w + 1, device=dpcourse.device()) + 10 * r

    record = {}
    x = start(); before = x.tolist()
    dist.broadcast(x, src=0)
    record["broadcast(src=0)"] = (before, x.tolist())

    x = start(); before = x.tolist()
    dist.reduce(x, dst=0)  # only rank 0's result is defined; other ranks may hold scratch values
    record["reduce(dst=0, SUM)"] = (before, x.tolist() if r == 0 else None)

    x = start(); before = x.tolist()
    dist.all_reduce(x)
    record["all_reduce(SUM)"] = (before, x.tolist())

    x = start()[:2]; before = x.tolist()
    gathered = [torch.empty_like(x) for _ in range(w)]
    dist.all_gather(gathered, x)
    record["all_gather"] = (before, torch.cat(gathered).tolist())

    x = start(); before = x.tolist()
    mine = torch.empty_like(x[:1])
    dist.reduce_scatter(mine, list(x.chunk(w)))
    record["reduce_scatter(SUM)"] = (before, mine.tolist())
    return record


records = dpcourse.launch(tour_of_collectives, WORLD)
pictures = {name: ([rec[name][0] for rec in records], [rec[name][1] for rec in records]) for name in records[0]}
show_collectives(pictures)
plt.show()

# %% [markdown]
# Read the picture row by row:
#
# * **broadcast**: rank 0's tensor is copied to everyone. (Starting every replica from the same
#   weights.)
# * **reduce**: the element-wise sum arrives at one rank only. (Collecting a metric for logging.)
# * **all_reduce**: everyone gets the sum. *This is the gradient synchronisation of data
#   parallelism*: sum the gradients, divide by the world size, and every replica takes the same
#   step.
# * **all_gather**: every rank contributes a piece and everyone receives all the pieces, in rank
#   order. (Collecting predictions from every shard.)
# * **reduce_scatter**: the sum is computed, but each rank keeps only its own slice of it: rank
#   `r` gets element `r`. Together the ranks hold the whole sum, each one part. (Sharded data
#   parallelism uses it: in ZeRO and PyTorch's FSDP, each rank keeps only its own slice of the
#   optimizer state, the gradients and even the parameters, instead of a full copy, and updates only
#   that slice; lesson 09 builds it.)
#
# One identity to keep: **all_reduce = reduce_scatter followed by all_gather**. Lesson 04 builds
# its fast all-reduce exactly this way. A check that each result is what its definition says:

# %%
# NBVAL_CHECK_OUTPUT
starts = torch.stack([torch.arange(1.0, WORLD + 1) + 10 * r for r in range(WORLD)])
total = starts.sum(0)
for r, rec in enumerate(records):
    assert rec["broadcast(src=0)"][1] == starts[0].tolist()
    assert rec["all_reduce(SUM)"][1] == total.tolist()
    assert rec["all_gather"][1] == starts[:, :2].reshape(-1).tolist()
    assert rec["reduce_scatter(SUM)"][1] == [total[r].item()]
assert records[0]["reduce(dst=0, SUM)"][1] == total.tolist()
print("all five collectives match their definitions on", WORLD, "ranks")

# %% [markdown]
# The sixth collective, **barrier**, moves no data: no rank leaves it until every rank has
# entered it. The experiment: rank `r` sleeps `0.2·r` seconds, then enters the barrier. All
# processes are on one machine, so `time.time()` is a common clock.

# %%
def late_arrivals(delay):
    dist.barrier()  # line everyone up first
    t0 = time.time()
    time.sleep(delay * dist.get_rank())
    arrived = time.time() - t0
    dist.barrier()
    return arrived, time.time() - t0


times = dpcourse.launch(late_arrivals, WORLD, 0.2)
fig, ax = plt.subplots(figsize=(6, 2.2))
for r, (arrived, left) in enumerate(times):
    ax.barh(r, arrived, color=f"C{r}", alpha=0.6)
    ax.plot([left], [r], "k|", markersize=14)
ax.set_yticks(range(WORLD), [f"rank {r}" for r in range(WORLD)])
ax.invert_yaxis()
ax.set_xlabel("seconds (bar: busy before the barrier, |: left the barrier)")
plt.show()
print("left the barrier at:", [f"{left:.2f} s" for _, left in times])
assert min(left for _, left in times) >= max(arrived for arrived, _ in times) - 0.01

# %% [markdown]
# Every rank left only after the slowest one arrived: a barrier costs as much as the slowest rank.
# The same holds, less visibly, for every collective: each all-reduce in training waits for the
# slowest worker. (Which is why uneven batches or one busy machine slow the whole group.)

# %% [markdown]
# ## 4. A deadlock, caught
#
# Collectives are matched *by order*: the first collective a rank calls is paired with the first
# collective every other rank calls, and so on. Here rank 0 calls `broadcast` then
# `all_reduce`, and rank 1 calls them the other way round. Rank 0 waits for broadcast messages
# that rank 1 never sends; rank 1 waits for all-reduce messages that never come. Neither fails:
# both wait, forever. The launcher's timeout (5 s here) is what ends it: it raises
# `dpcourse.LaunchTimeout`, which the cell catches and prints.

# %%
def mismatched_order():
    x = torch.ones(4)
    if dist.get_rank() == 0:
        dist.broadcast(x, src=0)
        dist.all_reduce(x)
    else:
        dist.all_reduce(x)
        dist.broadcast(x, src=0)
    return x.tolist()


try:
    dpcourse.launch(mismatched_order, 2, timeout=5, backend="gloo")
except dpcourse.LaunchTimeout as error:
    print(f"{type(error).__name__}: {error}")
    assert error.ranks == [0, 1]

# %% [markdown]
# A hang is the typical failure of distributed code: no exception, no message, just silence.
# Three tools, from cheapest to strongest:
#
# 1. **Where is each rank stuck?** On timeout the launcher asked each hung worker for its stack
#    (a helper thread in every worker prints where the main thread is); the `stuck here` lines
#    above show rank 0 inside `broadcast` and rank 1 inside `all_reduce`. Two ranks in two
#    different collectives: that is the bug.
#    (Outside this course: `py-spy dump --pid PID` does the same for any process.)
# 2. **Let torch compare the calls.** With `TORCH_DISTRIBUTED_DEBUG=DETAIL`, every collective first
#    checks that all ranks are calling the same collective with the same shapes, and raises a
#    clear error instead of hanging. The variable is read when `torch.distributed` is set up, so a
#    forked worker re-reads it and makes a fresh group (under `torchrun`, exporting the variable
#    is enough). The check costs an extra exchange per call: for debugging only.

# %%
def mismatched_order_checked():
    dist.set_debug_level_from_env()
    group = dist.new_group()  # created after the debug level was set, so it checks every call
    x = torch.ones(4)
    if dist.get_rank() == 0:
        dist.broadcast(x, src=0, group=group)
        dist.all_reduce(x, group=group)
    else:
        dist.all_reduce(x, group=group)
        dist.broadcast(x, src=0, group=group)


try:
    dpcourse.launch(mismatched_order_checked, 2, timeout=20, backend="gloo", env={"TORCH_DISTRIBUTED_DEBUG": "DETAIL"})
except dpcourse.WorkerError as err:
    message = str(err)
    print(message.split("TensorShape")[0], "...")
    print("...", message[message.index("Collectives differ"):].splitlines()[0])
    assert "mismatch" in message
else:
    raise AssertionError("expected the mismatch to be reported")

# %% [markdown]
# 3. **Give every wait a deadline.** A process group has a timeout (`init_process_group(...,
#    timeout=...)` or `new_group(timeout=...)`); an operation that waits longer raises an error on
#    that rank instead of hanging. PyTorch's default is long (printed below), so that a slow first
#    step is not mistaken for a hang; for experiments a short one saves a lot of waiting. Here
#    rank 1 waits for a message that nobody sends, in a group with a 2-second timeout:

# %%
def lonely_recv():
    group = dist.new_group(timeout=datetime.timedelta(seconds=2))
    if dist.get_rank() == 0:
        return "rank 0 sent nothing"
    start = time.perf_counter()
    try:
        dist.recv(torch.zeros(1), src=0, group=group)
    except RuntimeError as exc:
        return f"rank 1 gave up after {time.perf_counter() - start:.1f} s: {str(exc).split('] ')[-1][:70]}"
    return "rank 1 received something?!"


results = dpcourse.launch(lonely_recv, 2, timeout=30, backend="gloo")  # NCCL handles timeouts differently
print(*results, sep="\n")
print(f"(without a timeout of its own, a gloo group here would wait {dist.constants.default_pg_timeout})")
assert results[1].startswith("rank 1 gave up")

# %% [markdown]
# ## What to take away
#
# * A distributed job is *N separate processes*; rank and world size are all each one knows of
#   the others. Data moves only through explicit messages, carried by a backend (gloo on CPUs,
#   NCCL between NVIDIA GPUs).
# * `send`/`recv` block; `isend`/`irecv` return requests you `wait()` on, which lets a rank send and
#   receive at the same time.
# * broadcast, reduce, all_reduce, all_gather, reduce_scatter and barrier are called by every rank,
#   in the same order. all_reduce is the one data parallelism needs, and it equals
#   reduce_scatter + all_gather.
# * Mismatched calls hang rather than fail. Use a timeout, look at where each rank is stuck, and
#   let `TORCH_DISTRIBUTED_DEBUG=DETAIL` compare the calls.
#
# Next, lesson 04 writes all_reduce by hand from `isend`/`irecv`, twice, and measures both against
# PyTorch's own.

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids
lesson_aids("03")
