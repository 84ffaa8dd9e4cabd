# %% [markdown]
# # Lesson 05 — Data-parallel training by hand
#
# Lesson 04 gave us all-reduce: every rank ends up with the sum of everyone's tensor. This lesson
# asks **what else it takes to train one model on several processes, and why PyTorch's
# `DistributedDataParallel` (DDP) is faster than the first version anyone writes.**
#
# We build it in six steps and measure each one — time per training step and number of
# collectives per step:
#
# 1. shard the data: every rank takes its own slice of each global batch;
# 2. broadcast the initial parameters from rank 0, so that all ranks start equal;
# 3. after `backward()`, average the gradients with one all-reduce per parameter;
# 4. the same with one all-reduce of all gradients packed into a single flat tensor;
# 5. overlap: start each all-reduce from a gradient hook, asynchronously, while backward is still running;
# 6. buckets, filled in the order the gradients become ready.
#
# Then we show — and assert — that the result is the *same training* as one process on the
# full batch, at world sizes 1, 2 and 4, even with frozen, shared and unused parameters.
#
# A word on this machine: the ranks are processes on a few CPU cores talking through gloo over
# loopback, where a message is nearly free and computation and communication fight over the same
# cores. A cluster is the opposite: every GPU has its own link, the link is the bottleneck, and
# the GPU computes while the network moves bytes. So the timing experiments run on a **simulated
# cluster link** (lesson 04, section 5b), slowed down as much as this CPU is slower than the GPU
# it stands for, so that computation and communication keep a real cluster's proportions. The
# numbers are this run's; yours will differ.

# %%
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
from IPython.display import Code
from torch import nn

import dpcourse
from dpcourse.data import shard, synthetic_classification
from dpcourse.ddp_by_hand import BucketedDDP, average_gradients, broadcast_parameters, flat_average_gradients
from dpcourse.ddp_instrumented import CollectiveCounter, TimedBucketedDDP
from dpcourse.models import Quirky, WideMLP, count_parameters
from dpcourse.dilation import cluster_link
from dpcourse.network import reset_stats, stats, transfers
from dpcourse.plots import plot_bars, plot_wire_timeline

# Knobs: turn these up on a bigger machine (or with GPUs).
WORLD = 2            # ranks for the timing experiments
FEATURES, WIDTH, DEPTH = 256, 768, 3    # WideMLP(256, 768, 3): about 1.4 M parameters
BUCKET_MB = 2.0      # the middle bucket size tried in step 6 (about a third of this model's gradients)
GLOBAL_BATCH = 512   # samples per step, split over the ranks (enough computation per rank for overlap to hide the wire)
STEPS = 5            # timed steps per experiment (the median is reported)
CLUSTER = ("100GbE", "A100")   # the cluster the timings stand for: link preset, GPU

torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)  # import the optimizer machinery once, before forking workers
data = synthetic_classification(GLOBAL_BATCH, features=FEATURES, seed=0)
X, Y = data.tensors
print(f"model: {count_parameters(WideMLP(FEATURES, WIDTH, DEPTH)) / 1e6:.2f} M parameters, "
      f"global batch {GLOBAL_BATCH}, {WORLD} ranks, {torch.get_num_threads()} cores here")

# %% [markdown]
# ## Step 1 — shard the data
#
# Data parallelism splits the **batch**, not the model. With a global batch of $B$ samples and
# $W$ ranks, rank $r$ computes the loss on its own $B/W$ samples. Why does that give the right
# gradient? The loss is a mean over samples, and the gradient of a mean is the mean of the
# gradients. With equal shards, the mean of the $W$ shard-gradients *is* the full-batch gradient:
#
# $$\nabla \frac{1}{B}\sum_{i=1}^{B} \ell_i \;=\; \frac{1}{W}\sum_{r=1}^{W}\Big(\nabla\frac{W}{B}\sum_{i \in \text{shard } r}\ell_i\Big).$$
#
# A small experiment in one process checks this before any communication is involved.

# %%
torch.manual_seed(0)
probe = WideMLP(FEATURES, 64, 2)

def gradient(model, x, y):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])

full = gradient(probe, X, Y)
for w in (2, 4):
    mean_of_shards = sum(gradient(probe, shard(X, r, w), shard(Y, r, w)) for r in range(w)) / w
    print(f"{w} shards: max |full-batch gradient - mean of shard gradients| = {(full - mean_of_shards).abs().max():.1e}")
    assert torch.allclose(full, mean_of_shards, atol=1e-6)

