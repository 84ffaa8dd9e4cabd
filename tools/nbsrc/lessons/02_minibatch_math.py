# %% [markdown]
# # Lesson 02 — Why splitting a batch gives the same step
#
# Data-parallel training rests on one fact: if k workers each take a slice (a **shard**) of the
# batch, compute the gradient of their own mean loss, and then average those gradients, they get
# *the same gradient* one worker would get on the whole batch. So they can all take the same step
# and stay identical copies of one model.
#
# Is that exactly true, or only roughly? And when does it stop being true? This lesson checks it
# numerically, one identity at a time, printing the largest difference it finds, and then breaks
# it on purpose four ways: BatchNorm, dropout, sum-reduced losses and shards of unequal size.
#
# ## The algebra, in one line
#
# For a batch of $B$ samples with per-sample losses $\ell_i(\theta)$, the mean loss is
# $L = \frac1B\sum_i \ell_i$, so its gradient is the mean of the per-sample gradients $g_i$.
# Split the batch into $k$ shards $S_1,\dots,S_k$ of equal size $B/k$. Shard $r$'s mean-loss gradient
# is $G_r = \frac{k}{B}\sum_{i\in S_r} g_i$, and
#
# $$\frac1k\sum_{r=1}^k G_r \;=\; \frac1k\sum_r \frac{k}{B}\sum_{i\in S_r} g_i \;=\; \frac1B\sum_{i=1}^B g_i \;=\; \nabla L .$$
#
# The computer adds floating-point numbers in a different order on each side, so we expect
# agreement up to rounding: about $10^{-7}$ relative in float32, $10^{-16}$ in float64.

# %%
import copy

import matplotlib.pyplot as plt
import torch
from torch import nn

from dpcourse.data import digits_split, shard
from dpcourse.models import build_model
from dpcourse.plots import plot_bars, plot_lines
from dpcourse.train import gradient_vector, max_difference

torch.set_num_threads(1)          # tiny models: splitting their small operations over threads only adds overhead
train_set, _ = digits_split()
X, Y = train_set.tensors
BATCH = 128                       # the global batch; turn it up if you like
xb, yb = X[:BATCH], Y[:BATCH]
loss_fn = nn.CrossEntropyLoss()   # reduction="mean", the default


def gradient(model, x, y, loss=loss_fn):
    """The gradient of `loss(model(x), y)` as one flat vector (grads zeroed first)."""
    model.zero_grad(set_to_none=True)
    loss(model(x), y).backward()
    return gradient_vector(model).clone()


# %% [markdown]
# ## Identity 1: the mean of shard gradients is the gradient of the mean
#
# We take one model, compute the full-batch gradient, then the gradient on each of k shards
# (`dpcourse.data.shard` gives rank r its contiguous slice), average, and compare. Once in float32,
# once in float64, for several k.

# %%
shard_counts = [1, 2, 4, 8, 16]
identity1 = {}
for dtype in (torch.float32, torch.float64):
    model = build_model("digits-mlp", seed=0).to(dtype)
    x = xb.to(dtype)
    full = gradient(model, x, yb)
    diffs = []
    for k in shard_counts:
        averaged = sum(gradient(model, shard(x, r, k), shard(yb, r, k)) for r in range(k)) / k
        diffs.append(max_difference(full, averaged))
    identity1[str(dtype).replace("torch.", "")] = diffs

print(f"largest |full-batch gradient - mean of shard gradients|, batch {BATCH}, gradient norm {full.norm():.3f}")
print("shards k:  " + "".join(f"{k:>10d}" for k in shard_counts))
for name, diffs in identity1.items():
    print(f"{name:10s} " + "".join(f"{d:10.1e}" for d in diffs))

plot_lines(shard_counts, {n: [max(d, 1e-20) for d in ds] for n, ds in identity1.items()}, xlabel="shards k",
           ylabel="max abs difference (0 drawn as 1e-20)", title="Mean of shard gradients vs full gradient",
           logx=True, logy=True)
plt.show()
assert max(identity1["float64"]) < 1e-12 and max(identity1["float32"]) < 1e-5

# %% [markdown]
# **Reading it.** With k = 1 the difference is exactly zero: same computation. For k > 1 it is
# tiny and set by the number format, not by k: float64 differences sit around $10^{-17}$, float32
# around $10^{-8}$ to $10^{-9}$. That is rounding from adding in a different order, nothing more.
# When you compare a parallel run with a single-device run later, differences of this size mean
# "identical"; differences far above it mean a bug.
#
# ## Identity 2: gradient accumulation
#
# The same algebra lets *one* device process a batch too big for its memory: run the k shards
# (now called **micro-batches**) one after another, and let `backward()` add their gradients into
# `.grad`, which is what it does by default. Dividing each micro-batch loss by k turns the sum of
# the k mean-gradients into their average.

