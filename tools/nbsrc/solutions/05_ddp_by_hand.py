# %% [markdown]
# # Exercise 05 — Your own DistributedDataParallel
#
# Lesson 05 built data-parallel training step by step: broadcast the initial parameters, average
# the gradients after backward, then overlap the averaging with backward through gradient hooks
# and asynchronous all-reduces, in buckets. Now you write the two pieces yourself:
#
# 1. `average_gradients(model)`, the simple version;
# 2. `BucketedDDP`, a wrapper shaped like PyTorch's `DistributedDataParallel`.
#
# Your code runs on every rank, inside workers started by `dpcourse.launch`, with the default
# process group already initialised: use `torch.distributed` (`dist`) directly. Do not import
# `dpcourse.ddp_by_hand` — that is the course's own answer, and graded code that uses it scores 0.
#
# ## Task 1: `average_gradients(model)`
#
# Called after `loss.backward()` and before `optimizer.step()`. Afterwards every parameter that
# requires a gradient holds the **mean over all ranks** of its gradient, computed with **one
# `dist.all_reduce` per such parameter**. A parameter with `grad=None` on this rank takes part with
# zeros (every rank must call the same collectives in the same order). Parameters with
# `requires_grad=False` are skipped.
#
# ## Task 2: `class BucketedDDP(nn.Module)`
#
# `BucketedDDP(module, bucket_mb=25.0)`:
#
# * **Shape.** `.module` is the wrapped model; `forward(*args, **kwargs)` calls it.
# * **Construction** broadcasts every parameter **and buffer** from rank 0 (including parameters
#   that do not require gradients), so all ranks start equal.
# * **Buckets** (`fill_buckets`). The parameters that require gradients are grouped into buckets
#   of about `bucket_mb` megabytes, in the order their gradients become ready — for these
#   exercises, the reverse of `module.parameters()` order. Start a new bucket when the current one
#   already holds at least `bucket_mb` MB (the first one closes earlier, at `first_bucket_mb`, as in
#   PyTorch's DDP, so that the first message leaves early), or when the dtype or device changes.
#   `bucket_mb=None` means one bucket for everything; a tiny value (e.g. `0` or `1e-6`) means one
#   bucket per parameter. A parameter shared by two layers is one tensor: it appears once in
#   `module.parameters()` and is reduced once. `Bucket` (given) holds a bucket's parameters, its
#   count of gradients still pending, its flat tensor and its `Work`.
# * **Overlap.** Register a hook on each parameter (`p.register_post_accumulate_grad_hook`). When
#   the last gradient of a bucket arrives, start **one** asynchronous all-reduce
#   (`async_op=True`) of that bucket's gradients flattened into one tensor. Start buckets strictly
#   in bucket order (bucket 1 never before bucket 0), so all ranks issue the same sequence.
# * **`finish_gradient_synchronization()`** — called after `backward()`, before `optimizer.step()`.
#   It sends the buckets that have not been sent (a parameter may have been unused in this step, so
#   its hook never fired), waits for all of them, and writes the **averaged** gradients back into
#   `.grad`. Exactly one all-reduce per bucket per step; no other collectives during training.
# * **Unused parameters.** A parameter without a gradient on some rank takes part with zeros. If
#   **no** rank produced a gradient for it in this step, its `.grad` must stay `None`, as in
#   single-process training (optimizers skip such parameters; with weight decay or momentum a zero
#   gradient would still move them). How a rank can learn that, without a collective of its own,
#   is the puzzle of this task: see the hints below.
# * **`no_sync()`** is a context manager. Backward passes inside it communicate nothing: the
#   gradients just accumulate in `.grad`, and `finish_gradient_synchronization()` does nothing.
#   The next backward outside it averages the accumulated sum as usual.
#
# The skeleton names the steps of one training step: the hook `gradient_ready(p)` counts its bucket
# down; `bucket_ready(b)` and `start_ready_buckets()` start every complete bucket in bucket order;
# `start_all_reduce(b)` packs and sends one; `finish_gradient_synchronization()` sends the rest,
# waits, and `write_back_averages(b)`. Organise the inside as you like, as long as the names
# `average_gradients`, `BucketedDDP` and the behaviour above stay (the grader calls nothing else).
#
# **Hints** (click to open; try each one before the next):
#
# <details><summary>Hint 1: when is a bucket full?</summary>
#
# A hook fires once per parameter and only tells you *which* parameter is ready. What could each
# bucket keep, from one hook call to the next, so that the hook of its last parameter knows the
# bucket is now complete? And if bucket 1 completes before bucket 0, what must wait?
#
# </details>
#
# <details><summary>Hint 2: a counter per bucket</summary>
#
# Give each bucket a count of the gradients it still waits for, set at construction and reset after
# every synchronisation. The hook lowers its bucket's count, then sends every bucket, from the next
# unsent one on, whose count has reached zero, and stops at the first that has not: that keeps the
# bucket order. Keep each started `Work` with its flat tensor, so that
# `finish_gradient_synchronization()` can wait and copy back.
#
# </details>
#
# <details><summary>Hint 3: unused parameters</summary>
#
# After the all-reduce, a parameter that no rank used looks exactly like one whose gradients summed
# to zero. What one extra number per parameter could every rank put in the bucket, so that its sum
# tells "nobody had a gradient" apart from "the gradients cancelled"?
#
# </details>
#
# <details><summary>Hint 4 (the answer for unused parameters)</summary>
#
# Append to each bucket's flat tensor one flag per parameter: `1.0` if this rank has a gradient for
# it, `0.0` if not (its gradient then takes part as zeros). After the all-reduce a flag sum of zero
# means no rank had a gradient: leave that parameter's `.grad` at `None`; otherwise write the
# averaged gradient back.
#
# </details>
#
# The test that matters: with equal shards of each global batch, every rank ends with the
# parameters that single-process training on the full batch gives, after several steps, for world
# sizes 1, 2 and 4, on a model with frozen, shared and unused parameters.

