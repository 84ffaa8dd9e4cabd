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
# * strong versus weak scaling, measured;
# * real speedups, each named by its baseline: 2 ranks against one process with 1 and 2 threads;
# * the all-reduce cost model (α-β), fitted here, and the compute-to-communication ratio;
# * the model checked against a real DDP step on this machine;
# * the model checked against a simulated link whose α and β we set, at 2 and 4 ranks;
# * predictions for 8, 64, 512 and 4096 GPUs; ring versus tree; the best bucket size;
# * large batches: the learning rate must follow the batch;
# * one slow worker: measured on a simulated link with a straggler, against a prediction;
# * an outlook: when memory, not speed, is the limit.
#
# **Read every number below as this machine's, produced by this run.** On a 2-core laptop two
# workers is the honest maximum; with more workers than cores the machine is *oversubscribed* and
# timings say more about the operating system's scheduler than about data parallelism. Timings on
# a machine shared with other programs are noisy: the next cell says whether the load average
# suggests that, and every comparison below is printed from this run's numbers.

# %%
import math
import os
import statistics
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from dpcourse import Link, launch, links
from dpcourse.costmodel import AlphaBeta, fit_alpha_beta
from dpcourse.demo import SINGLE, Setting, add_speedups, busy_warning, plot_results, run_setting, run_settings
from dpcourse.models import build_model, count_parameters

CORES = os.cpu_count() or 1
print(f"torch {torch.__version__}, {CORES} CPU core(s), CUDA: {torch.cuda.is_available()}")
print(busy_warning() or f"load average {os.getloadavg()[0]:.2f} on {CORES} cores: the machine looks quiet")

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
eff = {r.scaling: r.efficiency for r in runs if r.workers == max(WORKERS)}
print(f"at {max(WORKERS)} workers: strong scaling {100 * eff['strong']:.0f} % efficient, weak scaling "
      f"{100 * eff['weak']:.0f} % — " + ("the two were within 5 points of each other here"
                                         if abs(eff["strong"] - eff["weak"]) < 0.05 else
                                         "strong scaling suffered more, as the argument above expects"
                                         if eff["strong"] < eff["weak"] else
                                         "this run reversed the expected order: noise from a busy machine can do that"))

# %% [markdown]
# **What to look for.** Strong scaling halves each worker's compute but keeps the all-reduce, so
# its efficiency is expected to fall below weak scaling's; part 4 measures why, and the line above
# says what this run found. On 2 CPU cores the two workers share the cores with the notebook and
# with the all-reduce itself. The baseline of this plot is one worker (one rank of DDP) with one
# thread. A plain single process, with one thread or with two, is the fairer rival: part 2
# measures both.
#
# ## 2. Real speedups, each with its baseline
#
# A speedup means nothing until we say *faster than what*. On this machine two
# single-process rivals exist: one process with **one** intra-op thread, and one process with
# **two** — torch splits every large matrix product over its intra-op threads (OpenMP), so a
# single process already uses both cores. We take a compute-bound setting (the `small` MLP at 512
# samples per rank; part 4 prints how its compute compares with its all-reduce) and measure, three
# times each in interleaved rounds, 2 ranks × 1 thread against both.

# %%
REAL_MODEL, REAL_BATCH, REAL_REPEATS = "small", 512, 3
rivals = [Setting(1, REAL_MODEL, REAL_BATCH, "-", SINGLE, "weak", t) for t in sorted({1, 2, CORES})]
real = run_settings(rivals + [Setting(2, REAL_MODEL, REAL_BATCH)], steps=4, warmup=2, repeats=REAL_REPEATS)
by = {(r.algorithm, r.workers, r.threads): r for r in real}
one, two, dp2 = by[(SINGLE, 1, 1)], by[(SINGLE, 1, 2)], by[("ddp", 2, 1)]
for r in real:
    print(f"{r.describe():22s} {r.samples_per_s:8,.0f} samples/s  (min-max of {r.repeats}: "
          f"{r.samples_per_s_min:,.0f}-{r.samples_per_s_max:,.0f})")
