# %% [markdown]
# # Lesson 10 — Fewer bytes: gradient compression, measured where it matters
#
# Lesson 04's α-β model says an all-reduce of $S$ bytes on $N$ ranks costs about
# $2(N-1)\,\alpha + 2\frac{N-1}{N} S \beta$. Once the message is large, only the second term counts,
# and there is exactly one way to make it smaller: **send fewer bytes.** This lesson asks
# **how few bytes a training step can get away with, what that costs in accuracy and in
# computation, and on which links it pays.**
#
# PyTorch's DDP lets you replace its all-reduce with your own function, a *communication hook*.
# We will:
#
# 1. write the identity hook and check that it reproduces default DDP bit for bit;
# 2. cast the gradients to 16 bits (bf16, fp16), by hand and with PyTorch's hooks, and find where
#    casting loses accuracy;
# 3. compress each gradient matrix to rank 1, 2 or 4 with PowerSGD, and see why *error feedback*
#    is not optional;
# 4. send only the largest 1 % of the entries (top-k), which needs all-gather instead of all-reduce;
# 5. time every method on a fast and a slow cluster link, then sweep the bandwidth to find where
#    compression stops paying, and explain the crossover with the α-β model.
#
# **The link.** On a laptop, ranks talk over loopback and a CPU computes a step hundreds of times
# slower than a GPU, so communication looks free and compression cannot show anything. The
# course's simulated link (`dpcourse.network`) puts a real cluster link under `torch.distributed`,
# slowed down by exactly as much as this CPU is slower than the GPU it stands for (the *dilation*,
# `dpcourse.dilation`), so that the ratio of computing to communicating is the cluster's. All numbers
# below come from this run; yours will differ.

# %%
import inspect
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
from IPython.display import Markdown, display
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import dpcourse
from dpcourse import compression, network
from dpcourse.costmodel import AlphaBeta
from dpcourse.data import digits_split
from dpcourse.dilation import cluster_link

# Knobs
WORLD = 2                   # ranks
PER_RANK = 128              # samples per rank per step (global batch 256)
STEPS = 60                  # training steps for the loss curves
LR = 0.05                   # SGD with momentum 0.9
GPU = "A100"                # the GPU a rank stands for
FAST, SLOW = "InfiniBand NDR", "10GbE"   # the two cluster links

_ = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)  # import the optimizer machinery once, before forking


def make_model() -> nn.Module:
    """An MLP on the 8x8 digits: 300 k parameters, 1.2 MB of float32 gradients, little computation."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10))


TRAIN, TEST = digits_split()
XTR, YTR = TRAIN.tensors
XTE, YTE = TEST.tensors
ORDER = torch.randperm(len(YTR), generator=torch.Generator().manual_seed(0))
N_PARAMS = sum(p.numel() for p in make_model().parameters())


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of global batch number ``step`` (batches wrap around the training set)."""
    idx = ORDER[(step * PER_RANK * WORLD + torch.arange(PER_RANK * WORLD)) % len(YTR)]
    mine = idx[dist.get_rank() * PER_RANK:(dist.get_rank() + 1) * PER_RANK]
    return XTR[mine], YTR[mine]


def show(fn) -> None:
    """Print a function's source: the code this lesson runs, from dpcourse/compression.py."""
    display(Markdown(f"```python\n{inspect.getsource(fn)}```"))


print(f"model: {N_PARAMS:,} parameters = {N_PARAMS * 4 / 1e6:.2f} MB of float32 gradients per step; "
      f"{WORLD} ranks x {PER_RANK} samples; {len(YTR)} training and {len(YTE)} test digits")

# %% [markdown]
# The two links, dilated for this model: one step here is timed, its floating-point operations
# counted, and set against an A100's rate at 40 % of its peak; both links are then slowed down by
# that ratio.

# %%
FAST_LINK, dilation = cluster_link(FAST, make_model(), XTR[:PER_RANK], YTR[:PER_RANK], gpu=GPU)
SLOW_LINK = network.resolve(SLOW).dilated(dilation.factor)
print(f"the dilation: {dilation}")
print(f"fast: {FAST_LINK}\nslow: {SLOW_LINK}")
for name, link in (("fast", FAST_LINK), ("slow", SLOW_LINK)):
    wire = link.time(compression.allreduce_bytes(N_PARAMS, WORLD), 2 * (WORLD - 1))
    print(f"{name}: one uncompressed all-reduce of the gradients ~ {1e3 * wire:.1f} ms on the wire, "
          f"against {1e3 * dilation.here_s:.1f} ms of computation per step")