# %% [markdown]
# Now the real thing: `dpcourse.launch` starts the ranks, and each one picks its slice with
# `dpcourse.data.shard`. Each rank sees a different part of the batch; together they see all of it.

# %%
def my_slice():
    r, w = dist.get_rank(), dist.get_world_size()
    rows = shard(torch.arange(GLOBAL_BATCH), r, w)
    print(f"rows {rows[0].item()}..{rows[-1].item()} ({len(rows)} samples)")
    return rows.tolist()

slices = dpcourse.launch(my_slice, WORLD)
assert sorted(sum(slices, [])) == list(range(GLOBAL_BATCH))  # every sample once, no overlap

# %% [markdown]
# ## Step 2 — start from the same parameters
#
# Each process builds its own copy of the model. If the ranks initialise it differently, they
# train different models, and averaging their gradients is meaningless. The cure is one
# `broadcast` per parameter and buffer from rank 0 before training. Below, every rank seeds its
# random generator differently on purpose, and we look at how far the copies are apart before and
# after the broadcast.

# %%
def spread_across_ranks(model):
    """Largest difference between this rank's parameters and rank 0's."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    rank0 = flat.clone()
    dist.broadcast(rank0, src=0)
    return (flat - rank0).abs().max().item()

def start_equal():
    torch.manual_seed(dist.get_rank())            # deliberately different starting points
    model = WideMLP(FEATURES, WIDTH, DEPTH)
    before = spread_across_ranks(model)
    start = time.perf_counter()
    with CollectiveCounter() as counts:
        broadcast_parameters(model)
    seconds = time.perf_counter() - start
    return before, spread_across_ranks(model), counts["broadcast"], seconds

before, after, n_broadcasts, seconds = dpcourse.launch(start_equal, WORLD)[-1]
print(f"largest difference to rank 0: before {before:.3f}, after {after:.1f}")
print(f"{n_broadcasts} broadcasts (one per parameter tensor), {1e3 * seconds:.0f} ms, once per training run")
assert before > 0 and after == 0

# %% [markdown]
# ## The cluster the timings stand for
#
# One number decides whether communication matters: how long a step computes against how long
# its gradients are on the wire. We measure one training step of this model on one rank's share
# of the batch, here, with one thread; count its floating-point operations; and divide them by
# what the GPU of `CLUSTER` does per second (its datasheet peak, at the 40 % of it that real
# training reaches). The ratio is the **dilation**: the link of `CLUSTER` is slowed down by the
# same factor, so that one step here spends the same share of its time communicating as it
# would on that cluster. (A simulated link can only slow messages down, never speed them up: the
# dilated link must stay well below the speed of this machine's own loopback, which lesson 04
# measured. A cluster of A100s on 100 Gigabit Ethernet does; try another with `CLUSTER`.)

# %%
torch.manual_seed(0)
per_rank = GLOBAL_BATCH // WORLD
LINK, dilation = cluster_link(CLUSTER[0], WideMLP(FEATURES, WIDTH, DEPTH), X[:per_rank], Y[:per_rank], gpu=CLUSTER[1])
grad_bytes = count_parameters(WideMLP(FEATURES, WIDTH, DEPTH)) * 4
print(f"the dilation: {dilation}")
print(f"the link: {LINK}")
print(f"an all-reduce of all {grad_bytes / 1e6:.1f} MB of gradients on {WORLD} ranks: "
      f"{LINK.time(2 * (WORLD - 1) / WORLD * grad_bytes, 2 * (WORLD - 1)) * 1e3:.1f} ms on the wire, "
      f"against {dilation.here_s * 1e3:.1f} ms of computation per step")

# %% [markdown]
# ## A yardstick for steps 3–6
#
# To compare the variants fairly, every one of them runs the same function: build the model
# (same seed on every rank), train `STEPS` SGD steps on this rank's shard, and report the median
# step time, the all-reduces per step (counted by the simulated process group itself, so
# PyTorch's DDP is counted too), the final parameters, and a timeline of the last step: when
# forward and backward ran, and when each simulated transfer was on the wire. A *variant* is a
# function `wrap(model) -> (module to call, function to run after backward)`. The
# single-process baseline is the same loop in one process on the full batch, with one thread.

# %%
def measure(wrap, steps=STEPS):
    r, w = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = WideMLP(FEATURES, WIDTH, DEPTH)
    net, after_backward = wrap(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = shard(X, r, w), shard(Y, r, w)
    times, collectives = [], []
    for step in range(steps + 1):                  # step 0 is a warm-up, not timed
        dist.barrier()
        if w > 1:
            reset_stats()
        start = time.monotonic()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        t0 = time.monotonic()
        loss.backward()
        t1 = time.monotonic()
        after_backward()
        opt.step()
        end = time.monotonic()
        if step:
            times.append(end - start)
            collectives.append(stats()["ops"].get("allreduce", 0) if w > 1 else 0)
    ms = lambda t: 1e3 * (t - start)               # the last step's times, from its start
    result = {"step_ms": 1e3 * np.median(times), "collectives": max(collectives),
              "timeline": {"forward": (0.0, ms(t0)), "backward": (ms(t0), ms(t1)), "step": ms(end),
                           "transfers": [(ms(a), ms(b), n) for op, a, b, n in transfers(start) if op == "allreduce"]}}
    if isinstance(net, TimedBucketedDDP):          # its own record of the last step, per bucket
        result["buckets"] = [{**b, **{k: ms(b[k]) for k in ("ready", "start", "end")}} for b in net.timeline[-1]]
    if r == 0:
        result["params"] = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
    return result

results = {}

def record(name, result):
    results[name] = result
    line = f"{name:28s} {result['step_ms']:7.1f} ms per step, {result['collectives']:3d} all-reduces per step"
    if name != "single process":
        gap = np.abs(result["params"] - results["single process"]["params"]).max()
        line += f", max |params - single process| = {gap:.1e}"
        assert gap < 1e-4, "the ranks did not train the same model as one process"
    print(line)

no_sync_needed = lambda model: (model, lambda: None)
record("single process", dpcourse.launch(measure, 1, no_sync_needed)[0])

# %% [markdown]
# ## Step 3 — average the gradients, one all-reduce per parameter
#
# After `backward()` every rank holds the gradient of *its* shard. Sum them with all-reduce,
# divide by the world size, and every rank holds the full-batch gradient; the optimizer then
# takes the same step everywhere, so the copies stay equal forever. This is
# `dpcourse.ddp_by_hand.average_gradients` (a parameter without a gradient joins with zeros, so
# that every rank calls the same all-reduces in the same order):

# %%
Code(inspect.getsource(average_gradients), language="python")

# %%
record("naive (per parameter)", dpcourse.launch(measure, WORLD, lambda m: (m, lambda: average_gradients(m)),
                                                network=LINK)[0])

# %% [markdown]
# The parameters match the single-process run (within float32 rounding: the sums are added in a
# different order). What does it cost? One collective per parameter tensor (the count is printed
# above), each paying a fixed start-up cost, and none of them starts before the whole backward
# pass has finished.
#
# ## Step 4 — one flat all-reduce
#
# Fewer, larger messages waste less time on per-message overhead: pack all gradients into one
# flat tensor, all-reduce it once, and copy the averages back (`flat_average_gradients`, beside
# `average_gradients` in the same module):

# %%
Code(inspect.getsource(flat_average_gradients), language="python")

# %%
record("flat (one all-reduce)", dpcourse.launch(measure, WORLD, lambda m: (m, lambda: flat_average_gradients(m)),
                                                network=LINK)[0])

# %% [markdown]
# One collective per step now. But the communication still waits for the end of backward, and the
# CPU (or GPU) that computes gradients sits idle while the network moves them. Yet the last
# layer's gradients are finished long before the first layer's: **backward produces gradients
# one layer at a time, from the output back to the input.** We can start sending early.
#
# ## Step 5 — overlap: hooks and asynchronous all-reduce
#
# Two tools make that possible:
#
# * `param.register_post_accumulate_grad_hook(fn)` calls `fn(param)` the moment `param.grad` is
#   final for this backward pass;
# * `dist.all_reduce(tensor, async_op=True)` starts the collective and returns at once with a
#   *work handle*; the communication runs in the background until we call `handle.wait()`.
#
# So: from each hook, start the all-reduce of that gradient; after backward, wait for all of them.

# %%
class OverlapEachParameter(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module, self.pending = module, []
        for p in module.parameters():
            p.register_post_accumulate_grad_hook(self._ready)

    def _ready(self, p):  # runs inside backward, as soon as p.grad is final
        self.pending.append((p, dist.all_reduce(p.grad, async_op=True)))

    def forward(self, *args):
        return self.module(*args)

    def finish(self):
        for p, work in self.pending:
            work.wait()
            p.grad /= dist.get_world_size()
        self.pending = []

def overlapped(model):
    wrapped = OverlapEachParameter(model)
    return wrapped, wrapped.finish

record("overlap (per parameter)", dpcourse.launch(measure, WORLD, overlapped, network=LINK)[0])

# %% [markdown]
# To *see* the overlap, draw the last step of each variant: the grey span is forward, the orange
# one backward, and each blue bar is one all-reduce on the (simulated) wire, from the moment it
# started to the moment its last byte was through. The black tick is the end of the step.

# %%
fig = plot_wire_timeline({name: results[name]["timeline"]
                          for name in ("naive (per parameter)", "flat (one all-reduce)", "overlap (per parameter)")})
plt.show()
exposed = {name: results[name]["timeline"]["step"] - results[name]["timeline"]["backward"][1]
           for name in ("flat (one all-reduce)", "overlap (per parameter)")}
for name, ms in exposed.items():
    print(f"{name}: the step went on for {ms:.1f} ms after backward had finished")

# %% [markdown]
# What to look for: with the flat all-reduce, nothing is on the wire until backward is over, and
# the whole transfer is added to the step. With overlap, the first bars start **inside** the
# orange span: the last layers' gradients travel while autograd is still computing the first
# layers'. What still sticks out after backward is the *exposed* communication, the only part
# the step waits for (printed above for this run). On a GPU cluster that is the whole game: the
# GPU and the network work at the same time, and every millisecond hidden under backward is a
# millisecond off the step.
#
# ## Step 6 — buckets, in the order gradients become ready
#
# Per-parameter messages overlap well but are many and small; one flat message is efficient but
# cannot start until everything is done. **Buckets** are the compromise PyTorch's DDP uses
# (default 25 MB): group the gradients into buckets of about `bucket_mb` megabytes, and all-reduce
# a bucket as soon as all its gradients are ready.
#
# For that to work, a bucket must fill *early*, so buckets are filled in the order the gradients
# arrive. Which order is that? Let us ask the hooks.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
order_model = WideMLP(FEATURES, 64, DEPTH)
ready_order = []
names = {p: n for n, p in order_model.named_parameters()}
handles = [p.register_post_accumulate_grad_hook(lambda p: ready_order.append(names[p])) for p in order_model.parameters()]
nn.functional.cross_entropy(order_model(X), Y).backward()
for h in handles:
    h.remove()
print("registration order:", [n for n, _ in order_model.named_parameters()])
print("ready order:       ", ready_order)
assert ready_order == [n for n, _ in order_model.named_parameters()][::-1]

# %% [markdown]
# Backward runs the layers in reverse, so for a model that uses its layers in the order it
# registers them, **ready order = reverse registration order**. `BucketedDDP` fills its buckets in
# that order (keeping the first bucket small, 1 MB by default as in PyTorch's DDP, so that the
# first message leaves early), and starts the all-reduces strictly in bucket order — every rank must issue its
# collectives in the same sequence, or the ranks would pair up the wrong tensors. (PyTorch's DDP
# also records the real order during the first step and rebuilds its buckets once to match it.)
#
# It also handles what our small class above does not: parameters with `requires_grad=False` are
# broadcast but never reduced; a parameter shared by two layers is one tensor and is reduced once;
# a parameter that got no gradient on some rank joins with zeros (each bucket carries one "had a
# gradient" flag per parameter, so a parameter unused on *every* rank keeps `grad=None`, exactly as
# in single-process training); and `no_sync()` lets you accumulate gradients over several
# backward passes without communicating.
#
# Let us try three bucket sizes: one bucket per parameter (`bucket_mb=0`), `BUCKET_MB`, and one
# bucket for everything (`bucket_mb=None`). We run `TimedBucketedDDP` (from
# `dpcourse.ddp_instrumented`): the same class with a clock hooked on from outside, which notes when
# each bucket became ready and when its all-reduce started and ended. The algorithm is the one in
# `dpcourse.ddp_by_hand`, whose method names tell its steps:

# %%
print([name for name in vars(BucketedDDP) if not name.startswith("__")])

def bucketed(mb):
    def wrap(model):
        ddp = TimedBucketedDDP(model, bucket_mb=mb, clock=time.monotonic)  # the clock measure() uses
        return ddp, ddp.finish_gradient_synchronization
    return wrap

print(f"this model's gradients: {grad_bytes / 2**20:.1f} MB in float32")
for mb in (0.0, BUCKET_MB, None):
    record(f"bucketed, bucket_mb={mb}", dpcourse.launch(measure, WORLD, bucketed(mb), network=LINK)[0])

fig = plot_wire_timeline({f"bucket_mb={mb}": results[f"bucketed, bucket_mb={mb}"]["timeline"] for mb in (0.0, BUCKET_MB, None)},
                         title="BucketedDDP: three bucket sizes, last step")
plt.show()
for mb in (0.0, BUCKET_MB, None):
    r = results[f"bucketed, bucket_mb={mb}"]
    b0, b1 = r["timeline"]["backward"]
    first = min(b["start"] for b in r["buckets"])
    print(f"bucket_mb={mb}: {len(r['buckets'])} bucket(s); backward ran from {b0:.1f} to {b1:.1f} ms; "
          f"the first bucket's all-reduce started at {first:.1f} ms, the last one's at "
          f"{max(b['start'] for b in r['buckets']):.1f} ms (the buckets' own clock)")

# %% [markdown]
# Read the rows top to bottom, and the lines under the plot, which `TimedBucketedDDP` measured. With
# one bucket, the all-reduce cannot start before the very last gradient is ready, near the end of
# backward: it can overlap only whatever backward still does after that. With several
# buckets, the first bucket leaves while backward still runs and the last one waits only for the
# first layer's gradients. With one bucket per parameter, every message pays the link's latency
# once more.
#
# ## The best bucket size
#
# Small buckets start early but pay the per-message latency many times; big buckets pay it
# rarely but start late. Which one wins depends on the link's latency and bandwidth and on how
# fast backward produces gradients. A sweep, all sizes measured in the same launch in turns (so
# that they see the same machine):

# %%
SWEEP_MB = [0.0, 0.25, 1.0, 2.0, 4.0, None]

def sweep(rounds=2):
    times = {mb: [] for mb in SWEEP_MB}
    order = list(SWEEP_MB)
    for _ in range(rounds):
        order = order[1:] + order[:1]
        for mb in order:
            times[mb].append(measure(bucketed(mb), steps=3)["step_ms"])
    return {mb: float(np.median(t)) for mb, t in times.items()}

swept = dpcourse.launch(sweep, WORLD, network=LINK)[0]
label = lambda mb: "one bucket" if mb is None else f"{mb:g} MB"
fig = plot_bars({label(mb): ms for mb, ms in swept.items()}, "ms per training step",
                f"BucketedDDP on {CLUSTER[0]} standing for {CLUSTER[1]} GPUs, {WORLD} ranks", fmt="{:.1f}")
plt.show()
best = min(swept, key=swept.get)
worst = max(swept, key=swept.get)
print(f"best bucket size this run: {label(best)} ({swept[best]:.1f} ms per step); "
      f"worst: {label(worst)} ({swept[worst]:.1f} ms, {swept[worst] / swept[best]:.2f}x the best)")

# %% [markdown]
# The best size starts the first transfer early enough to fill the backward pass with
# communication, without paying the latency for too many messages; the sweep above says which
# size that was in this run (on a busy machine, with some noise). On this link a
# message's latency is printed at the top (`the link: …`); divide the gradients' transfer time by
# it to see how many messages the link can afford. PyTorch's DDP uses 25 MB buckets (and a small
# 1 MB first one) because real models have hundreds of megabytes of gradients: for them, 25 MB
# is "small". Turn `CLUSTER` to a slower link (`"10GbE"`) or a faster GPU (`"H100"`) and see
# where the best size goes.
#
# ## All variants, side by side
#
# The timings above ran one after another while the machine did other things. For a fairer
# comparison, measure all distributed variants in the same launch, in turns, together with
# PyTorch's own DDP, on the same cluster link.

# %%
from torch.nn.parallel import DistributedDataParallel

def side_by_side(rounds=2):
    variants = {"naive": lambda m: (m, lambda: average_gradients(m)),
                "flat": lambda m: (m, lambda: flat_average_gradients(m)),
                "overlap per param": overlapped,
                f"BucketedDDP {BUCKET_MB:g} MB": bucketed(BUCKET_MB),
                "torch DDP": lambda m: (DistributedDataParallel(m, bucket_cap_mb=BUCKET_MB), lambda: None)}
    times, order = {name: [] for name in variants}, list(variants)
    for _ in range(rounds):
        order = order[1:] + order[:1]          # a different order each round: nobody always goes last
        for name in order:
            times[name].append(measure(variants[name], steps=max(2, STEPS // 3))["step_ms"])
    return {name: float(np.median(t)) for name, t in times.items()}

step_ms = dpcourse.launch(side_by_side, WORLD, network=LINK)[0]
for name, ms in step_ms.items():
    print(f"{name:18s} {ms:7.1f} ms per step  {step_ms['flat'] / ms:5.2f}x the speed of flat-after-backward")
fig = plot_bars(step_ms, "ms per training step",
                f"{WORLD} ranks on {CLUSTER[0]} standing for {CLUSTER[1]} GPUs (baseline: flat)", fmt="{:.1f}")
plt.show()
overlapped_best = min(("overlap per param", f"BucketedDDP {BUCKET_MB:g} MB", "torch DDP"), key=step_ms.get)
gain = 1 - step_ms[overlapped_best] / step_ms["flat"]
print(f"fastest overlapped variant: {overlapped_best}, {abs(gain):.0%} {'less' if gain > 0 else 'more'} time per step "
      f"than one flat all-reduce after backward")

# %% [markdown]
# How to read these numbers (this run's):
#
# * The **baseline** here is the flat all-reduce after backward: the best you can do without
#   overlap. Every overlapped variant starts sending while backward still runs, so it can hide up
#   to the whole backward pass's worth of communication; the line above says how the fastest of
#   them compared in this run (on a busy machine the hooks' extra work can cost more than the
#   overlap saves).
# * **naive** pays the link's latency once per parameter *and* waits for backward to finish: it
#   has the costs of both worlds.
# * **BucketedDDP** and **PyTorch's DDP** do the same thing (buckets in ready order, asynchronous
#   all-reduces from hooks). Differences between them are the cost of Python hooks against C++
#   ones, and of packing buckets.
# * On this machine without a simulated link, all of these differences shrink to noise, because
#   loopback messages are nearly free: `dpcourse bench ddp` shows it. `dpcourse bench network`
#   repeats this comparison on any link and GPU you name.
#
# ## Same training as one process, at world sizes 1, 2 and 4
#
# The real test of a data-parallel implementation: after several steps, are the parameters the
# ones a single process gets on the full batch? We use a deliberately awkward model — a frozen
# layer, a weight shared by two layers, a layer used only for some samples (so only on some
# ranks), a layer never used, and a buffer: `dpcourse.models.Quirky`, the model the course's tests
# and the exercise's grader use too — train it in float64 with momentum and weight decay, and let
# every rank start from a different random initialisation (construction broadcasts rank 0's).
# Four ranks on two cores are oversubscribed: fine for correctness, meaningless for speed.

# %%
# NBVAL_CHECK_OUTPUT
print(Quirky.__doc__.split("\n")[0])

def awkward_batches(steps=3, batch=24):
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(batch, 6, generator=g, dtype=torch.float64).clamp(-0.9, 0.9) for _ in range(steps)]
    xs[0][0, 0] = 2.0                                   # step 0: only rank 0 has a sample that uses Quirky's `rare`
    return [(x, torch.randint(0, 3, (batch,), generator=g)) for x in xs]

def train_awkward(seed, wrap=True):
    torch.manual_seed(seed)
    model = Quirky().double()
    model.scale *= 1 + seed
    r, w = dpcourse.rank(), dpcourse.world_size()
    net = BucketedDDP(model, bucket_mb=0.001) if wrap else model
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9, weight_decay=0.01)
    for x, y in awkward_batches():
        opt.zero_grad()
        nn.functional.cross_entropy(net(shard(x, r, w)), shard(y, r, w)).backward()
        if wrap:
            net.finish_gradient_synchronization()
        opt.step()
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}

reference = train_awkward(0, wrap=False)                 # one process, full batch
for world in (1, 2, 4):
    per_rank = dpcourse.launch(lambda: train_awkward(dpcourse.rank()), world)
    gap = max(np.abs(s[k] - reference[k]).max() for s in per_rank for k in reference)
    print(f"world size {world}: every rank matches single-process training within 1e-12: {gap < 1e-12}")
    assert gap < 1e-12

# %% [markdown]
# All ranks, at every world size, end with the parameters of single-process training — to within
# float64 rounding. That is the promise of data parallelism: *the same training*, spread over
# several devices, as long as the shards are equal and every rank averages the same gradients.
# Whether it is also *faster* depends on the hardware: on a cluster each rank computes on its own
# GPU, and the side-by-side above shows how much of the communication overlap can hide.
#
# Next: the exercise `exercises/05_ddp_by_hand.ipynb`, where you write `average_gradients` and
# `BucketedDDP` yourself; lesson 06, on `nn.DataParallel`; and lesson 07, where PyTorch's
# `DistributedDataParallel` and `torchrun` take over.

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids
lesson_aids("05")
