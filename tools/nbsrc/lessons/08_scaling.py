# %% [markdown]
# # Lesson 08 — How far does data parallelism scale?
#
# We can now train one model on several workers. The question of this lesson is the one every
# team with a GPU budget asks: **if I buy twice the workers, do I get twice the speed?** And what
# happens at 64, 512 or 4096 GPUs, which none of us has on a laptop?
#
# We answer it the way engineers do: measure what we can here, build a small cost model from the
# measurements, check the model against this machine, and only then let it predict hardware we do
# not have. Along the way:
#
# 1. strong versus weak scaling, measured;
# 2. the all-reduce cost model (α-β), fitted here, and the compute-to-communication ratio;
# 3. the model checked against a real DDP step on this machine;
# 4. predictions for 8, 64, 512 and 4096 GPUs; ring versus tree; the best bucket size;
# 5. large batches: the learning rate must follow the batch;
# 6. one slow worker slows everyone;
# 7. an outlook: when memory, not speed, is the limit.
#
# **Read every number below as this machine's, produced by this run.** On a 2-core laptop two
# workers is the honest maximum; with more workers than cores the machine is *oversubscribed* and
# timings say more about the operating system's scheduler than about data parallelism.

# %%
import math
import os
import statistics
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from dpcourse import launch
from dpcourse.costmodel import AlphaBeta, fit_alpha_beta
from dpcourse.demo import Setting, add_speedups, plot_results, run_setting
from dpcourse.models import build_model, count_parameters

CORES = os.cpu_count() or 1
print(f"torch {torch.__version__}, {CORES} CPU core(s), CUDA: {torch.cuda.is_available()}")

# Knobs: turn these up on a bigger machine.
WORKERS = [1, 2]          # world sizes to measure (more than CORES is oversubscribed)
MODEL = "small"           # WideMLP size used for the timing runs: tiny, small, medium, large
BATCH = 128               # per-worker batch for weak scaling, global batch for strong scaling
STEPS = 10                # timed steps per run

# %% [markdown]
# ## 1. Strong and weak scaling, measured
#
# There are two ways to "add workers", and they answer different questions:
#
# * **Strong scaling** keeps the *global* batch fixed (here `BATCH`) and splits it: each of `p`
#   workers computes `BATCH / p` samples per step. The same training, hopefully faster. Ideal:
#   the step time falls as `1/p`.
# * **Weak scaling** keeps the *per-worker* batch fixed: the global batch grows to `p × BATCH`.
#   More samples per step in the same time, hopefully. Ideal: the step time stays flat.
#
# In both cases the gradient all-reduce moves the same number of bytes — the model's size — so
# strong scaling shrinks the compute while leaving the communication alone. Which one suffers first?
# Speedup is against the 1-worker run of the same kind; efficiency is speedup divided by workers.

# %%
runs = []
for scaling in ("strong", "weak"):
    for p in WORKERS:
        r = run_setting(Setting(p, MODEL, BATCH, "gloo", "ddp", scaling), steps=STEPS)
        runs.append(r)
        print(f"{scaling:6s} p={p}: {r.per_worker_batch():4d} samples/worker, step {r.step_ms:7.1f} ms, "
              f"{r.samples_per_s:8.0f} samples/s")
add_speedups(runs)
for r in runs:
    print(f"{r.scaling:6s} p={r.workers}: speedup {r.speedup:4.2f}x vs 1 worker, efficiency {100 * r.efficiency:3.0f} %")
plot_results(runs)
plt.show()