# %% [markdown]
# ## 1. What a communication hook is
#
# `ddp.register_comm_hook(state, hook)` tells DDP: *instead of all-reducing a bucket, call
# `hook(state, bucket)`*. DDP calls it once per bucket per step, from inside `backward()`, the moment
# that bucket's gradients are all ready. The `bucket` is a `dist.GradBucket`:
#
# * `bucket.buffer()`: one flat tensor with **this rank's** gradients of the bucket's parameters;
# * `bucket.index()`, `bucket.parameters()`, `bucket.is_last()`: which bucket, whose gradients.
#
# The hook returns a `torch.futures.Future`. When it completes, its value must be **one tensor
# shaped like the buffer, holding the average over all ranks**: DDP copies it into the `.grad`s.
# Because the hook returns a future instead of a result, the communication it starts keeps running
# while backward computes the next buckets: the overlap of lesson 05 survives.
#
# Let us look at the buckets this model makes, with a hook that only records what it is given and
# then does what DDP does.

# %%
def peek(state, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    state.append((bucket.index(), bucket.buffer().numel(), [tuple(p.shape) for p in bucket.parameters()],
                  bucket.is_last()))
    return compression.allreduce_hook(None, bucket)


def buckets_seen():
    model = make_model()
    ddp = DistributedDataParallel(model)
    seen = []
    ddp.register_comm_hook(seen, peek)
    for step in range(2):
        x, y = batch(step)
        nn.functional.cross_entropy(ddp(x), y).backward()
        seen.append("end of step")
    return seen


for entry in dpcourse.launch(buckets_seen, WORLD)[0]:
    print(entry if entry == "end of step" else
          f"bucket {entry[0]}: {entry[1]:>7,} gradients of {entry[2]}{' (last)' if entry[3] else ''}")

# %% [markdown]
# In the first step DDP puts every gradient in one bucket, in registration order; then it rebuilds
# its buckets in the order the gradients really became ready, from the last layer back (lesson 05),
# with the first bucket capped near 1 MB so that its communication starts early. The identity hook below is all DDP
# does without a hook: scale by $1/N$, all-reduce (a sum), hand back the result. The future of
# `dist.all_reduce(..., async_op=True)` holds a *list* of tensors, so `.then(...)` picks the one.

# %%
show(compression.allreduce_hook)


def ddp_of(model: nn.Module) -> DistributedDataParallel:
    """DDP with ONE bucket. torch's PowerSGD hook starts collectives from inside its future callbacks;
    with several buckets on gloo, two ranks can start those in different orders and pair up the
    wrong tensors (we saw it crash). An explicit bucket_cap_mb also sets the first bucket's size."""
    return DistributedDataParallel(model, bucket_cap_mb=25)


def train_params(method, steps=3):
    """Three SGD steps under DDP with ``method``; every rank's final parameters."""
    model = make_model()
    ddp = ddp_of(model)
    compression.register(ddp, method)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    for step in range(steps):
        x, y = batch(step)
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def compare(a, b, world=WORLD):
    pa, pb = dpcourse.launch(train_params, world, a), dpcourse.launch(train_params, world, b)
    return max((x - y).abs().max().item() for x, y in zip(pa, pb))

# %%
# NBVAL_CHECK_OUTPUT
for world in (2, 3):
    gap = compare("none", "allreduce", world)
    print(f"{world} ranks: identity hook vs default DDP after 3 steps, largest difference: {gap}")
    assert gap == 0.0

# %% [markdown]
# Bit for bit, at 2 and at 3 ranks. (Multiplying matters: `g / 3` and `g * (1/3)` can round
# differently, so a hook that divides can drift from DDP in the last bit at 3 ranks.) Everything
# that follows changes one thing at a time against this baseline.
#
# ## 2. Casting to 16 bits
#
# The simplest compression: all-reduce the bucket in a 16-bit format and cast the result back.
# Half the bytes, at every link speed, for one cast each way. Our hand-written hook:

# %%
show(compression._cast_hook)

# %% [markdown]
# PyTorch ships the same idea as `bf16_compress_hook` and `fp16_compress_hook`. (On a machine
# without NCCL, `register_comm_hook` refuses a hook *named* `bf16_compress_hook`, even though gloo
# all-reduces bfloat16 fine; `compression.torch_bf16_hook` calls the very same function under
# another name.) Side by side, after three training steps:

# %%
# NBVAL_CHECK_OUTPUT
for mine, theirs in (("bf16", "torch-bf16"), ("fp16", "torch-fp16")):
    gap = compare(mine, theirs)
    print(f"hand-written {mine} hook vs torch's: largest parameter difference {gap}")
    assert gap == 0.0

# %% [markdown]
# **Where casting loses.** The two formats spend their 16 bits differently. bfloat16 keeps
# float32's 8 exponent bits and only 7 bits of mantissa: any magnitude, about 2 to 3 significant
# digits. float16 keeps 10 bits of mantissa but 5 of exponent: values below about $6 \cdot 10^{-5}$
# lose precision and below $6 \cdot 10^{-8}$ become zero. A gradient's size depends on the loss's
# scale. Here is a real gradient of this model, cast and cast back, at its natural size and scaled
# down, as a tiny loss (or a large world size dividing before the sum) would make it:

# %%
torch.manual_seed(0)
probe = make_model()
nn.functional.cross_entropy(probe(XTR[:PER_RANK]), YTR[:PER_RANK]).backward()
grad = torch.cat([p.grad.flatten() for p in probe.parameters()])
print(f"gradient entries: median |g| = {grad.abs().median():.1e}, largest {grad.abs().max():.1e}")
print(f"{'scale':>7s} {'format':>9s} {'relative error':>15s} {'entries that became 0':>22s}")
for scale in (1.0, 1e-4, 1e-8):
    g = grad * scale
    for dtype in (torch.bfloat16, torch.float16):
        back = g.to(dtype).float()
        err = ((back - g).norm() / g.norm()).item()
        zeroed = ((back == 0) & (g != 0)).float().mean().item()
        print(f"{scale:7.0e} {str(dtype).split('.')[1]:>9s} {err:15.1e} {zeroed:21.1%}")

# %% [markdown]
# At the natural scale both formats keep the gradient to a fraction of a percent; scaled down,
# float16's errors grow and entries vanish, while bfloat16's relative error stays the same. Does
# that matter for training? Let us train: uncompressed, bf16, fp16, and fp32 and fp16 once more with
# the loss multiplied by $10^{-6}$ and the learning rate by $10^{6}$ (in exact arithmetic the same
# training).
# The link is `ideal` (no delay), which lets `dpcourse.network` count the bytes each rank really
# sends per step.

# %%
def train(runs: dict, steps: int = STEPS) -> dict:
    """Train one fresh model per run, one after another; per run the losses, bytes and test accuracy.

    ``runs`` maps a label to ``(method, error_feedback, loss_scale)``.
    """
    out = {}
    for label, (method, error_feedback, scale) in runs.items():
        model = make_model()
        ddp = ddp_of(model)
        compression.register(ddp, method, error_feedback=error_feedback)
        opt = torch.optim.SGD(model.parameters(), lr=LR / scale, momentum=0.9)
        losses, sent = [], []
        for step in range(steps):
            x, y = batch(step)
            opt.zero_grad()
            with compression.sent_bytes() as bytes_:
                loss = nn.functional.cross_entropy(ddp(x), y)
                (loss * scale).backward()
            opt.step()
            losses.append(loss.item())
            sent.append(bytes_.total)
        with torch.no_grad():
            accuracy = (model(XTE).argmax(1) == YTE).float().mean().item()
        # steps 1-2: DDP rebuilds its buckets and PowerSGD starts with plain all-reduce; count from step 4
        out[label] = {"losses": losses, "bytes": float(np.median(sent[3:])), "accuracy": accuracy}
    return out


def plot_losses(results: dict, title: str, ax=None) -> None:
    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    for label, r in results.items():
        smooth = np.convolve(r["losses"], np.ones(5) / 5, mode="valid")
        ax.plot(smooth, label=label, lw=1.5)
    ax.set(xlabel="step", ylabel="training loss (running mean of 5)", yscale="log", title=title)
    ax.legend(fontsize=8)


def table(results: dict, baseline: str = "fp32 (no hook)") -> None:
    base = results[baseline]["bytes"]
    print(f"{'run':34s} {'bytes/step/rank':>15s} {'fewer than fp32':>15s} {'final loss':>10s} {'test acc':>8s}")
    for label, r in results.items():
        final = np.mean(r["losses"][-10:])
        print(f"{label:34s} {r['bytes']:15,.0f} {base / r['bytes']:14.1f}x {final:10.3f} {r['accuracy']:8.1%}")


def compare(settings: dict, title: str, earlier: dict | None = None) -> dict:
    """Train every setting in one launch (on an ideal link that counts bytes), print the table, plot the losses."""
    results = (earlier or {}) | dpcourse.launch(train, WORLD, settings, network="ideal", timeout=300)[0]
    table(results)
    plot_losses(results, title)
    plt.show()
    return results


casting = compare({
    "fp32 (no hook)": ("none", True, 1.0),
    "bf16": ("bf16", True, 1.0),
    "fp16": ("fp16", True, 1.0),
    "fp32, loss x 1e-6": ("none", True, 1e-6),
    "fp16, loss x 1e-6": ("fp16", True, 1e-6),
}, f"casting the gradients, {WORLD} ranks (lines that coincide hide each other)")

# %%
fp16_tiny, fp32_tiny = np.mean(casting["fp16, loss x 1e-6"]["losses"][-10:]), np.mean(casting["fp32, loss x 1e-6"]["losses"][-10:])
bf16_gap = abs(np.mean(casting["bf16"]["losses"][-10:]) - np.mean(casting["fp32 (no hook)"]["losses"][-10:]))
print(f"at the natural scale, bf16 ends {bf16_gap:.3f} away from fp32's final loss, with half the bytes "
      f"({casting['fp32 (no hook)']['bytes'] / casting['bf16']['bytes']:.1f}x fewer).")
print(f"with the loss scaled by 1e-6, fp32 ends at {fp32_tiny:.3f} and fp16 at {fp16_tiny:.3f}: "
      + ("fp16 flushed the small gradients to zero and stopped learning." if fp16_tiny > 2 * fp32_tiny
         else "on this run fp16 kept up."))

# %% [markdown]
# This is why mixed-precision training in fp16 needs *loss scaling* (multiply the loss by a large
# factor before backward, divide the gradients after), and why bf16, which needs none, became the
# default for training at scale. A cast can only halve the bytes, though. To go further, we must
# send something other than the gradient itself.
#
# ## 3. Low rank: PowerSGD
#
# A layer's gradient is a matrix $M$ ($n \times m$; here $512 \times 512$). If it is close to a
# matrix of rank $r$, then $M \approx P Q^\top$ with $P$ of shape $n \times r$ and $Q$ of shape
# $m \times r$: $(n + m)\,r$ numbers instead of $n m$. PowerSGD (Vogels, Karimireddy and Jaggi,
# NeurIPS 2019) finds $P$ and $Q$ with **one step of power iteration** per training step:
#
# $$P = \operatorname{orth}(M Q_{\text{last}}), \qquad Q = M^\top P, \qquad M \approx P Q^\top.$$
#
# Both products are linear in $M$, so on $N$ ranks each rank computes its own $M_i Q$ and the ranks
# **all-reduce $P$** (then orthonormalise it, identically everywhere) and **all-reduce $Q$**: two
# small all-reduces give every rank the same approximation of the *average* gradient. "Warm start"
# reuses last step's $Q$, so over the steps the iteration keeps refining the directions.

# %%
show(compression.power_iteration)

# %%
M = probe[3].weight.grad          # the 512 x 512 layer's gradient from the probe above
best = torch.linalg.svdvals(M)
print(f"gradient of the 512 x 512 layer: {M.numel():,} numbers")
for r in (1, 2, 4):
    q = torch.randn(M.shape[1], r, generator=torch.Generator().manual_seed(0))
    errors = []
    for _ in range(4):                # the same matrix again and again: what warm start converges to
        p, q = compression.power_iteration(M, q)
        errors.append((M - p @ q.T).norm().item() / M.norm().item())
    optimum = (best[r:].square().sum().sqrt() / best.square().sum().sqrt()).item()
    print(f"rank {r}: sends {(sum(M.shape)) * r:5,} numbers ({M.numel() / (sum(M.shape) * r):5.0f}x fewer); relative error "
          f"after 1 step {errors[0]:.3f}, after 4 {errors[-1]:.3f}; best possible at rank {r} (SVD) {optimum:.3f}")

# %% [markdown]
# A rank-1 approximation throws most of the gradient away at every step. What saves training is
# **error feedback**: each rank keeps what the approximation missed, $E = M - PQ^\top$, and adds it
# to the next step's gradient before compressing. Nothing is lost, only delayed: over many steps
# the sum of what was applied tracks the sum of the true gradients. Without it, the directions the
# low-rank approximation misses are never learned. PyTorch's `powerSGD_hook` does all of this per
# bucket (matrices too small to gain are sent uncompressed, with the biases). We train with it at
# ranks 1, 2 and 4 with error feedback, and at rank 1 without (the fp32 line is the run above).

# %%
FP32 = {"fp32 (no hook)": casting["fp32 (no hook)"]}   # the same run as above: training is deterministic
lowrank = compare({
    "PowerSGD rank 1": ("powersgd-1", True, 1.0),
    "PowerSGD rank 2": ("powersgd-2", True, 1.0),
    "PowerSGD rank 4": ("powersgd-4", True, 1.0),
    "PowerSGD rank 1, no error feedback": ("powersgd-1", False, 1.0),
}, f"PowerSGD, {WORLD} ranks", earlier=FP32)

# %%
# NBVAL_CHECK_OUTPUT
shapes = compression.bucket_shapes(make_model())
for r in (1, 2, 4):
    measured = lowrank[f"PowerSGD rank {r}"]["bytes"]
    formula = compression.powersgd_bytes(shapes, r, WORLD)
    print(f"rank {r}: {measured:,.0f} bytes per step measured at the process group, {formula:,.0f} by the formula; "
          f"compression ratio {compression.allreduce_bytes(N_PARAMS, WORLD) / measured:.0f}x")
    assert measured == formula

# %%
for r in (1,):
    with_ef = np.mean(lowrank[f"PowerSGD rank {r}"]["losses"][-10:])
    without = np.mean(lowrank[f"PowerSGD rank {r}, no error feedback"]["losses"][-10:])
    print(f"rank {r}: final loss {with_ef:.3f} with error feedback, {without:.3f} without "
          f"({'worse' if without > with_ef else 'not worse on this run'} without); test accuracy "
          f"{lowrank[f'PowerSGD rank {r}']['accuracy']:.1%} vs {lowrank[f'PowerSGD rank {r}, no error feedback']['accuracy']:.1%}")

# %% [markdown]
# The byte counts are exact (the assertion above checks the measured count against $(n+m)r$ per
# compressed matrix plus the uncompressed ones): 30 to 100 times fewer bytes than fp32 here.
# The loss curves say what that costs in learning; read them against the fp32 line, and the
# "no error feedback" lines against their twins.
#
# ## 4. Top-k sparsification, on all-gather
#
# Another way to send less: each rank sends only its $k$ entries of largest magnitude, as
# (value, index) pairs, and keeps the rest as its residual (error feedback again). It does **not**
# fit all-reduce. All-reduce adds tensors position by position; but each rank picks *its own*
# indices, so position $j$ of rank 0's value list and position $j$ of rank 1's are different
# entries of the gradient. Two ranks, eight entries, $k = 2$:

# %%
def sum_with_all_reduce_vs_all_gather():
    r = dist.get_rank()
    g = torch.tensor([[0.1, 5.0, 0.2, -3.0, 0.0, 0.3, 0.1, 0.0],
                      [4.0, 0.1, 0.0, -2.0, 0.2, 0.1, 0.0, 0.3]])[r]
    idx = g.abs().topk(2).indices
    values = g[idx].clone()
    dist.all_reduce(values)                                   # adds rank 0's entry 1 to rank 1's entry 0...
    wrong = torch.zeros(8).index_put_((idx,), values)
    all_v, all_i = torch.empty(4), torch.empty(4, dtype=torch.long)
    dist.all_gather_single(all_v, g[idx])
    dist.all_gather_single(all_i, idx)
    right = torch.zeros(8).index_add_(0, all_i, all_v)
    return idx.tolist(), wrong.tolist(), right.tolist()


for r, (idx, wrong, right) in enumerate(dpcourse.launch(sum_with_all_reduce_vs_all_gather, 2)):
    print(f"rank {r} keeps indices {idx}; all-reduce of the values gives {wrong}; all-gather gives {right}")

# %% [markdown]
# With all-reduce the two ranks end with *different* "sums" (each puts the total at its own
# indices) and the models drift apart. All-gather brings every rank's pairs to every rank, and each
# adds them into a dense tensor in the same order, so the ranks agree. The price: an all-gather of
# $k$ pairs sends $(N-1)\,k$ pairs per rank, growing with $N$, where the all-reduce of $n$ entries
# sends $2\frac{N-1}{N} n$, nearly constant; and every index costs bytes too. The hook:

# %%
show(compression.topk_hook)

# %%
sparse = compare({
    "top-1%": ("topk-0.01", True, 1.0),
    "top-1%, no error feedback": ("topk-0.01", False, 1.0),
}, f"top-k with error feedback, {WORLD} ranks", earlier=FP32)
for n in (2, 8, 64):
    print(f"{n:2d} ranks: top-1% sends {compression.topk_bytes(N_PARAMS, 0.01, n) / compression.allreduce_bytes(N_PARAMS, n):.0%} "
          "of what the fp32 all-reduce sends per rank")

# %% [markdown]
# ## 5. Step time on a fast and a slow link
#
# Bytes are only half the story: every method also *computes* (casts, matrix products, QR, a
# top-k over 300 k entries). Below, all methods run in the same launch, one step each in turn so
# that they share the machine's load, on the fast and on the slow cluster link; each is the median
# of the timed steps after a warm-up.

# %%
METHODS = {"fp32 (no hook)": "none", "bf16": "bf16", "PowerSGD rank 1": "powersgd-1",
           "PowerSGD rank 4": "powersgd-4", "top-1%": "topk-0.01"}


def step_times(timed: int = 4, warmup: int = 3) -> dict:
    """Median seconds per training step of every method, interleaved step by step; on the last step
    also the bytes each method sent and its messages (ring: 2 (N-1) per all-reduce, N-1 per all-gather)."""
    runs = {}
    for label, method in METHODS.items():
        model = make_model()
        ddp = ddp_of(model)
        compression.register(ddp, method)
        runs[label] = (ddp, torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9), [])
    traffic = {}
    for step in range(warmup + timed):
        x, y = batch(step)
        for label, (ddp, opt, times) in runs.items():
            seconds, sent = compression.timed_step(ddp, opt, x, y)  # a barrier, then one step
            times.append(seconds)
            per_call = {"allreduce": 2 * (WORLD - 1), "allgather": WORLD - 1}
            traffic[label] = (sent.total, sum(per_call.get(op, 1) * n for op, n in sent.calls.items()))
    return {label: {"s": float(np.median(times[warmup:])), "bytes": traffic[label][0], "messages": traffic[label][1]}
            for label, (_, _, times) in runs.items()}