# %%
model = build_model("digits-mlp", seed=0).double()
x = xb.double()
full = gradient(model, x, yb)

accumulation = {}
for k in shard_counts:
    model.zero_grad(set_to_none=True)
    for r in range(k):
        (loss_fn(model(shard(x, r, k)), shard(yb, r, k)) / k).backward()   # backward adds into .grad
    accumulation[k] = max_difference(full, gradient_vector(model))
for k, d in accumulation.items():
    print(f"{k:2d} micro-batches of {BATCH // k:3d}: max difference {d:.1e}")
assert max(accumulation.values()) < 1e-12

# %% [markdown]
# Dividing by k is right here because every micro-batch has the same size. In the exercise of
# this lesson you write the general version, which must also be exact when the batch does not
# split evenly; the last experiment below shows what goes wrong if you keep dividing by k.
#
# ## Identity 3: data parallelism inside one process
#
# Now the whole idea of data-parallel training, without any processes yet. We make k **replicas**
# (deep copies, so they start identical), give each its own optimizer, and at every step:
#
# 1. replica r computes the gradient on shard r of the batch,
# 2. the gradients are averaged across replicas and written back into every replica,
# 3. every replica takes its optimizer step.
#
# A reference model takes the same steps on the full batches. If the identity holds, every
# replica should track the reference step after step. We use SGD with momentum, so the optimizer
# carries state too.

# %%
def data_parallel_run(k, steps, dtype):
    """Train a reference on full batches and k replicas on shards; return per-step differences."""
    reference = build_model("digits-mlp", seed=0).to(dtype)
    replicas = [copy.deepcopy(reference) for _ in range(k)]
    make_opt = lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    ref_opt, opts = make_opt(reference), [make_opt(m) for m in replicas]
    to_reference, between_replicas = [], []
    for step in range(steps):
        batch = torch.arange(step * BATCH, (step + 1) * BATCH) % len(X)
        x, y = X[batch].to(dtype), Y[batch]
        ref_opt.zero_grad()
        loss_fn(reference(x), y).backward()
        ref_opt.step()
        for r, m in enumerate(replicas):                         # 1. each replica on its shard
            m.zero_grad()
            loss_fn(m(shard(x, r, k)), shard(y, r, k)).backward()
        for params in zip(*(m.parameters() for m in replicas)):   # 2. average, write back
            mean = torch.stack([p.grad for p in params]).mean(dim=0)
            for p in params:
                p.grad.copy_(mean)
        for opt in opts:                                          # 3. identical steps
            opt.step()
        to_reference.append(max_difference(replicas[0], reference))
        between_replicas.append(max(max_difference(replicas[0], m) for m in replicas[1:]))
    return to_reference, between_replicas


STEPS, K = 20, 4
runs = {str(dt).replace("torch.", ""): data_parallel_run(K, STEPS, dt) for dt in (torch.float32, torch.float64)}
for name, (to_ref, between) in runs.items():
    print(f"{name}: after {STEPS} steps, replica vs reference {to_ref[-1]:.1e}, "
          f"replicas among themselves {max(between):.1e}")
plot_lines(range(1, STEPS + 1), {f"{n}: replica vs reference": [max(d, 1e-20) for d in r[0]] for n, r in runs.items()},
           xlabel="training step", ylabel="max abs parameter difference", logy=True,
           title=f"{K} replicas on shards vs one model on the full batch")
plt.show()
assert all(max(r[1]) == 0.0 for r in runs.values()), "replicas applying the same gradient must stay bit-identical"
assert runs["float64"][0][-1] < 1e-10 and runs["float32"][0][-1] < 1e-4

# %% [markdown]
# **Reading it.** The replicas agree with each other *exactly* (difference 0.0): they start equal
# and apply the same averaged gradient with the same optimizer, so nothing can separate them.
# This is why data-parallel training needs no step that re-synchronises the weights. Against the
# reference they differ by rounding only, which grows slowly over the steps (each step starts
# from slightly different weights) but stays tiny, most visibly in float32.
#
# ## Where the equality breaks
#
# The algebra assumed three things: each sample's loss depends only on that sample and the
# parameters, the loss is a *mean*, and the shards are the same size. Break any one and the
# shard average is no longer the full-batch gradient.
#
# ### Break 1: BatchNorm
#
# BatchNorm normalises each feature with the mean and variance *of the batch it sees*. A shard
# sees only its own samples, so its statistics, and hence every sample's output, differ from the
# full batch. LayerNorm normalises each sample on its own and has no such dependence.