# %%
assert all(r.samples_per_s > 0 and math.isfinite(r.loss) for r in runs)
assert [r.per_worker_batch() for r in runs if r.scaling == "strong"] == [BATCH // p for p in WORKERS]

# %% [markdown]
# **What to look for.** Strong scaling halves each worker's compute but keeps the all-reduce, so
# on an idle machine its efficiency should fall below weak scaling's; part 3 measures why. On 2 CPU
# cores expect little speedup either way — the two workers share the cores with the notebook and
# with the all-reduce itself, and a busy machine can even reorder the two lines: trust what your
# run printed over what this paragraph expects. On GPUs (one per worker) weak scaling of a
# compute-heavy model comes close to `p`× the 1-worker throughput. The baseline here is one worker
# with one thread; one process with two threads is a stronger baseline on a 2-core machine (lesson 01).
#
# ## 2. The price of one all-reduce: the α-β model
#
# Lesson 04 modelled a message of `n` bytes as costing `α + n·β`: a fixed **latency** `α` and an
# inverse **bandwidth** `β`. A ring all-reduce over `p` ranks sends `2(p−1)` messages of `n/p`
# bytes one after another, so
#
# $$T_{\text{ring}}(n, p) = 2(p-1)\,\alpha + 2\tfrac{p-1}{p}\, n\,\beta .$$
#
# We time gloo's all-reduce over a range of sizes with 2 ranks and fit `α` and `β` to the times
# (with `dpcourse.costmodel.fit_alpha_beta`, written in lesson 04).

# %%
from dpcourse.bench.allreduce import measure

AR_SIZES = [1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]


def time_allreduce(sizes, repeats):
    return {n: statistics.median(measure(n, repeats, algorithms=("torch",))["torch"]) for n in sizes}


ar_times = launch(time_allreduce, 2, AR_SIZES, 5, timeout=120)[0]
cpu_net = fit_alpha_beta(("ring", n, 2, t) for n, t in ar_times.items())
print(f"fitted on this machine: alpha = {cpu_net.alpha * 1e6:.1f} µs, bandwidth 1/beta = {cpu_net.bandwidth / 1e9:.2f} GB/s")
for n, t in ar_times.items():
    print(f"  {n / 1024:8.0f} KB: measured {t * 1e3:8.3f} ms, model {cpu_net.predict('ring', n, 2) * 1e3:8.3f} ms")

sizes = np.logspace(10, 24.5, 40, base=2)
plt.figure(figsize=(6, 3.6))
plt.loglog(list(ar_times), list(ar_times.values()), "o", label="measured (gloo, 2 ranks)")
plt.loglog(sizes, [cpu_net.predict("ring", n, 2) for n in sizes], "-", label="alpha-beta fit")
plt.xlabel("all-reduce size (bytes)"); plt.ylabel("seconds"); plt.legend(); plt.grid(alpha=0.3)
plt.title("all-reduce time on this machine")
plt.show()

# %%
assert cpu_net.alpha >= 0 and cpu_net.beta > 0
assert max(ar_times.values()) > min(ar_times.values())  # bigger messages take longer

# %% [markdown]
# Small messages sit on the flat part of the curve (latency); large ones on the slope (bandwidth).
#
# ## 3. Compute-to-communication ratio
#
# A DDP step is compute (forward + backward + optimizer) plus the all-reduce of every gradient:
# `4 P` bytes for `P` float32 parameters. Their ratio decides everything: if compute is 10× the
# all-reduce, even no overlap at all costs only 9 % efficiency. We time one worker's compute here
# (1 thread, like each worker) and price the all-reduce with the fitted model.

# %%
def compute_seconds(model_name, batch, steps=STEPS):
    """Seconds of one forward+backward+SGD step of `model_name` on one thread, median of `steps`."""
    model = build_model(model_name, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, 256), torch.randint(0, 10, (batch,))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


threads = torch.get_num_threads()
torch.set_num_threads(1)
ratio_rows = []
for name in ("tiny", "small", "medium"):
    params = count_parameters(build_model(name))
    for batch in (32, 128, 512):
        t_c = compute_seconds(name, batch)
        t_ar = cpu_net.predict("ring", 4 * params, 2)
        ratio_rows.append((name, params, batch, t_c, t_ar))
torch.set_num_threads(threads)
print(f"{'model':7s} {'params':>9s} {'batch':>5s} {'compute ms':>10s} {'all-reduce ms':>13s} {'ratio':>6s}")
for name, params, batch, t_c, t_ar in ratio_rows:
    print(f"{name:7s} {params:9,d} {batch:5d} {t_c * 1e3:10.2f} {t_ar * 1e3:13.2f} {t_c / t_ar:6.2f}")
compute_ms = {(n, b): t for n, _, b, t, _ in ratio_rows}

# %%
for name in ("tiny", "small", "medium"):  # for a fixed model, the all-reduce does not depend on the batch
    t_ars = {round(t_ar, 12) for n, _, _, _, t_ar in ratio_rows if n == name}
    assert len(t_ars) == 1
assert compute_ms[("small", 512)] > compute_ms[("small", 32)]  # compute grows with the batch

# %% [markdown]
# **What to look for:** the ratio grows with the batch (compute grows, the all-reduce does not),
# and it hardly changes with the model size for these MLPs (both compute and gradient bytes are
# proportional to the parameter count). That is why strong scaling — smaller batches per worker —
# runs out of steam first.
#
# ## 4. Does the model predict this machine?
#
# Before trusting the model with 4096 GPUs, test it where we can. A 2-worker DDP step should take
# about `compute + all-reduce`: somewhat less if DDP hides part of the all-reduce behind the
# backward pass (it starts reducing a bucket as soon as its gradients exist), somewhat more if the
# two workers disturb each other. We compare the prediction with the weak-scaling run of part 1.

# %%
params = count_parameters(build_model(MODEL))
measured = next(r for r in runs if r.scaling == "weak" and r.workers == 2)
t_compute = compute_seconds(MODEL, BATCH) if (MODEL, BATCH) not in compute_ms else compute_ms[(MODEL, BATCH)]
t_comm = cpu_net.predict("ring", 4 * params, 2)
predicted = t_compute + t_comm
print(f"{MODEL}: {params:,} parameters, per-worker batch {BATCH}")
print(f"  compute {t_compute * 1e3:.1f} ms + all-reduce {t_comm * 1e3:.1f} ms = predicted step {predicted * 1e3:.1f} ms")
print(f"  measured 2-worker DDP step: {measured.step_ms:.1f} ms  (measured / predicted = {measured.step_ms / 1e3 / predicted:.2f})")

# %%
assert 0.2 < (measured.step_ms / 1e3) / predicted < 5, "the model is off by more than 5x: is the machine busy?"

# %% [markdown]
# A ratio near 1 means the two measured ingredients explain the step. Above 1, the workers slowed
# each other down (2 workers on 2 cores also share memory bandwidth with the all-reduce, and the
# notebook itself); below 1, overlap hid part of the communication. Either way, the *shape* of
# the model — compute grows with the batch, communication with the parameters — is what we carry
# to larger machines.
#
# ## 5. Predictions for 8, 64, 512 and 4096 GPUs
#
# Now we replace this machine's numbers with a GPU cluster's. Hardware figures (per GPU, one
# direction), from the vendors' data sheets:
#
# | link | bandwidth | source |
# |---|---|---|
# | NVLink 4 inside an 8-GPU H100 node | 900 GB/s total, i.e. 450 GB/s each way | NVIDIA H100 Tensor Core GPU datasheet (2023) |
# | InfiniBand NDR between nodes, one 400 Gb/s port per GPU | 50 GB/s | NVIDIA DGX H100 datasheet (8× ConnectX-7, 400 Gb/s); NVIDIA Quantum-2 InfiniBand platform |
# | H100 SXM dense BF16 compute | 989 TFLOP/s peak | NVIDIA H100 Tensor Core GPU datasheet (1,979 with sparsity) |
#
# The latencies `α` below are **our assumptions** (a few microseconds per step, typical of
# published NCCL measurements; they are knobs: change them). Inside one node a ring runs over
# NVLink; beyond 8 GPUs the ring crosses nodes, and the slowest link — InfiniBand — sets its pace.
# This is the flat-ring simplification; real libraries use hierarchical rings and trees (part 6).
#
# For compute we keep our measured model and scale its compute time by how much faster an H100 is
# than this CPU core, from this machine's measured FLOP rate (a step costs about 6 FLOPs per
# parameter per sample) and an assumed 40 % of peak on the GPU. The model is also a knob: a
# bigger per-GPU batch or a model with more FLOPs per parameter (a transformer over long
# sequences) raises the compute-to-communication ratio.

# %%
NVLINK = AlphaBeta(alpha=3e-6, beta=1 / 450e9)       # alpha assumed; bandwidth from the H100 datasheet
INFINIBAND = AlphaBeta(alpha=6e-6, beta=1 / 50e9)     # alpha assumed; 400 Gb/s NDR per GPU
GPU_PEAK, MFU = 989e12, 0.40                          # H100 dense BF16 peak; fraction of it achieved
GPU_COUNTS = [8, 64, 512, 4096]
GRAD_BYTES_PER_PARAM = 2                              # bf16 gradients

cpu_flops = 6 * params * BATCH / t_compute
print(f"this machine: {cpu_flops / 1e9:.1f} GFLOP/s per core on {MODEL} (6 FLOPs per parameter per sample)")


def network(p):
    return NVLINK if p <= 8 else INFINIBAND


def ring_time(net, nbytes, p):
    return net.predict("ring", nbytes, p)


def step_prediction(p, per_gpu_batch, n_params, flops_per_s):
    t_c = 6 * n_params * per_gpu_batch / flops_per_s
    t_ar = ring_time(network(p), GRAD_BYTES_PER_PARAM * n_params, p)
    return t_c, t_ar, t_c / (t_c + t_ar)   # efficiency with no overlap (a lower bound)


scenarios = {
    f"{MODEL} ({params / 1e6:.1f} M), B=128/GPU": (params, 128),
    f"{MODEL}, B=4096/GPU": (params, 4096),
    "1 B params, B=64x2048 tokens/GPU": (1e9, 64 * 2048),   # a language model: every token is a sample
}
fig, ax = plt.subplots(figsize=(6.4, 3.8))
for label, (n_params, batch) in scenarios.items():
    effs = []
    for p in GPU_COUNTS:
        t_c, t_ar, eff = step_prediction(p, batch, n_params, GPU_PEAK * MFU)
        effs.append(100 * eff)
        print(f"{label:34s} p={p:5d}: compute {t_c * 1e3:9.3f} ms, all-reduce {t_ar * 1e3:9.3f} ms, "
              f"step {1e3 * (t_c + t_ar):9.3f} ms, efficiency {100 * eff:5.1f} %")
    ax.plot(GPU_COUNTS, effs, "o-", label=label)
ax.set_xscale("log", base=2); ax.set_xticks(GPU_COUNTS, [str(p) for p in GPU_COUNTS])
ax.set(xlabel="GPUs (weak scaling)", ylabel="predicted efficiency, no overlap (%)", ylim=(0, 105))
ax.grid(alpha=0.3); ax.legend(fontsize=8); ax.set_title("alpha-beta + compute model, H100 + NDR")
plt.show()

# %%
t8 = step_prediction(8, 128, params, GPU_PEAK * MFU)[1]
t64 = step_prediction(64, 128, params, GPU_PEAK * MFU)[1]
assert t64 > t8                      # leaving the node costs: InfiniBand is slower than NVLink
assert step_prediction(4096, 64 * 2048, 1e9, GPU_PEAK * MFU)[2] > step_prediction(4096, 128, params, GPU_PEAK * MFU)[2]

# %% [markdown]
# **Reading the plot.** Three things decide efficiency: the jump at the node boundary (NVLink →
# InfiniBand), the slow decline with `p` from the ring's latency term `2(p−1)α`, and — far the
# biggest — the compute per GPU. Our small MLP at batch 128 finishes its compute on an H100 in
# microseconds, so communication dominates it; the same GPUs training a language model with
# thousands of tokens per GPU per step spend most of their time computing. This is why large
# data-parallel jobs train large models with large per-GPU batches — which brings us to the
# learning rate (part 7). Overlap (DDP's buckets) would raise every line further; we model it next.
#
# ## 6. Ring or tree? And how big should a bucket be?
#
# A **tree** all-reduce (reduce up a binary tree, broadcast back down) has only `2·log₂p` steps,
# but each step carries the whole message:
# $T_{\text{tree}} \approx 2\lceil\log_2 p\rceil\,(\alpha + n\beta)$. The ring has `2(p−1)`
# steps of `n/p` bytes. For small messages and many GPUs the tree's few steps win; for large
# messages the ring's smaller pieces win. (NCCL's "double binary tree" pipelines the message so
# its bandwidth term is closer to the ring's; this simple tree shows the crossover idea.)

# %%
def tree_time(net, nbytes, p):
    steps = 2 * math.ceil(math.log2(p))
    return steps * (net.alpha + nbytes * net.beta)


def crossover_bytes(net, p):
    """The message size where ring and tree take the same time (tree faster below it)."""
    lo, hi = 1.0, 1e13
    for _ in range(200):  # bisection on a log scale
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if tree_time(net, mid, p) < ring_time(net, mid, p) else (lo, mid)
    return lo


msg = np.logspace(3, 10, 60)
fig, ax = plt.subplots(figsize=(6.4, 3.6))
for p in (64, 4096):
    ax.loglog(msg, [ring_time(INFINIBAND, n, p) for n in msg], "-", label=f"ring, p={p}")
    ax.loglog(msg, [tree_time(INFINIBAND, n, p) for n in msg], "--", label=f"tree, p={p}")
ax.set(xlabel="message (bytes)", ylabel="seconds", title="all-reduce over InfiniBand (model)")
ax.grid(alpha=0.3); ax.legend()
plt.show()
for p in GPU_COUNTS:
    print(f"p={p:5d}: tree is faster below {crossover_bytes(network(p), p) / 1e6:9.3f} MB")

# %%
assert crossover_bytes(INFINIBAND, 4096) > crossover_bytes(INFINIBAND, 64)  # trees matter more at scale

# %% [markdown]
# **Buckets.** DDP does not wait for the whole backward pass: it groups gradients into buckets
# and all-reduces each bucket as soon as it is complete, while backward goes on. Tiny buckets pay
# `α` many times; one huge bucket can only start when backward is over, so nothing overlaps. In
# between is a best size. A small simulation: gradients appear at a steady rate during a backward
# pass of `t_b` seconds; the network sends buckets one after another; what counts is how long the
# step waits after backward ends.

# %%
def exposed_comm(bucket_bytes, total_bytes, t_backward, cost):
    """Seconds of communication left after the backward pass, with buckets sent as they fill."""
    k = max(1, math.ceil(total_bytes / bucket_bytes))
    free = 0.0
    for i in range(k):
        ready = t_backward * (i + 1) / k
        size = min(bucket_bytes, total_bytes - i * bucket_bytes)
        free = max(free, ready) + cost(size)
    return free - t_backward


buckets = np.logspace(4, 9, 41)
cases = {
    f"this machine, {MODEL}, 2 ranks": (4 * params, 2 / 3 * t_compute, lambda n: ring_time(cpu_net, n, 2)),
    "1 B params on 512 H100s": (2e9, 2 / 3 * 6 * 1e9 * 64 * 2048 / (GPU_PEAK * MFU), lambda n: ring_time(INFINIBAND, n, 512)),
}
fig, ax = plt.subplots(figsize=(6.4, 3.6))
best = {}
for label, (total, t_b, cost) in cases.items():
    waits = [exposed_comm(b, total, t_b, cost) for b in buckets]
    best[label] = buckets[int(np.argmin(waits))]
    ax.loglog(buckets, [max(w, 1e-6) * 1e3 for w in waits], label=label)
    print(f"{label}: best bucket about {best[label] / 1e6:.2f} MB, exposed communication "
          f"{min(waits) * 1e3:.2f} ms (one bucket: {waits[-1] * 1e3:.2f} ms)")
ax.axvline(25e6, color="k", ls=":", lw=1, label="DDP default 25 MB")
ax.set(xlabel="bucket size (bytes)", ylabel="communication after backward (ms)")
ax.grid(alpha=0.3); ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# And on this machine, for real: torch DDP's `bucket_cap_mb` with 2 workers. On 2 CPU cores the
# "network" is the same cores that compute, so overlap helps less than on GPUs, where the copy
# engines and NVLink work while the GPU computes. Compare the measured shape with the model's.

# %%
def ddp_steps(model_name, batch, bucket_mb, steps):
    import torch.distributed as dist
    net = torch.nn.parallel.DistributedDataParallel(build_model(model_name, seed=0), bucket_cap_mb=bucket_mb)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(batch, 256), torch.randint(0, 10, (batch,))
    times = []
    for i in range(steps + 2):
        dist.barrier()
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


BUCKETS_MB = [0.05, 0.5, 2, 25]
bucket_ms = {}
for mb in BUCKETS_MB:
    bucket_ms[mb] = 1e3 * max(launch(ddp_steps, 2, MODEL, BATCH, mb, STEPS, timeout=120))
    print(f"bucket_cap_mb={mb:5}: step {bucket_ms[mb]:7.1f} ms")
print(f"gradients: {4 * params / 1e6:.1f} MB in all; fastest measured: {min(bucket_ms, key=bucket_ms.get)} MB")

# %%
assert all(v > 0 for v in bucket_ms.values())

# %% [markdown]
# The default of 25 MB (Li et al., 2020) is a compromise for typical GPU clusters; the model says
# the best size grows with `α / β` (the message size at which latency and bandwidth cost the same)
# and with the gap between backward time and communication time.
#
# ## 7. Large batches: the learning rate must follow
#
# Weak scaling grows the global batch: 512 GPUs × 64 samples is a batch of 32,768. With the
# same number of epochs, a `k`-times larger batch takes `k`-times fewer steps, and with the same
# learning rate each step moves the weights no further — so training falls behind. The **linear
# scaling rule** multiplies the learning rate by `k`; a **warmup** raises it gradually over the
# first steps, when large steps are most harmful (Goyal et al., 2017).
#
# We measure it on the digits. Data-parallel SGD with averaged gradients computes exactly the
# gradient of the global batch (lesson 05), so one process with the global batch stands in for
# `p` workers here — the accuracy is what the distributed run would reach, without the waiting.

# %%
from dpcourse.data import digits_split

train_set, test_set = digits_split()
xtr, ytr = train_set.tensors
xte, yte = test_set.tensors
EPOCHS, BASE_LR, BASE_BATCH, WARMUP_EPOCHS = 12, 0.03, 32, 2
torch.set_num_threads(1)  # a tiny model: one thread is faster than two fighting over it
GLOBAL_BATCHES = [32, 128, 512, 1024]


def train_digits(global_batch, lr, warmup_epochs):
    torch.manual_seed(0)
    model = build_model("digits-mlp", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    steps_per_epoch = math.ceil(len(ytr) / global_batch)
    warmup_steps = warmup_epochs * steps_per_epoch
    g = torch.Generator().manual_seed(0)
    step = 0
    for epoch in range(EPOCHS):
        order = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(ytr), global_batch):
            if warmup_steps:
                for group in opt.param_groups:
                    group["lr"] = lr * min(1.0, (step + 1) / warmup_steps)
            idx = order[i:i + global_batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            step += 1
    with torch.no_grad():
        return (model(xte).argmax(1) == yte).float().mean().item(), step


recipes = {
    "same LR": lambda b: (BASE_LR, 0),
    "linear scaling, no warmup": lambda b: (BASE_LR * b / BASE_BATCH, 0),
    "linear scaling + warmup": lambda b: (BASE_LR * b / BASE_BATCH, WARMUP_EPOCHS),
}
acc = {name: [] for name in recipes}
for b in GLOBAL_BATCHES:
    for name, recipe in recipes.items():
        lr, warm = recipe(b)
        a, steps = train_digits(b, lr, warm)
        acc[name].append(100 * a)
    print(f"global batch {b:5d} ({steps:4d} steps): " + ", ".join(f"{n} {acc[n][-1]:5.1f} %" for n in recipes))
torch.set_num_threads(threads)

fig, ax = plt.subplots(figsize=(6.4, 3.6))
for name, values in acc.items():
    ax.plot(GLOBAL_BATCHES, values, "o-", label=name)
ax.set_xscale("log", base=2); ax.set_xticks(GLOBAL_BATCHES, [str(b) for b in GLOBAL_BATCHES])
ax.set(xlabel="global batch", ylabel="test accuracy (%)", title=f"digits, {EPOCHS} epochs")
ax.grid(alpha=0.3); ax.legend()
plt.show()

# %%
assert acc["linear scaling + warmup"][-1] > acc["same LR"][-1]  # at the largest batch the rule pays off

# %% [markdown]
# **What to look for:** with the same learning rate the accuracy falls as the batch grows (fewer
# steps, same step length). Scaling the rate recovers much of it; whether the warmup adds to that
# depends on how large the scaled rate is — on this small problem the difference may be small, on
# ImageNet-sized problems it decides whether training diverges in its first epochs. Beyond some
# batch, no learning-rate rule keeps up: each step cannot use more than so much information.
#
# ## 8. One slow worker
#
# Every DDP step ends in an all-reduce, and an all-reduce finishes only when every rank has
# contributed. So what happens to the fast ranks when one rank is slow — a busier machine, a
# throttled GPU, a noisy neighbour? We slow rank 1 down by `SLOW_MS` per step and time every rank.

# %%
SLOW_MS = 50


def step_times(slow_rank, slow_ms, steps):
    import torch.distributed as dist
    rank = dist.get_rank()
    net = torch.nn.parallel.DistributedDataParallel(build_model("tiny", seed=0))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        if rank == slow_rank:
            time.sleep(slow_ms / 1e3)   # stands in for a slower forward pass
        loss.backward()                 # the all-reduce inside waits for every rank
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[2:])


even = launch(step_times, 2, -1, 0, STEPS, timeout=60)
straggle = launch(step_times, 2, 1, SLOW_MS, STEPS, timeout=60)
for r in range(2):
    print(f"rank {r}: {even[r]:6.1f} ms per step when all are equal, {straggle[r]:6.1f} ms with rank 1 slowed by {SLOW_MS} ms")
plt.figure(figsize=(5, 3))
plt.bar(np.arange(2) - 0.2, even, 0.4, label="all ranks equal")
plt.bar(np.arange(2) + 0.2, straggle, 0.4, label=f"rank 1 slowed by {SLOW_MS} ms")
plt.xticks([0, 1], ["rank 0", "rank 1 (slow)"]); plt.ylabel("ms per step"); plt.legend()
plt.show()

# %%
# Rank 0 sleeps nowhere, yet each of its steps must last as long as rank 1's (which sleeps SLOW_MS):
assert straggle[0] > 0.8 * SLOW_MS, "rank 0 should have waited for rank 1"

# %% [markdown]
# Rank 0 did nothing slower, yet its steps became as long as rank 1's: it spent the difference
# waiting inside the all-reduce. With thousands of GPUs the chance that *some* rank is slow in a
# given step grows, and the step time is the *maximum* over ranks — large jobs monitor per-rank
# step times and replace slow nodes for that reason.
#
# ## 9. Outlook: when memory is the limit — ZeRO and FSDP
#
# Data parallelism keeps a full copy of the model on every rank. For training with Adam in mixed
# precision, each parameter costs about 16 bytes per rank: 2 (bf16 weights) + 2 (bf16 gradients)
# + 12 (fp32 master weights and two Adam moments) (Rajbhandari et al., 2020). **ZeRO** shards
# these over the `N` data-parallel ranks in three stages — optimizer state, then gradients, then
# the parameters themselves — and PyTorch's **FSDP** (Zhao et al., 2023) implements the last stage:
# each rank all-gathers a layer's parameters just before using it and reduce-scatters its
# gradients afterwards. The per-rank memory, from the formulas of the ZeRO paper:

# %%
# NBVAL_CHECK_OUTPUT
def memory_gb(n_params, ranks):
    return {
        "DDP (replicated)": 16 * n_params,
        "ZeRO-1 (optimizer sharded)": 4 * n_params + 12 * n_params / ranks,
        "ZeRO-2 (+ gradients)": 2 * n_params + 14 * n_params / ranks,
        "ZeRO-3 / FSDP (+ parameters)": 16 * n_params / ranks,
    }


for n_params in (1e9, 70e9):
    print(f"{n_params / 1e9:.0f} B parameters on 64 ranks:")
    for name, nbytes in memory_gb(n_params, 64).items():
        print(f"  {name:30s} {nbytes / 1e9:8.1f} GB per rank")

# %% [markdown]
# A 70 B-parameter model does not fit on one 80 GB GPU with plain data parallelism; sharded over
# 64 ranks it does. The price is more communication — an all-gather per layer in forward and in
# backward — which the α-β model of this lesson prices just as well. That is the next course.
#
# **Sources.** NVIDIA, *H100 Tensor Core GPU datasheet* (NVLink 900 GB/s, BF16 989 TFLOP/s dense);
# NVIDIA, *DGX H100 datasheet* (8× ConnectX-7 400 Gb/s InfiniBand) and *Quantum-2 InfiniBand
# platform* (NDR 400 Gb/s); R. Thakur, R. Rabenseifner, W. Gropp, "Optimization of Collective
# Communication Operations in MPICH", IJHPCA 2005 (α-β costs of ring and tree); P. Patarasuk,
# X. Yuan, "Bandwidth optimal all-reduce algorithms for clusters of workstations", JPDC 2009;
# S. Jeaugey, "Massively Scale Your Deep Learning Training with NCCL 2.4", NVIDIA blog 2019
# (double binary trees); S. Li et al., "PyTorch Distributed: Experiences on Accelerating Data
# Parallel Training", VLDB 2020 (buckets, 25 MB); P. Goyal et al., "Accurate, Large Minibatch SGD:
# Training ImageNet in 1 Hour", 2017 (linear scaling, warmup); S. Rajbhandari et al., "ZeRO: Memory
# Optimizations Toward Training Trillion Parameter Models", SC 2020; Y. Zhao et al., "PyTorch FSDP:
# Experiences on Scaling Fully Sharded Data Parallel", VLDB 2023.
#
# ## Try it live: the scaling dashboard
#
# In a live notebook this shows controls for workers, model size, batch, backend and algorithm;
# press **Run** to train at each worker count and watch the plots fill in. Run headless, it draws
# one static figure of the defaults. (`dpcourse demo` does the same from a terminal.)

# %%
# NBVAL_IGNORE_OUTPUT
from dpcourse.dashboard import dashboard

dashboard(workers=(1, 2), model="tiny", steps=5, out=None);

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids
lesson_aids("08")