timing = {name: dpcourse.launch(step_times, WORLD, network=link, timeout=300)[0]
          for name, link in ((FAST, FAST_LINK), (SLOW, SLOW_LINK))}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for ax, (name, times) in zip(axes, timing.items()):
    ax.barh(list(times)[::-1], [1e3 * t["s"] for t in list(times.values())[::-1]], color="tab:blue")
    ax.set(xlabel="ms per step (here)", title=f"{name} between {GPU}s (dilated)")
plt.tight_layout()
plt.show()
for name, times in timing.items():
    base = times["fp32 (no hook)"]["s"]
    print(f"{name}: " + "; ".join(f"{label} {1e3 * t['s']:.1f} ms ({base / t['s']:.2f}x vs fp32 DDP on this link)"
                                  for label, t in times.items()))

# %% [markdown]
# Every ratio above is against default (fp32) DDP on the *same* link. On the slow link the wire
# dominates the fp32 step, so whatever sends less tends to win; on the fast link the wire costs
# much less, so what a method adds in computation weighs as much as what it saves. Where exactly is
# the line between the two?
#
# ## 6. When it pays
#
# We sweep the cluster link from 10 to 400 Gb/s: the two links above, 25 and 100 Gigabit Ethernet
# and a 200 Gb/s InfiniBand HDR link, each dilated like the others, and time every method on each.

