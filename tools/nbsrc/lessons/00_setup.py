# %% [markdown]
# # Lesson 00 — Setup: your machine, and many workers from one notebook cell
#
# Data-parallel training runs the *same* program on several workers at once, each on its own share
# of the data. Before we train anything, this lesson answers three practical questions:
#
# 1. What does this machine offer: cores, GPUs, communication backends?
# 2. How do we start several workers from a notebook cell, and get their results back?
# 3. What happens when a worker crashes, or when workers wait for each other forever?
#
# Run the cells from top to bottom (Shift+Enter). Everything works on a 2-core laptop without a GPU.

# %% [markdown]
# ## 1. Ask the doctor
#
# `dpcourse.doctor()` looks at the machine and tells you what the course will use here.
# The same report is printed by `dpcourse doctor` in a terminal.

# %%
import dpcourse

report = dpcourse.doctor()
report

# %% [markdown]
# Read the last lines: they say what to expect. On a CPU-only machine the workers are ordinary
# processes that share your cores; on a machine with several GPUs each worker drives one GPU.
#
# ## 2. Words we will use all the time
#
# - A **worker** is one running copy of the training program: here, one operating-system *process*.
# - Workers are numbered 0, 1, 2, …: that number is the worker's **rank**. Rank 0 often does the
#   chores (printing, saving checkpoints).
# - The **world size** is how many workers there are.
# - The workers form a **process group**: they know each other's addresses and can exchange
#   tensors. The library that moves the bytes is the **backend**: `gloo` works on CPUs (and GPUs),
#   `nccl` is NVIDIA's, for GPUs only.
# - On a laptop we have no cluster, so each worker process plays the part of a machine (a
#   **node**) in a cluster: a **virtual node**. The code is exactly the code you would run on real
#   nodes; only the speed differs, because our virtual nodes share the same few cores.

# %% [markdown]
# ## 3. Launch workers from a cell
#
# `dpcourse.launch(fn, world_size, *args)` starts `world_size` workers, joins them into a process
# group, runs `fn(*args)` on each, and returns what each worker returned, **in rank order**.
# Everything a worker prints appears below the cell, prefixed with its rank. The function can be
# defined right here in the notebook.

# %%
import os

import torch.distributed as dist


def introduce_yourself(greeting):
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"{greeting}: I am rank {rank} of {world}, process {os.getpid()}, computing on {dpcourse.device()}")
    return rank * 10


results = dpcourse.launch(introduce_yourself, 2, "hello")
print("returned to the notebook:", results)

# %% [markdown]
# The lines may arrive in any order: the workers run at the same time, and whoever prints first
# wins. The *returned* list is always in rank order. Now four workers — on a 2-core machine they
# take turns on the cores (the machine is *oversubscribed*), which is fine for learning and slow
# for measuring.

# %%
results = dpcourse.launch(introduce_yourself, 4, "hi", timeout=60)
print("returned to the notebook:", results)

# %% [markdown]
# ## 4. Workers talk: a first collective
#
# Each worker holds its own tensor. `dist.all_reduce` adds up the tensors of all ranks and gives
# every rank the total. Lesson 03 explains collectives properly; here it only proves the workers
# really are connected.

# %%
# NBVAL_CHECK_OUTPUT
import torch


def add_up_the_ranks():
    mine = torch.tensor([float(dist.get_rank())], device=dpcourse.device())
    dist.all_reduce(mine)  # sum over all ranks, result on every rank
    return mine.item()


for world in (1, 2, 4):
    totals = dpcourse.launch(add_up_the_ranks, world)
    expected = sum(range(world))
    assert totals == [expected] * world
    print(f"world size {world}: every rank holds {totals[0]:.0f} = 0 + 1 + ... + {world - 1}")

# %% [markdown]
# ## 5. How long does starting workers take?
#
# Starting a worker costs something. `launch` *forks* the notebook's process, so a worker starts
# with torch already imported. Let's measure the start-up of workers that return at once, for
# 1, 2 and 4 workers. (`torchrun`, the launcher for scripts, starts a fresh Python for every
# worker instead; lesson 07 times it next to this.)