vs_one, vs_two = dp2.samples_per_s / one.samples_per_s, dp2.samples_per_s / two.samples_per_s
print(f"2 ranks x 1 thread vs 1 process x 1 thread : {vs_one:.2f}x")
print(f"2 ranks x 1 thread vs 1 process x 2 threads: {vs_two:.2f}x")
print(f"1 process x 2 threads vs 1 process x 1 thread: {two.samples_per_s / one.samples_per_s:.2f}x")

fig, ax = plt.subplots(figsize=(6.4, 3.4))
names = [r.describe() for r in real]
medians = [r.samples_per_s / one.samples_per_s for r in real]
spread = [[m - r.samples_per_s_min / one.samples_per_s for m, r in zip(medians, real)],
          [r.samples_per_s_max / one.samples_per_s - m for m, r in zip(medians, real)]]
ax.bar(names, medians, yerr=spread, capsize=4, color=["tab:gray"] * len(rivals) + ["tab:blue"])
ax.axhline(1, color="k", lw=0.8)
ax.set(ylabel="throughput vs 1 process x 1 thread", ylim=(0, 1.25 * max(r.samples_per_s_max for r in real) / one.samples_per_s),
       title=f"{REAL_MODEL} MLP, {REAL_BATCH} samples per process; bars: median, whiskers: min-max of {REAL_REPEATS}")
ax.title.set_fontsize(9)
plt.show()

# %%
assert all(r.samples_per_s > 0 and r.repeats == REAL_REPEATS for r in real)


def verdict(ratio, better, worse, even="broke even"):
    return better if ratio > 1.05 else worse if ratio < 0.95 else f"{even} (within 5 %)"


print(f"Against one thread, data parallelism {verdict(vs_one, 'paid off', 'did not pay off')} ({vs_one:.2f}x); "
      f"against one process using both cores with its threads it {verdict(vs_two, 'won', 'lost', 'tied')} "
      f"({vs_two:.2f}x).")
if two.samples_per_s < one.samples_per_s:
    print(f"Here two threads ran slower than one ({two.samples_per_s / one.samples_per_s:.2f}x): the sign of a "
          "core taken by another program (see the paragraph below).")

# %% [markdown]
# **Why, on an idle machine, two threads are the hard rival.** A CPU's cores are one pool. One
# process with two intra-op threads already spreads each big matrix product over both cores, and
# it pays for no all-reduce. Two ranks with one thread each use the same two cores. Against that
# process they win only where its threads leave a core idle: in small operations that are not
# worth splitting, the Python between operations, and the optimizer. They lose the time their
# all-reduce takes. So on an idle CPU, data parallelism can beat one thread, but against two
# threads it can at best come close: adding ranks moves the same compute around.
#
# On a *busy* machine the order can change, and the lines above tell which happened here. The two
# threads of one operation meet at the end of every operation, hundreds of times per step; when
# another program holds one core, the thread there runs late and its sibling waits for it. Two
# ranks meet only in the all-reduce, once or twice per step. That is part 10's straggler in
# miniature, and why the demo warns when the load average is high.
#
# **Why a GPU per rank changes the picture.** On a cluster every rank brings its *own* device. A
# second GPU adds a second GPU's worth of FLOPs instead of sharing a fixed pool, so the ideal is
# `p`× and only the communication stands between a run and it. That is why the rest of this lesson
# models the link. Part 6 runs ranks on a simulated link, and the demo (`dpcourse demo --cluster
# A100 --network 25GbE`, or the dashboard at the end) runs them on a link slowed down as much as this
# CPU is slower than the GPU it stands for.
#
# ## 3. The price of one all-reduce: the α-β model
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
# ## 4. Compute-to-communication ratio
#
# A DDP step is compute (forward + backward + optimizer) plus the all-reduce of every gradient:
# `4 P` bytes for `P` float32 parameters. Their ratio decides everything: if compute is 10× the
# all-reduce, even no overlap at all costs only 9 % efficiency. We time one worker's compute here
# (1 thread, like each worker) and price the all-reduce with the fitted model.