# %%
SWEEP = {10: SLOW_LINK, 25: network.resolve("25GbE"), 100: network.resolve("100GbE"),
         200: network.Link(2e-6, 25e9, "InfiniBand HDR 200 Gb/s"), 400: FAST_LINK}
SWEEP = {g: (link if link.dilation != 1.0 else link.dilated(dilation.factor)) for g, link in SWEEP.items()}
measured = {g: timing[SLOW] if g == 10 else timing[FAST] if g == 400 else
            dpcourse.launch(step_times, WORLD, network=link, timeout=300)[0] for g, link in SWEEP.items()}
GBITS = list(SWEEP)
print("links:\n" + "\n".join(f"  {g:3d} Gb/s: {link}" for g, link in SWEEP.items()))

# %% [markdown]
# The α-β model predicts each line. With $c_m$ the time method $m$ computes per step (the model's
# forward and backward, and the compression), $S_m$ the bytes it sends per step and $K_m$ its
# messages (both counted by the process group), a link of latency $\alpha$ and bandwidth $B$ gives
#
# $$t_m(B) \approx c_m + K_m\,\alpha + S_m / B.$$
#
# $S_m$ and $K_m$ are counted; $c_m$ is the one unknown, and we fit it to the sweep: the median over
# the links of $t - K_m\alpha - S_m/B$. (With one bucket, nothing overlaps the communication, so the
# model has no term for overlap.) Method $m$ beats fp32 DDP while $c_m + K_m\alpha + S_m/B < c_0 + K_0\alpha + S_0/B$,
# that is, below the **crossover bandwidth**
#
# $$B^* = \frac{S_0 - S_m}{(c_m - c_0) + (K_m - K_0)\,\alpha}.$$
#
# Sending fewer bytes buys time, $(S_0 - S_m)/B$, that shrinks as the link gets faster; the extra
# computation and messages cost the same on every link.