# %%
def norm_model(norm):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), norm(64), nn.ReLU(), nn.Linear(64, 10)).double()


x = xb.double()
norm_diffs = {}
for name, norm in {"BatchNorm1d": nn.BatchNorm1d, "LayerNorm": nn.LayerNorm}.items():
    model = norm_model(norm)
    full = gradient(model, x, yb)
    norm_diffs[name] = [max_difference(full, sum(gradient(model, shard(x, r, k), shard(yb, r, k))
                                                 for r in range(k)) / k) for k in shard_counts]
print("shards k:    " + "".join(f"{k:>10d}" for k in shard_counts))
for name, diffs in norm_diffs.items():
    print(f"{name:12s} " + "".join(f"{d:10.1e}" for d in diffs))
plot_lines(shard_counts, {n: [max(d, 1e-20) for d in ds] for n, ds in norm_diffs.items()}, xlabel="shards k",
           ylabel="max abs gradient difference", title="Batch statistics break the identity", logx=True, logy=True)
plt.show()

# %% [markdown]
# **Reading it.** With BatchNorm the difference leaves rounding level as soon as k > 1, by many
# orders of magnitude, and grows as shards get smaller (their statistics get noisier).
# LayerNorm stays at rounding level. In real training this is often acceptable (each worker's
# BatchNorm still sees a decent number of samples), but it is *not* the same computation. When it
# matters, `torch.nn.SyncBatchNorm` replaces each BatchNorm layer with one that first adds up every
# worker's per-feature sums and counts (one all-reduce, lesson 03's collective), so that every worker
# normalises with the mean and variance of the whole global batch; lesson 07 does that arithmetic by
# hand. Note also that each replica's running mean and variance drift apart, since each sees
# different data; DDP (PyTorch's `DistributedDataParallel`, the data-parallel wrapper lesson 05
# builds by hand and lesson 07 uses) copies rank 0's buffers to the others at every forward pass by
# default (`broadcast_buffers=True`).
#
# ### Break 2: dropout and random streams
#
# Dropout zeroes random activations. Which ones depends on the random number generator, and a
# shard run consumes random numbers differently from a full-batch run. Worse, if every worker is
# seeded the same way, every worker draws the *same* masks for its shard.

# %%
ps = [0.0, 0.1, 0.3, 0.5]
dropout_diffs = []
for p in ps:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, 10)).double()
    torch.manual_seed(1)
    full = gradient(model, x, yb)
    parts = []
    for r in range(4):
        torch.manual_seed(1)           # every "worker" seeded alike, as a careless launch would do
        parts.append(gradient(model, shard(x, r, 4), shard(yb, r, 4)))
    dropout_diffs.append(max_difference(full, sum(parts) / 4))
for p, d in zip(ps, dropout_diffs):
    print(f"dropout p={p:.1f}: max gradient difference (4 shards vs full batch) {d:.1e}")

# Same seed on every worker -> identical masks on every shard:
drop = nn.Dropout(0.5)
masks = {}
for label, seeds in {"same seed on every worker": [1, 1], "seed + rank": [1, 2]}.items():
    m = []
    for s in seeds:
        torch.manual_seed(s)
        m.append(drop(torch.ones(32, 64)) != 0)
    masks[label] = (m[0] == m[1]).double().mean().item()
    print(f"{label:26s}: masks of worker 0 and worker 1 agree on {masks[label]:.0%} of positions")
plot_bars(masks, ylabel="fraction of equal mask entries", title="Dropout masks of two workers (p = 0.5)", fmt="{:.0%}")
plt.show()

# %% [markdown]
# **Reading it.** With p = 0 dropout does nothing and the identity holds to rounding. For p > 0
# the shard run and the full-batch run drop different units, so the gradients differ far above
# rounding level: they are equally valid random draws, equal *in distribution*, not in
# value. So a data-parallel run with dropout is never bit-for-bit comparable with a single-device
# run. The second experiment shows a real bug: with one seed for every worker, sample i of every
# shard gets the same mask, and the noise that was supposed to be independent is copied k times.
# Seed the model's *initial weights* identically, but give each rank its own stream for the
# randomness inside training (for example `torch.manual_seed(seed + rank)` after the model is
# built).
#
# ### Break 3: sum instead of mean
#
# With `reduction="sum"` a shard's loss is the sum over its samples, so averaging shard gradients
# divides the full-batch gradient by k.