# %%
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import dpcourse
from dpcourse.data import shard, synthetic_classification
from dpcourse.models import Quirky, WideMLP

_ = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)  # import the optimizer machinery once, before forking workers

# %% [markdown]
# Given: a one-line error when there is no process group, and the `Bucket` record.

# %%
# include: dpcourse.ddp_by_hand._require_group


# include: dpcourse.ddp_by_hand.Bucket

# %% tags=["graded"]
# include solution: dpcourse.ddp_by_hand.average_gradients

# %% tags=["graded"]
# include solution: dpcourse.ddp_by_hand.broadcast_parameters


# include solution: dpcourse.ddp_by_hand.fill_buckets


# include solution: dpcourse.ddp_by_hand.BucketedDDP

# %% [markdown]
# ## Check your code
#
# The cell below runs the visible tests on your function and class, each in a separate process
# with a time limit, and prints one line per test with a hint when a test fails.

# %%
from dpcourse.grading import check
check("05", average_gradients, BucketedDDP)

# %% [markdown]
# ## A check of our own, in the open
#
# `dpcourse.models.Quirky` (the model the grader uses too) has every awkward case: a frozen layer,
# a weight shared by two layers, a layer used only for samples whose first feature is above 1 (so
# in the first step only rank 0 uses it, in the second step nobody does), a layer never used, and
# a buffer. Every rank starts from a different
# random initialisation; construction must broadcast rank 0's. We train three steps in float64 with
# momentum and weight decay and compare with one process on the full batch; anything above about
# $10^{-12}$ would be a real error, not rounding.
#
# We also count the collectives each rank calls, by wrapping `dist.all_reduce` and `dist.broadcast`
# inside the worker.

# %%
def batches(steps=3, batch=24):
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(batch, 6, generator=g, dtype=torch.float64).clamp(-0.9, 0.9) for _ in range(steps)]
    xs[0][0, 0] = 2.0
    xs[2][::3, 0] = 1.5
    return [(x, torch.randint(0, 3, (batch,), generator=g)) for x in xs]

@contextlib.contextmanager
def counting(names=("all_reduce", "broadcast")):
    counts, originals = dict.fromkeys(names, 0), {n: getattr(dist, n) for n in names}
    def wrapper(name):
        def counted(*args, **kwargs):
            counts[name] += 1
            return originals[name](*args, **kwargs)
        return counted
    for n in names:
        setattr(dist, n, wrapper(n))
    try:
        yield counts
    finally:
        for n in names:
            setattr(dist, n, originals[n])

def train(seed, algorithm, bucket_mb=None, micro=1):
    """Three steps on this rank's shard; ``micro`` > 1 accumulates micro-batches under no_sync."""
    torch.manual_seed(seed)
    model = Quirky().double()
    model.scale *= 1 + seed
    r, w = dpcourse.rank(), dpcourse.world_size()
    with counting() as at_start:
        net = BucketedDDP(model, bucket_mb) if algorithm == "bucketed" else model
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                          **({} if algorithm == "naive" else {"momentum": 0.9, "weight_decay": 0.01}))
    per_step = []
    for x, y in batches():
        opt.zero_grad()
        with counting() as counts:
            pieces = list(zip(x.chunk(micro), y.chunk(micro)))
            for i, (xm, ym) in enumerate(pieces):
                last = i == len(pieces) - 1
                ctx = net.no_sync() if algorithm == "bucketed" and not last else contextlib.nullcontext()
                with ctx:
                    nn.functional.cross_entropy(net(shard(xm, r, w)), shard(ym, r, w)).backward()
                    if algorithm == "bucketed":
                        net.finish_gradient_synchronization()
            if algorithm == "naive":
                average_gradients(model)
        per_step.append(dict(counts))
        opt.step()
    buckets = len(net.buckets) if algorithm == "bucketed" else None
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}, at_start, per_step, buckets