# %%
def crossing(label: str) -> str:
    """Where the measured line of ``label`` crosses fp32's, in cluster Gb/s, from the sweep."""
    slower = [measured[g][label]["s"] > measured[g]["fp32 (no hook)"]["s"] for g in GBITS]
    if not any(slower):
        return f"faster than fp32 at every bandwidth tried (up to {GBITS[-1]} Gb/s)"
    if all(slower):
        return f"slower than fp32 at every bandwidth tried (from {GBITS[0]} Gb/s)"
    j = slower.index(True)
    if j == 0 or not all(slower[j:]):
        return "crosses fp32 more than once (noise near a crossover): " + ", ".join(
            f"{g} Gb/s {'slower' if x else 'faster'}" for g, x in zip(GBITS, slower))
    gap = [measured[g][label]["s"] - measured[g]["fp32 (no hook)"]["s"] for g in (GBITS[j - 1], GBITS[j])]
    lo, hi = math.log(GBITS[j - 1]), math.log(GBITS[j])   # interpolate in log-bandwidth
    return f"crosses fp32 near {math.exp(lo + (hi - lo) * gap[0] / (gap[0] - gap[1])):.0f} Gb/s (faster below, slower above)"


def wire_s(label: str, link) -> float:
    """K alpha + S beta for the messages and bytes the process group counted (lesson 04's model)."""
    m = measured[GBITS[0]][label]
    model = AlphaBeta(alpha=link.latency, beta=1 / link.bandwidth)
    return model.alpha * m["messages"] + model.beta * m["bytes"]