# %%
# NBVAL_CHECK_OUTPUT
sum_loss = nn.CrossEntropyLoss(reduction="sum")
model = build_model("digits-mlp", seed=0).double()
full = gradient(model, x, yb, loss=sum_loss)
ratios = []
for k in shard_counts:
    shard_grads = [gradient(model, shard(x, r, k), shard(yb, r, k), loss=sum_loss) for r in range(k)]
    averaged, summed = sum(shard_grads) / k, sum(shard_grads)
    ratios.append(full.norm().item() / averaged.norm().item())
    assert max_difference(full, summed) < 1e-10            # with a sum loss, sum (don't average)
print("shards k:                       " + "".join(f"{k:>6d}" for k in shard_counts))
print("|full gradient| / |average|:    " + "".join(f"{r:6.2f}" for r in ratios))
assert all(abs(r - k) < 1e-9 for r, k in zip(ratios, shard_counts))

# %% [markdown]
# **Reading it.** The ratio is exactly k: averaging a sum-loss gradient over k workers is like
# dividing the learning rate by k, a bug that does not crash and only makes training mysteriously
# slower as you add workers. Either use a mean loss and average (what DDP does: it sums gradients
# and divides by the world size), or use a sum loss and sum.
#
# ### Break 4: shards of unequal size
#
# When the batch does not divide evenly, shards differ in size. A plain average gives every shard
# the same weight, so each sample in a small shard counts for more than a sample in a big one.
# Weighting each shard's gradient by its share of the batch, $n_r/B$, restores the identity.

# %%
model = build_model("digits-mlp", seed=0).double()
x100, y100 = x[:100], yb[:100]
full = gradient(model, x100, y100)
splits = [50, 40, 25, 10, 1]          # size of the first shard; the second gets the rest
plain, weighted = [], []
for n0 in splits:
    g0 = gradient(model, x100[:n0], y100[:n0])
    g1 = gradient(model, x100[n0:], y100[n0:])
    plain.append(max_difference(full, (g0 + g1) / 2))
    weighted.append(max_difference(full, (n0 * g0 + (100 - n0) * g1) / 100))
print("shard sizes     plain average   size-weighted")
for n0, a, b in zip(splits, plain, weighted):
    print(f"{n0:3d} + {100 - n0:3d}      {a:10.1e}      {b:10.1e}")
plot_lines([f"{n0}+{100 - n0}" for n0 in splits], {"plain average": [max(v, 1e-20) for v in plain],
           "weighted by shard size": [max(v, 1e-20) for v in weighted]}, xlabel="shard sizes",
           ylabel="max abs gradient difference", title="Unequal shards, batch of 100", logy=True)
plt.show()
assert plain[0] < 1e-12 and all(w < 1e-12 for w in weighted) and plain[-1] > 1e-4

# %% [markdown]
# **Reading it.** At 50 + 50 both agree with the full batch. As the split gets lopsided the plain
# average drifts away while the weighted one stays at rounding level. DDP divides by the world
# size, i.e. it takes the plain average, so it relies on equal shards: PyTorch's
# `DistributedSampler` (the sampler you give each rank's `DataLoader` so that every rank draws its
# own share of the dataset's indices; lesson 07 uses it) gives every rank the same number of
# samples (by default it repeats a few samples to fill up the last ranks). If your last batch is
# uneven, either drop it or weight it.
#
# ## Check
#
# Everything this lesson claimed, asserted again on its own results:

# %%
# NBVAL_CHECK_OUTPUT
assert max(identity1["float64"]) < 1e-12          # mean of shard gradients = gradient of the mean
assert max(accumulation.values()) < 1e-12         # accumulation over micro-batches = one big batch
assert runs["float64"][0][-1] < 1e-10             # k replicas on shards track one model
assert min(norm_diffs["BatchNorm1d"][1:]) > 1e3 * max(norm_diffs["LayerNorm"])   # BatchNorm breaks it
assert dropout_diffs[0] < 1e-12 and min(dropout_diffs[1:]) > 1e-6                # dropout breaks it
assert masks["same seed on every worker"] == 1.0 and masks["seed + rank"] < 0.75
assert plain[-1] > 1e3 * max(weighted)            # unequal shards: weight by size
print("all checks passed")

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids
lesson_aids("02")