# %%
import time

import matplotlib.pyplot as plt


def nothing():
    return None


overhead = {}
for world in (1, 2, 4):
    times = []
    for _ in range(3):
        start = time.perf_counter()
        dpcourse.launch(nothing, world)
        times.append(time.perf_counter() - start)
    overhead[world] = sorted(times)[1]  # the median of three
    print(f"{world} worker(s): {overhead[world] * 1000:.0f} ms to start, join the group and finish")
print(f"4 workers took {overhead[4] / overhead[1]:.1f} times as long as 1 in this run")

fig, ax = plt.subplots(figsize=(5, 2.5))
ax.bar([str(w) for w in overhead], [t * 1000 for t in overhead.values()], color="tab:blue")
ax.set_xlabel("workers")
ax.set_ylabel("launch time (ms, median of 3)")
ax.set_title("Starting workers from a notebook cell, measured here")
plt.show()


# %% [markdown]
# This is the fixed price of every launch, to set against the training runs of the later lessons.
# More workers usually cost more, because every worker must connect to every other one; on a busy
# machine the numbers jump about, so read the trend, not a single bar.

# %% [markdown]
# ## 6. When a worker crashes
#
# Distributed programs fail in distributed ways. If rank 1 raises an exception while rank 0 waits
# for it at a `barrier` (a point every rank must reach), rank 0 would wait forever. The launcher
# notices rank 1's failure, stops *all* workers, and raises one error that names the rank and shows
# its traceback. Here we catch that error and print it, so that the notebook goes on; without the
# `try`, the cell would end with the same message in red.

# %%
def crash_on_rank_one():
    if dist.get_rank() == 1:
        values = [1, 2, 3]
        print(values[10])  # an IndexError, on rank 1 only
    dist.barrier()


try:
    dpcourse.launch(crash_on_rank_one, 2, timeout=30)
except dpcourse.WorkerError as error:
    print(error)
    assert error.rank == 1

# %% [markdown]
# Read the error from the top: *which* rank failed, *what* it raised, and the traceback inside
# your function.
#
# ## 7. When workers wait forever: a deadlock
#
# Collectives must be called by every rank, in the same order. Below, rank 0 waits at a `barrier`
# while rank 1 waits in a `broadcast`: each waits for the other, forever. Every launch has a
# `timeout`; when it runs out, the launcher prints where each stuck rank was waiting, stops the
# workers and names the ranks still running. This cell waits 5 seconds, the timeout we give it.

# %%
def mismatched_collectives():
    if dist.get_rank() == 0:
        dist.barrier()
    else:
        dist.broadcast(torch.zeros(1), src=0)


try:
    dpcourse.launch(mismatched_collectives, 2, timeout=5)
except dpcourse.LaunchTimeout as error:
    print(error)
    assert error.ranks == [0, 1]

# %% [markdown]
# The lines `stuck here` show, for each rank, the line in your function where it waits: the
# first place to look when debugging a hang. Lesson 03 shows more tools for this.
#
# In both cases no worker process is left behind, and the notebook's **interrupt** button (■)
# stops all workers of a running launch too: try it on the cell below, which would otherwise
# sleep for 8 seconds.

# %%
def sleep_a_while():
    time.sleep(8 if dist.get_rank() == 0 else 0)
    return "done"


print(dpcourse.launch(sleep_a_while, 2, timeout=60))

# %% [markdown]
# ## 8. Check yourself
#
# Before moving on, make sure this runs without an error: it launches on every world size the
# course uses and checks that each rank saw the right world.

# %%
# NBVAL_CHECK_OUTPUT
def who_am_i():
    return dist.get_rank(), dist.get_world_size()


for world in report.world_sizes:
    assert dpcourse.launch(who_am_i, world) == [(r, world) for r in range(world)]
print("all good: workers start, talk, and report back")

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids

lesson_aids("00")