for g in (GBITS[0], GBITS[-1]):     # fp32 DDP is one ring all-reduce of the gradients: lesson 04's formula
    ring = AlphaBeta(alpha=SWEEP[g].latency, beta=1 / SWEEP[g].bandwidth).predict("ring", 4 * N_PARAMS, WORLD)
    print(f"{g} Gb/s: lesson 04's ring all-reduce of {4 * N_PARAMS:,} bytes costs {1e3 * ring:.1f} ms; from the counted "
          f"bytes and messages of fp32 DDP: {1e3 * wire_s('fp32 (no hook)', SWEEP[g]):.1f} ms")


compute = {label: float(np.median([measured[g][label]["s"] - wire_s(label, SWEEP[g]) for g in GBITS])) for label in METHODS}


fig, ax = plt.subplots(figsize=(8, 4.5))
base = measured[GBITS[0]]["fp32 (no hook)"]
for i, label in enumerate(METHODS):
    ax.plot(GBITS, [1e3 * measured[g][label]["s"] for g in GBITS], "o-", color=f"C{i}", label=label)
    ax.plot(GBITS, [1e3 * (compute[label] + wire_s(label, SWEEP[g])) for g in GBITS], ":", color=f"C{i}", lw=1)
    if label == "fp32 (no hook)":
        continue
    m = measured[GBITS[0]][label]
    alpha = SWEEP[400].latency          # the crossover lies at the fast end: use that link's latency
    extra = (compute[label] - compute["fp32 (no hook)"]) + (m["messages"] - base["messages"]) * alpha
    b_star = (base["bytes"] - m["bytes"]) / extra if extra > 0 else math.inf
    model = (f"a crossover at {b_star * dilation.factor * 8 / 1e9:,.0f} Gb/s" if math.isfinite(b_star)
             else "no crossover (it never costs more)")
    print(f"{label:16s} measured: {crossing(label)}; alpha-beta predicts {model}\n{'':18s}[S = {m['bytes']:,} bytes "
          f"vs {base['bytes']:,}; K = {m['messages']} messages vs {base['messages']}; c = {1e3 * compute[label]:.1f} ms "
          f"vs {1e3 * compute['fp32 (no hook)']:.1f} ms (fitted)]")