def single_process(algorithm, micro=1):
    torch.manual_seed(0)
    model = Quirky().double()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                          **({} if algorithm == "naive" else {"momentum": 0.9, "weight_decay": 0.01}))
    for x, y in batches():
        opt.zero_grad()
        for xm, ym in zip(x.chunk(micro), y.chunk(micro)):
            nn.functional.cross_entropy(model(xm), ym).backward()
        opt.step()
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}

def gap(per_rank, reference):
    return max(np.abs(state[k] - reference[k]).max() for state, *_ in per_rank for k in reference)

# %% [markdown]
# First `average_gradients` (it does not broadcast, so here every rank starts from seed 0; with
# plain SGD — no momentum, no weight decay — a zero gradient for an unused parameter moves nothing,
# so it matches too):

# %%
# NBVAL_CHECK_OUTPUT
reference = single_process("naive")
trainable = sum(p.requires_grad for p in Quirky().parameters())
for world in (1, 2, 4):
    per_rank = dpcourse.launch(lambda: train(0, "naive"), world)
    calls = per_rank[0][2][0]["all_reduce"]
    print(f"average_gradients, world size {world}: matches one process: {gap(per_rank, reference) < 1e-12}; "
          f"all-reduces per step: {calls} (trainable parameters: {trainable})")
    assert gap(per_rank, reference) < 1e-12 and calls == trainable

# %% [markdown]
# Then `BucketedDDP`, for three bucket sizes and world sizes 1, 2 and 4 (four ranks on two cores are
# oversubscribed: fine for correctness), and with gradient accumulation under `no_sync()`.

# %%
# NBVAL_CHECK_OUTPUT
reference = single_process("bucketed")
tensors = len(list(Quirky().parameters())) + len(list(Quirky().buffers()))
for world in (1, 2, 4):
    for mb in (None, 0.001, 0.0):
        per_rank = dpcourse.launch(lambda: train(dpcourse.rank(), "bucketed", mb), world)
        _, at_start, per_step, buckets = per_rank[-1]
        print(f"world {world}, bucket_mb={mb}: {buckets} bucket(s); matches one process: "
              f"{gap(per_rank, reference) < 1e-12}; per step {per_step[0]}")
        assert gap(per_rank, reference) < 1e-12
        assert at_start == {"all_reduce": 0, "broadcast": tensors}
        assert per_step == [{"all_reduce": buckets, "broadcast": 0}] * 3

reference = single_process("bucketed", micro=3)
for world in (2, 4):
    per_rank = dpcourse.launch(lambda: train(dpcourse.rank(), "bucketed", 0.001, micro=3), world)
    _, _, per_step, buckets = per_rank[0]
    print(f"world {world}, 3 backward passes per step (2 under no_sync): matches one process: "
          f"{gap(per_rank, reference) < 1e-12}; per step {per_step[0]}")
    assert gap(per_rank, reference) < 1e-12 and per_step == [{"all_reduce": buckets, "broadcast": 0}] * 3

# %% [markdown]
# ## How fast is it?
#
# Lesson 05's timing model and global batch (`WideMLP(256, 768, 3)`, 128 samples), two ranks,
# measured in one launch in turns: your `average_gradients`, your `BucketedDDP` and PyTorch's
# `DistributedDataParallel`. The numbers are this run's; on 2 CPU cores they are noisy, so read
# them as an order of magnitude, not a ranking. For the full comparison on a bigger model, run
# `dpcourse bench ddp --world-size 2` in a terminal.

# %%
from torch.nn.parallel import DistributedDataParallel

from dpcourse.models import count_parameters

FEATURES, WIDTH, DEPTH = 256, 768, 3   # lesson 05's model
print(f"model: WideMLP({FEATURES}, {WIDTH}, {DEPTH}), {count_parameters(WideMLP(FEATURES, WIDTH, DEPTH)) / 1e6:.2f} M parameters")


def step_times(steps=4):
    data = synthetic_classification(128, features=FEATURES, seed=0)
    x, y = (shard(t, dpcourse.rank(), dpcourse.world_size()) for t in data.tensors)
    variants = {
        "average_gradients": lambda m: (m, lambda: average_gradients(m)),
        "your BucketedDDP": lambda m: (lambda d: (d, d.finish_gradient_synchronization))(BucketedDDP(m, 4.0)),
        "torch DDP": lambda m: (DistributedDataParallel(m, bucket_cap_mb=4.0), lambda: None),
    }
    result = {}
    for name, wrap in variants.items():
        torch.manual_seed(0)
        model = WideMLP(FEATURES, WIDTH, DEPTH)
        net, after_backward = wrap(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        times = []
        for _ in range(steps + 1):
            dist.barrier()
            start = time.perf_counter()
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            after_backward()
            opt.step()
            times.append(time.perf_counter() - start)
        result[name] = 1e3 * float(np.median(times[1:]))
    return result

for name, ms in dpcourse.launch(step_times, 2)[0].items():
    print(f"{name:18s} {ms:6.1f} ms per step")