# %%
def median_step_seconds(model, batch, steps, before_step=lambda: None):
    """Median seconds of a forward+backward+SGD step of `model`, after 2 warm-up steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, 256), torch.randint(0, 10, (batch,))
    times = []
    for i in range(steps + 2):
        before_step()
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def compute_seconds(model_name, batch, steps=5):
    """Seconds of one step of `model_name` on one thread, median of `steps`."""
    return median_step_seconds(build_model(model_name, seed=0), batch, steps)


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
for name in ("tiny", "small", "medium"):
    ratios = [t_c / t_ar for n, _, _, t_c, t_ar in ratio_rows if n == name]
    print(f"{name:6s}: ratio {ratios[0]:.2f} at batch 32 -> {ratios[-1]:.2f} at batch 512 "
          f"({ratios[-1] / ratios[0]:.1f}x: the batch grew 16x, the all-reduce not at all)")

# %% [markdown]
# **What to look for:** for a fixed model the all-reduce is the same at every batch, so the ratio
# follows the compute, which grows with the batch (the lines above print by how much; ideally
# 16-fold, but a CPU runs small and large matrix products at different speeds, and a busy machine
# adds noise). Across models, compute and gradient bytes both grow with the parameter count, so to
# first order the ratio depends on the batch, not on the model's size; the table shows how far this
# machine departs from that first-order picture. That is why strong scaling — smaller batches per
# worker — runs out of steam first.
#
# ## 5. Does the model predict this machine?
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
assert 0.2 < (measured.step_ms / 1e3) / predicted < 10, "the model is off by more than 10x: is the machine busy?"

# %% [markdown]
# A ratio near 1 means the two measured ingredients explain the step. Above 1, the workers slowed
# each other down (2 workers on 2 cores also share memory bandwidth with the all-reduce, and the
# notebook itself); below 1, overlap hid part of the communication. Either way, the *shape* of
# the model — compute grows with the batch, communication with the parameters — is what we carry
# to larger machines.
#
# ## 6. The model on a link whose α and β we set: 2 and 4 ranks
#
# On loopback TCP, α and β are whatever the operating system gives us, and they move with the
# load. `dpcourse.launch(..., network=Link(latency, bandwidth))` runs the same gloo all-reduce on a
# *simulated* link instead: every message completes no earlier than `latency + bytes / bandwidth`,
# on a link that carries one transfer at a time, and waiting costs no CPU. Here we know α and β
# exactly, so we can ask the sharper question: does the ring formula predict the time at 2 **and**
# at 4 ranks on the same link? (4 ranks on 2 cores share the cores, but a rank waiting for the link
# uses no CPU, so the waiting is still charged as the link says.)

# %%
SIM_LINK = Link(latency=1e-3, bandwidth=50e6, name="a 1 ms, 50 MB/s link we set")
sim_model = AlphaBeta(alpha=SIM_LINK.latency, beta=1 / SIM_LINK.bandwidth)
SIM_SIZES, SIM_RANKS = [256 << 10, 1 << 20, 4 << 20], [2, 4]


def time_on_link(sizes, repeats):
    import torch.distributed as dist
    out = {}
    for n in sizes:
        t = torch.ones(n // 4)
        dist.all_reduce(t)  # warm-up: connections and buffers
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - start)
        out[n] = statistics.median(times)
    return out


sim_times = {p: launch(time_on_link, p, SIM_SIZES, 5, network=SIM_LINK, timeout=120)[0] for p in SIM_RANKS}
sim_errors = {}
print(f"{'ranks':>5s} {'size':>7s} {'predicted':>10s} {'measured':>10s} {'error':>7s}")
for p in SIM_RANKS:
    for n in SIM_SIZES:
        pred, got = sim_model.predict("ring", n, p), sim_times[p][n]
        sim_errors[(p, n)] = got / pred - 1
        print(f"{p:5d} {n / 2**20:5.2f}MB {pred * 1e3:8.1f}ms {got * 1e3:8.1f}ms {100 * sim_errors[(p, n)]:+6.1f}%")
worst = max(sim_errors, key=lambda k: abs(sim_errors[k]))
gloo_errors = [abs(t / cpu_net.predict("ring", n, 2) - 1) for n, t in ar_times.items()]
print(f"on {SIM_LINK}: the ring formula was off by at most {100 * abs(sim_errors[worst]):.1f} % "
      f"({worst[0]} ranks, {worst[1] / 2**20:.2f} MB); on plain gloo (part 3, 2 ranks) the fitted model was off "
      f"by up to {100 * max(gloo_errors):.0f} %")

fig, ax = plt.subplots(figsize=(6.4, 3.6))
for p, style in zip(SIM_RANKS, ("o", "s")):
    line, = ax.loglog(SIM_SIZES, [sim_times[p][n] for n in SIM_SIZES], style, label=f"measured, {p} ranks")
    grid = np.logspace(np.log10(SIM_SIZES[0]) - 0.3, np.log10(SIM_SIZES[-1]) + 0.3, 30)
    ax.loglog(grid, [sim_model.predict("ring", n, p) for n in grid], "-", color=line.get_color(),
              label=f"α-β ring prediction, {p} ranks")
ax.set(xlabel="all-reduce size (bytes)", ylabel="seconds", title=f"{SIM_LINK.name}: prediction against run")
ax.grid(alpha=0.3); ax.legend(fontsize=8)
plt.show()

# %%
# The link never delivers early: every run takes at least what the formula charges.
assert all(sim_times[p][n] >= 0.98 * sim_model.predict("ring", n, p) for p in SIM_RANKS for n in SIM_SIZES)
big = SIM_SIZES[-1]
assert sim_times[4][big] > sim_times[2][big]  # 4 ranks send more messages and more bytes each

# %% [markdown]
# The prediction charges `2(p−1)` messages and `2(p−1)/p` of the tensor per rank: going from 2 to 4
# ranks adds four latencies and half the tensor again. A measured time can only be *above* the
# prediction: the simulation starts a transfer's clock when the rank issues it, and what gloo and
# Python do beyond that, or a timer thread that wakes late on a busy machine, comes on top. The error
# printed above is that overhead; on plain gloo the "link" itself (the kernel's loopback and the
# CPU that copies the bytes) was what moved.
#
# ## 7. Predictions for 8, 64, 512 and 4096 GPUs
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
# This is the flat-ring simplification; real libraries use hierarchical rings and trees (part 8).
#
# For compute we count a step's floating-point operations (about 6 per parameter per sample:
# forward, and twice that backward) and divide by the H100's peak at an assumed 40 % of it; the
# cell also prints this CPU core's measured rate for comparison. The model is also a knob: a
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
# learning rate (part 9). Overlap (DDP's buckets) would raise every line further; we model it next.
#
# ## 8. Ring or tree? And how big should a bucket be?
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
# And on this machine, for real: torch DDP's `bucket_cap_mb` with 2 workers on loopback gloo. Here
# the "network" is the same two cores that compute: a bucket sent early competes with the backward
# pass for a core instead of running beside it, as it would on a GPU whose copy engines and NVLink
# work while it computes. So do not expect the measured times to follow the model's curve; lesson
# 05 sweeps bucket sizes on a simulated link, where waiting for the wire costs no CPU.

# %%
def ddp_steps(model_name, batch, bucket_mb, steps):
    import torch.distributed as dist
    net = torch.nn.parallel.DistributedDataParallel(build_model(model_name, seed=0), bucket_cap_mb=bucket_mb)
    return median_step_seconds(net, batch, steps, before_step=dist.barrier)  # both ranks start each step together


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
# ## 9. Large batches: the learning rate must follow
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
same, scaled, warm = (acc[k] for k in recipes)
print(f"same LR: {same[0]:.1f} % at batch {GLOBAL_BATCHES[0]} -> {same[-1]:.1f} % at batch {GLOBAL_BATCHES[-1]}; "
      f"at batch {GLOBAL_BATCHES[-1]} linear scaling gives {scaled[-1]:.1f} %, with warmup {warm[-1]:.1f} % "
      f"(warmup {'added' if warm[-1] > scaled[-1] else 'did not add'} {abs(warm[-1] - scaled[-1]):.1f} points)")

# %% [markdown]
# **What to look for** (the line above prints it): with the same learning rate, a larger batch
# means fewer steps of the same length, so training falls behind; the assertion checks that the
# linear scaling rule with warmup beats it at the largest batch. Whether the warmup adds to plain
# linear scaling depends on how large the scaled rate is: on this small problem the line above
# prints the difference, on ImageNet-sized problems it decides whether training diverges in its
# first epochs. Beyond some batch, no learning-rate rule keeps up: each step cannot use more than
# so much information.
#
# ## 10. One slow worker
#
# Every DDP step ends in an all-reduce, and an all-reduce finishes only when every rank has
# contributed. So what happens to the fast ranks when one rank is slow — a throttled GPU, a
# busier node, a noisy neighbour? The prediction is one line: **the group goes at the pace of the
# slowest rank**. If rank 1 computes `FACTOR` times slower, every rank's step should take
#
# $$t_{\text{straggler}} \approx t_{\text{even}} + (\text{FACTOR} - 1)\, t_{\text{compute}},$$
#
# where `t_even` is the step when all ranks are equal and `t_compute` a rank's computation alone.
# `Link.with_straggler(rank, factor)` makes the slow rank: before each collective it sleeps
# `factor − 1` times as long as it computed since the last one. A sleep costs no CPU, so the other
# rank keeps its core, as on a cluster where the slow GPU is someone else's.

# %%
FACTOR = 4
STRAGGLE_LINK = links()["10GbE"]


def straggle_steps(steps):
    x, y = torch.randn(BATCH, 256), torch.randint(0, 10, (BATCH,))

    def timed(step):
        """Median wall-clock ms of `step`, and the median CPU ms this thread spent in it."""
        wall, cpu = [], []
        for i in range(steps + 2):
            start, cpu_start = time.perf_counter(), time.thread_time()
            step()
            wall.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - cpu_start)
        return 1e3 * statistics.median(wall[2:]), 1e3 * statistics.median(cpu[2:])

    net = torch.nn.parallel.DistributedDataParallel(build_model(MODEL, seed=0))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def ddp_step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()  # the all-reduce inside waits for every rank
        opt.step()

    model = build_model(MODEL, seed=0)
    plain_opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def compute_only():  # the same work with no communication at all: this rank's own pace
        plain_opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        plain_opt.step()

    step_ms, cpu_ms = timed(ddp_step)
    # last: a straggler slows only what precedes a collective, and this part has none
    return {"step_ms": step_ms, "cpu_ms": cpu_ms, "compute_ms": timed(compute_only)[0]}


even = launch(straggle_steps, 2, STEPS, network=STRAGGLE_LINK, timeout=120)
slowed = launch(straggle_steps, 2, STEPS, network=STRAGGLE_LINK.with_straggler(1, FACTOR), timeout=120)
t_even = max(r["step_ms"] for r in even)
# computation alone is never slowed (it sends nothing): the median of all four measurements
t_compute = statistics.median(r["compute_ms"] for r in even + slowed)
predicted = t_even + (FACTOR - 1) * t_compute
for r in range(2):
    print(f"rank {r}: compute alone {slowed[r]['compute_ms']:6.1f} ms; DDP step {even[r]['step_ms']:6.1f} ms when all are "
          f"equal, {slowed[r]['step_ms']:6.1f} ms with rank 1 computing {FACTOR}x slower")
print(f"prediction (pace of the slowest rank): {t_even:.1f} + ({FACTOR} - 1) x {t_compute:.1f} = {predicted:.1f} ms per step")
for r in range(2):
    print(f"  rank {r} measured {slowed[r]['step_ms']:.1f} ms: {100 * (slowed[r]['step_ms'] / predicted - 1):+.0f} % "
          "against the prediction")
print(f"rank 0's step took {slowed[0]['step_ms'] / even[0]['step_ms']:.2f}x as long as with equal ranks, and "
      f"{slowed[0]['step_ms'] / slowed[1]['step_ms']:.2f}x the straggler's own step")
# what the straggler really stretches: all the CPU work of its DDP step, not the model's alone
cpu_even, cpu_slowed = even[1]["cpu_ms"], slowed[1]["cpu_ms"]
waiting = t_even - statistics.median(r["cpu_ms"] for r in even)  # the part of an even step that is not CPU work
refined = FACTOR * cpu_slowed + waiting
print(f"rank 1's CPU work per DDP step: {cpu_even:.1f} ms as an equal rank (the model alone: {t_compute:.1f} ms), "
      f"{cpu_slowed:.1f} ms as the straggler")
print(f"refined prediction: {FACTOR} x {cpu_slowed:.1f} ms of CPU work + {waiting:.1f} ms of waiting = {refined:.1f} ms "
      f"per step; rank 0 measured {100 * (slowed[0]['step_ms'] / refined - 1):+.0f} % against it")

fig, ax = plt.subplots(figsize=(6, 3.4))
ax.bar(np.arange(2) - 0.2, [r["step_ms"] for r in even], 0.4, label="all ranks equal")
ax.bar(np.arange(2) + 0.2, [r["step_ms"] for r in slowed], 0.4, label=f"rank 1 computes {FACTOR}x slower")
ax.axhline(predicted, color="k", ls="--", lw=1, label="prediction: pace of the slowest rank")
ax.set_xticks([0, 1], ["rank 0", "rank 1 (the straggler)"]); ax.set_ylabel("ms per DDP step")
ax.set_ylim(0, 1.45 * max(predicted, *(r["step_ms"] for r in slowed)))  # room above the bars for the legend
ax.legend(fontsize=8, loc="upper left", ncol=2)
ax.set_title(f"{MODEL} MLP, batch {BATCH} per rank, on {STRAGGLE_LINK.name}", fontsize=9)
plt.show()

# %%
# Rank 0 computes at full speed, yet it keeps the straggler's pace, and its steps grew:
assert abs(slowed[0]["step_ms"] - slowed[1]["step_ms"]) < 0.25 * slowed[1]["step_ms"], "the ranks should move together"
assert slowed[0]["step_ms"] > even[0]["step_ms"], "rank 0 should have waited for rank 1"

# %% [markdown]
# Rank 0 computed nothing slower, yet its steps grew to about the straggler's (the ratios above say
# by how much): it spent the difference waiting inside the all-reduce. How well does "the pace of
# the slowest rank" predict the step? The one-line prediction takes the model's computation from
# separate steps in which the ranks only compute. But the slowed rank is slowed on *all* the CPU
# work it does between two collectives: DDP's own bookkeeping (its hooks, and the copies into and
# out of its buckets) as well as the model. And work that follows a sleep can itself take longer:
# the caches have gone cold, and on a busy machine the scheduler may hand the core to another
# program, or give a process that has just slept a larger share of it. The last two lines measure
# that: rank 1's CPU time per DDP step as an equal rank and as the straggler, and a prediction
# built from the straggler's own CPU time. The printed errors of the two predictions show how much
# of the straggler's cost each one accounts for on this run.
#
# With thousands of GPUs the chance that *some* rank is slow in a
# given step grows, and the step time is the *maximum* over ranks — large jobs monitor per-rank step
# times and replace slow nodes for that reason.
#
# ## 11. Outlook: when memory is the limit — ZeRO and FSDP
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
# In a live notebook this shows controls for workers, model size, batch, backend, algorithm,
# **network** (none: this machine's real loopback, or a simulated preset link) and **the cluster it
# stands for** (a GPU: the link is then dilated for the model, and the plot says by how much). Press
# **Run** to train at each worker count, repeated, and watch the plots fill in: medians with min-max
# bars, the speedup against one process with one thread, and this machine's best single process as a
# point. Run headless, it draws one static figure of the defaults. From a terminal, `dpcourse demo`
# does the same (`--network 25GbE --cluster A100` for a simulated cluster).

# %%
# NBVAL_IGNORE_OUTPUT
from dpcourse.demo.dashboard import dashboard

dashboard(workers=(1, 2), model="tiny", steps=20, repeats=3, out=None);

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids
lesson_aids("08")