ratio = compute["fp32 (no hook)"] / dilation.here_s
print(f"check of the dilation: a fp32 DDP step computes {1e3 * compute['fp32 (no hook)']:.1f} ms (fitted); the links were "
      f"dilated for {1e3 * dilation.here_s:.1f} ms, forward and backward alone in one process"
      + (" (close)." if 0.67 < ratio < 1.5 else
         f": {ratio:.1f}x apart. DDP's own work (buckets, the optimizer step, the real transfer under the simulated "
         "link) and the ranks sharing the cores make a "
         "step here cost " + ("more" if ratio > 1 else "less") + " than the dilation assumed, so relative to computing "
         "these links are " + ("faster" if ratio > 1 else "slower") + " than the cluster's would be, and every "
         "crossover sits at a " + ("lower" if ratio > 1 else "higher") + " bandwidth than it would there."))
ax.set(xscale="log", yscale="log", xlabel="cluster link bandwidth, Gb/s per direction (each dilated for this machine)",
       ylabel="ms per step (here)", title=f"step time vs bandwidth, {WORLD} ranks as {GPU}s (dotted: alpha-beta)")
ax.set_xticks(GBITS, [str(g) for g in GBITS])
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# How to read it (the numbers are this run's, printed above):
#
# * Each solid line is a measured method; its dotted twin is $c_m + K_m\alpha + S_m/B$ from the
#   fitted computation and the counted bytes and messages. By the model, fp32 DDP's line falls
#   steeply with bandwidth (its $S_0/B$ term is large), while PowerSGD's and top-k's fall far less:
#   they send so little that what is left of their wire time is mostly latency, and at high
#   bandwidth their height is set by what they compute.
# * Where a compressed line crosses fp32's, the bytes saved, $(S_0 - S_m)/B$, have shrunk to the
#   price paid in computation and messages; above that bandwidth compression costs time. The model's
#   $B^*$ and the measured crossing need not agree exactly: the simulated link never delivers sooner
#   than the real transfer underneath it (loopback between two processes), a floor the model folds
#   into $c_m$; near a crossover the two lines are close; and timings on two shared cores are noisy
#   (a line may even cross twice).
# * A method whose fitted $c_m$ is no larger than fp32's never costs more, by the model (bf16 comes
#   close: a cast is cheap). If its measured line still crosses fp32's, the two lines are within
#   the noise of each other there.
# * These are 2 ranks. All-reduce's bytes per rank barely change with $N$, top-k's all-gather
#   grows with $N$, so top-k's advantage shrinks as ranks are added (section 4).
#
# **What real systems do across nodes.** Inside a node, GPUs talk over NVLink at hundreds of GB/s
# and compression rarely pays. Between nodes the picture is mixed. The most common measure is the
# cheapest: communicate gradients in bf16, as fully sharded training does with a reduced-precision
# reduce dtype (PyTorch FSDP's `MixedPrecision(reduce_dtype=torch.bfloat16)`), and overlap
# communication with backward. Low-rank and sparse methods are used mostly where the links are
# slow: PowerSGD ships in PyTorch as a DDP hook (Vogels et al., *PowerSGD: Practical Low-Rank
# Gradient Compression for Distributed Optimization*, NeurIPS 2019), and Deep Gradient Compression
# sent about 0.1 % of the entries with error feedback and momentum correction (Lin et al., ICLR
# 2018). 1-bit Adam compresses Adam's communication after a warm-up (Tang et al., ICML 2021), and
# DeepSpeed's ZeRO++ quantizes weights and gradients for the transfers between nodes
# (Wang et al., 2023, arXiv:2306.10209). A systematic study, *On the Utility of Gradient Compression
# in Distributed Training Systems* (Agarwal et al., MLSys 2022), found that on fast data-centre
# networks with optimised all-reduce and overlap, most compression methods rarely speed training
# up: the computation they add and their poor fit with all-reduce eat the savings, exactly the
# crossover you measured. At the far end, training across data centres communicates *less often*
# instead, for example by averaging models every few hundred steps (DiLoCo, Douillard et al., 2023).
#
# ## Summary
#
# * A DDP communication hook gets a `GradBucket` (this rank's flat gradients) and returns a future
#   of the average. The identity hook reproduces default DDP bit for bit.
# * bf16 halves the bytes at almost no computational cost and keeps float32's range; fp16 keeps more
#   digits but loses small gradients (hence loss scaling).
# * PowerSGD sends $(n+m)r$ numbers per $n \times m$ matrix; top-k sends $k$ (value, index) pairs on
#   all-gather, because ranks choose different indices. Both need **error feedback**: keep what was
#   not sent and add it to the next step.
# * Compression pays while the bytes saved cost more wire time than the compression costs
#   computation: below a crossover bandwidth $B^* = (S_0 - S_m) / \Delta c$.
#
# Next: the exercise `exercises/10_compression.ipynb`, where you write the top-k hook with error
# feedback yourself, and `dpcourse bench compression --network 10GbE` to compare the methods on
# any link.

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids
lesson_aids("10")
