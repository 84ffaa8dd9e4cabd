# %% [markdown]
# # Lesson 04 — All-reduce, written by hand
#
# Lesson 03 showed that data parallelism needs one collective above all: **all-reduce**, which
# leaves the sum of every rank's gradient on every rank. PyTorch gives us `dist.all_reduce`. Here
# we build it ourselves from the only thing processes really have, point-to-point messages, twice:
#
# 1. the **naive** way: everyone sends to rank 0, rank 0 adds, rank 0 sends the sum back;
# 2. the **ring**: the tensor is cut into chunks that circle between neighbours, first in its
#    textbook form, then with what it takes to keep pace with gloo's own all-reduce.
#
# Then we ask the questions that decide how fast training can scale: how long should an
# all-reduce of `S` bytes on `N` ranks take? Why is the ring the algorithm real libraries use?
# And how close do our own versions come to PyTorch's, and to the physical limit of this machine?

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
from IPython.display import HTML, Code

import dpcourse
from dpcourse.bench import format_size
from dpcourse.bench.allreduce import measure
from dpcourse.bench.network import time_allreduces
from dpcourse.allreduce import naive_all_reduce, ring_all_reduce
from dpcourse.allreduce_pipelined import pipelined_ring_all_reduce
from dpcourse.costmodel import busbw, critical_path, fit_alpha_beta, memory_bandwidth
from dpcourse.plots.collectives import show_ring_steps, trace_ring_steps


def folded(obj, summary):
    """An object's source, folded away under ``summary`` until clicked."""
    return HTML(f"<details><summary>{summary}</summary>{Code(inspect.getsource(obj), language='python')._repr_html_()}"
                "</details>")

# Knobs: sizes and repeats are kept small so the lesson runs in about a minute on 2 cores.
# Turn MAX_SIZE up (64 << 20) on a bigger machine, or use `dpcourse bench allreduce` (end of lesson).
WORLD_SIZES = (2, 4)     # 4 ranks on 2 cores are oversubscribed: two processes per core
MAX_SIZE = 16 << 20      # bytes; the sweep goes from 1KB up to this, x8 at a time
REPEATS = 3              # timed rounds per size (the median is reported)
NAMES = {"naive": "naive", "ring": "textbook ring", "pipelined": "pipelined ring", "torch": "dist.all_reduce"}
SIZES = [1 << 10]
while SIZES[-1] * 8 <= MAX_SIZE:
    SIZES.append(SIZES[-1] * 8)
SIZES.append(MAX_SIZE) if SIZES[-1] != MAX_SIZE else None
print(f"{os.cpu_count()} CPU cores; sizes: {', '.join(format_size(s) for s in SIZES)}; ranks: {WORLD_SIZES}")

# %% [markdown]
# ## 1. The naive all-reduce
#
# The first idea anyone has: collect everything in one place. Here is the whole algorithm, as it
# lives in `dpcourse.allreduce` (only `send` and `recv`):

# %%
Code(inspect.getsource(naive_all_reduce), language="python")

# %% [markdown]
# Does it compute the same thing as PyTorch? Rank `r` starts from random numbers seeded with `r`;
# we compare with `dist.all_reduce` on a copy, on 3 ranks and an awkward size.

# %%
def compare_with_torch(algorithm, n):
    x = torch.randn(n, generator=torch.Generator().manual_seed(dist.get_rank())).to(dpcourse.device())
    reference = x.clone()
    dist.all_reduce(reference)
    out = algorithm(x)
    assert out is x, "in place: the same tensor comes back"
    return (x - reference).abs().max().item()


# %%
errors = dpcourse.launch(compare_with_torch, 3, naive_all_reduce, 1001)
print(f"largest difference from dist.all_reduce: {max(errors):.1e}")
assert max(errors) < 1e-5  # not exactly 0: floating-point sums in a different order round differently

# %% [markdown]
# The cost is easy to see. Rank 0 receives `N − 1` tensors and then sends `N − 1`, one after
# another: `2(N − 1)` transfers of the **full** tensor through one process, while every other
# rank sits idle most of the time. Doubling the ranks doubles the time. For gradients of
# hundreds of megabytes that would make data parallelism useless beyond a handful of workers.

# %% [markdown]
# ## 2. The ring
#
# Put the ranks on a circle; each rank talks only to its right-hand neighbour (sending) and its
# left-hand one (receiving). Cut the tensor into `N` chunks. Then:
#
# * **reduce-scatter**, `N − 1` steps: in every step each rank sends one chunk to the right and
#   receives one from the left, **adding** it to its own copy of that chunk; what it sends next is
#   the chunk it has just added to. Each chunk picks up one more rank's contribution per step, so
#   after `N − 1` steps every rank holds the complete sum of exactly one chunk, a different one
#   on each rank. (Which chunk a rank sends at which step is the puzzle of exercise 04; the
#   picture below shows the answer for 4 ranks, if you want to read it off.)
# * **all-gather**, `N − 1` more steps: the completed chunks travel round the ring once more, this
#   time **replacing** instead of adding.
#
# That is reduce_scatter followed by all_gather, the identity from lesson 03. In every step all
# ranks send and receive at the same time (`isend` + `irecv`, then wait), so no link is idle.
#
# Here is the whole algorithm as `dpcourse.allreduce.ring_all_reduce` has it, about thirty lines.
# It is also the answer to exercise 04: if you want the puzzle, write your own first, then open it.

# %%
folded(ring_all_reduce, "<b>ring_all_reduce</b>, the textbook ring (click to open; exercise 04's answer)")

# %% [markdown]
# To *see* it, give rank `r` the value `2**r` in every element. A sum of distinct powers of two
# is a bit pattern: its set bits say exactly which ranks have contributed. The ring calls
# `after_step(phase, step, tensor)` after every step, if it is given one; `trace_ring_steps` (from
# `dpcourse.plots.collectives`) passes a function that copies each rank's tensor there, so the
# algorithm itself knows nothing of the picture (one element per chunk):

# %%
def traced_ring(world):
    return trace_ring_steps(torch.full((world,), 2.0 ** dist.get_rank(), device=dpcourse.device()))


traces = dpcourse.launch(traced_ring, 4, 4)
show_ring_steps(traces)
plt.show()

# %% [markdown]
# Each box is a chunk, labelled with the ranks whose data it contains; a red edge marks what
# changed in that step. Follow one chunk: it gains one contributor per reduce-scatter step until
# one rank holds it complete ("all"); the all-gather steps then copy each complete chunk to the
# others. A check on the trace itself:

# %%
# NBVAL_CHECK_OUTPUT
world = len(traces)
full = 2.0 ** world - 1
for r, trace in enumerate(traces):
    complete = [c for c, v in enumerate(trace[world - 1][2]) if v == full]
    assert complete == [(r + 1) % world], (r, complete)  # after reduce-scatter: exactly one chunk
    assert trace[-1][2] == [full] * world                 # after all-gather: everything
print(f"after reduce-scatter each rank owns one complete chunk; after all-gather all {world} are complete")

# %% [markdown]
# And the ring against PyTorch, on a size that does not divide by the number of ranks:

# %%
errors = dpcourse.launch(compare_with_torch, 3, ring_all_reduce, 1001)
print(f"largest difference from dist.all_reduce: {max(errors):.1e}")
assert max(errors) < 1e-5

# %% [markdown]
# ## 2b. What it takes to match gloo
#
# The textbook ring waits at the end of every step: each rank posts its `irecv` and `isend`,
# then waits for both before it starts the next step. gloo's own all-reduce does not wait like
# that. `dpcourse.allreduce_pipelined.pipelined_ring_all_reduce` sends exactly the same chunks
# round the same ring and computes the same sums; it changes only *when* messages are posted and
# how big they are, with four ideas:
#
# 1. *Ask before the data comes.* gloo transmits a message only once the receiver has posted its
#    `irecv`; a late receive costs a round trip. Every receive of the call is posted before the
#    first send (all-gather pieces land straight in the tensor: they can only arrive after this
#    rank has sent what it held there).
# 2. *Forward at once.* The chunk received at step `j` is the one sent at step `j + 1`, so it is
#    sent on the moment it has been added, without waiting for the rest of the step.
# 3. *Pipeline big chunks.* A chunk over 4 MB travels as several messages; each piece is added
#    and forwarded while the next is still arriving.
# 4. *One connection per direction.* With two ranks, left and right neighbour are the same
#    process, and gloo would carry both directions over one connection that only one side can use
#    at a time. The message from the last rank back to rank 0 gets a process group (and so a
#    connection) of its own.
#
# The price is readability: tags to keep pieces in flight apart, a scratch buffer kept between
# calls, a second process group. It is built on `dpcourse.allreduce` (same input checks, same
# chunks) and is folded away below; section 4 measures both rings and gloo side by side.

# %%
folded(pipelined_ring_all_reduce, "<b>pipelined_ring_all_reduce</b>: the same ring, scheduled like gloo's (click to open)")

# %%
errors = dpcourse.launch(compare_with_torch, 3, pipelined_ring_all_reduce, 1001)
print(f"pipelined ring, largest difference from dist.all_reduce: {max(errors):.1e}")
assert max(errors) < 1e-5

# %% [markdown]
# ## 3. Why the ring is bandwidth-optimal
#
# Count what the busiest rank must send for a tensor of `S` bytes:
#
# * naive: rank 0 moves `2(N − 1) · S` bytes — growing with `N`;
# * ring: `2(N − 1)` steps of one chunk, `S / N` bytes each: `2(N − 1)/N · S` — *less than `2S`
#   whatever `N` is*.
#
# No algorithm can do better than the ring's `2(N−1)/N · S`: each rank's piece of the sum
# depends on `(N − 1)/N · S` bytes it does not hold (reduce-scatter half), and it must receive
# the `(N − 1)/N · S` bytes of the sum computed elsewhere (all-gather half). So as the number of
# workers grows, the ring's time per all-reduce stays almost flat, and that is what makes
# data parallelism on hundreds of GPUs possible. The catch is latency: the ring needs
# `2(N − 1)` steps *in sequence*, so for small tensors, where each message costs a fixed
# start-up time, it is not the best. Libraries switch to a **tree** for those: the ranks pair up,
# sums flow up a binary tree to one rank and back down, in about `2 log₂ N` message steps instead
# of `2(N − 1)`, at the price of sending the whole tensor at every step.

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'ranks':>5} | {'naive: bytes via rank 0':>24} | {'ring: bytes per rank':>20}")
for n in (2, 4, 8, 64, 1024):
    print(f"{n:>5} | {critical_path('naive', 1, n)[1]:>22.2f} S | {critical_path('ring', 1, n)[1]:>18.3f} S")

# %% [markdown]
# ## 4. Measuring all four
#
# Now the experiment: naive, the textbook ring, the pipelined ring and `dist.all_reduce` (gloo
# here; NCCL on GPUs) on float32 tensors from 1 KB up, on 2 and 4 ranks. `measure` (from
# `dpcourse.bench.allreduce`) runs inside the workers: each round times the four algorithms one
# after the other between barriers, in an order shuffled every round, and a round's time is the
# slowest rank's, because an all-reduce is finished only when every rank has the sum. Taking turns
# means a noisy neighbour on the machine hurts all four alike. Small tensors are timed in batches of calls back to back (about 8 MB in
# all), as they come in training, and the time is divided by the batch length.

# %%
measured = {}  # (world_size, size) -> {algorithm: median seconds}
for n in WORLD_SIZES:
    for size in SIZES:
        times = dpcourse.launch(measure, n, size, REPEATS, timeout=300)[0]
        measured[n, size] = {name: float(np.median(ts)) for name, ts in times.items()}
    print(f"{n} ranks measured")

print(f"\n{'ranks':>5} {'size':>6} | {'naive':>9} {'ring':>9} {'pipelined':>9} {'torch':>9}  (median ms)")
for (n, size), t in measured.items():
    print(f"{n:>5} {format_size(size):>6} | " + " ".join(f"{t[a] * 1e3:9.3f}" for a in ("naive", "ring", "pipelined", "torch")))

# %% [markdown]
# ## 5. A model that explains the numbers: α and β
#
# The simplest useful model of a message: sending `b` bytes costs `α + β·b` seconds. `α`
# (latency) is the fixed price of any message, however small; `1/β` is the bandwidth. An
# algorithm is then just a count of the messages and bytes on its critical path:
#
# * naive: `T = 2(N − 1) · (α + β·S)`
# * ring:  `T = 2(N − 1) · (α + β·S/N)`
#
# We fit the two numbers `α` and `β` to *your* measurements (naive and textbook ring, all sizes,
# both rank counts at once, weighting relative errors), and let the model predict every curve, up
# to 64 MB, beyond the sizes measured here. (The pipelined ring is left out of the fit: it
# overlaps its steps, so it is not `2(N − 1)` messages one after the other.)

# %%
samples = [(alg, size, n, t[alg]) for (n, size), t in measured.items() for alg in ("naive", "ring")]
model = fit_alpha_beta(samples)
print(f"fitted: alpha = {model.alpha * 1e6:.0f} µs per message, 1/beta = {model.bandwidth / 1e9:.2f} GB/s")

curve = np.logspace(10, 26, 33, base=2)
fig, axes = plt.subplots(1, len(WORLD_SIZES), figsize=(5.5 * len(WORLD_SIZES), 4), sharey=True, squeeze=False)
for ax, n in zip(axes[0], WORLD_SIZES):
    for alg, color in (("naive", "C0"), ("ring", "C1")):
        ax.plot(curve, [model.predict(alg, s, n) for s in curve], color=color, label=f"{NAMES[alg]}: model")
        ax.plot(SIZES, [measured[n, s][alg] for s in SIZES], "o", color=color, label=f"{NAMES[alg]}: measured")
    ax.plot(SIZES, [measured[n, s]["pipelined"] for s in SIZES], "^", color="C3", label="pipelined ring: measured")
    ax.plot(SIZES, [measured[n, s]["torch"] for s in SIZES], "x", color="C2", label="dist.all_reduce: measured")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = [1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 26]
    ax.set_xticks(ticks, [format_size(t) for t in ticks])
    ax.set_xlabel("tensor size")
    ax.set_title(f"{n} ranks" + (" (oversubscribed: 2 per core)" if n > (os.cpu_count() or 1) else ""))
axes[0][0].set_ylabel("seconds per all-reduce")
axes[0][0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# What to look for in your plot:
#
# * **Small tensors are flat.** Below some tens of kilobytes the time hardly depends on the size:
#   that is `α`, the cost of `2(N−1)` messages. Here the ring pays the same number of
#   start-ups as the naive version, and `dist.all_reduce` may beat both (fewer round trips, no
#   Python between steps).
# * **Large tensors are straight lines of slope 1** (time ∝ size): that is `β`. The model's gap
#   between naive and ring grows with `N`.
# * **Where the model misses, it teaches.** The model assumes each rank has its own link and
#   that all links work at once. On a CPU-only machine every "link" is the CPU copying bytes
#   through the operating system, and all ranks share the same few cores. With 2 ranks the ring
#   and the naive version must copy the same total number of bytes, so expect them to be close;
#   with 4 ranks on 2 cores, the ring can only use the second core that the naive version leaves
#   idle, not four independent links. On GPUs with NCCL, where links really are separate, the
#   model fits much better.

# %% [markdown]
# ## 5b. A link whose α and β you choose
#
# Is the misfit the model's fault, or the machine's? We can find out by running the very same
# code on a link that *does* behave as the model assumes. `dpcourse.launch(..., network=link)`
# puts a simulated link under `torch.distributed`: every message still travels through gloo (the
# sums are exactly the same), but it completes no earlier than `latency + bytes / bandwidth`
# after it was sent, each rank has its own link, one transfer at a time in each direction, and
# waiting sleeps, so it leaves the cores free. You set α and β; then we fit them back from
# timings of the naive and the ring all-reduce, made of real `send`/`recv` messages, and see
# whether the fit recovers what you set.

# %%
ALPHA, BANDWIDTH = 20e-3, 100e6  # the knobs: 20 ms per message (a slow, far link), 100 MB/s each way
LINK_SIZES = [1 << 20, 2 << 20, 4 << 20, 8 << 20]  # 1 MB and up: where bandwidth matters
link = dpcourse.Link(latency=ALPHA, bandwidth=BANDWIDTH, name="the link you set")

on_link = {}
for n in WORLD_SIZES:
    times = dpcourse.launch(time_allreduces, n, LINK_SIZES, REPEATS, ("course naive", "course ring"),
                            network=link, timeout=300)[0]
    for size in LINK_SIZES:
        on_link[n, size] = {alg: float(np.median(times[f"course {alg}"][size])) for alg in ("naive", "ring")}

fitted = fit_alpha_beta([(alg, size, n, t[alg]) for (n, size), t in on_link.items() for alg in ("naive", "ring")])
alpha_err = fitted.alpha / ALPHA - 1
bw_err = fitted.bandwidth / BANDWIDTH - 1
print(f"set:    alpha = {ALPHA * 1e3:.2f} ms, 1/beta = {BANDWIDTH / 1e6:.0f} MB/s")
print(f"fitted: alpha = {fitted.alpha * 1e3:.2f} ms ({alpha_err:+.1%}), 1/beta = {fitted.bandwidth / 1e6:.1f} MB/s ({bw_err:+.1%})")

fig, axes = plt.subplots(1, len(WORLD_SIZES), figsize=(5.5 * len(WORLD_SIZES), 3.6), sharey=True, squeeze=False)
for ax, n in zip(axes[0], WORLD_SIZES):
    for alg, color in (("naive", "C0"), ("ring", "C1")):
        ax.plot(LINK_SIZES, [fitted.predict(alg, s, n) for s in LINK_SIZES], color=color, label=f"{NAMES[alg]}: fitted model")
        ax.plot(LINK_SIZES, [on_link[n, s][alg] for s in LINK_SIZES], "o", color=color, label=f"{NAMES[alg]}: measured")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(LINK_SIZES, [format_size(s) for s in LINK_SIZES])
    ax.set_xlabel("tensor size")
    ax.set_title(f"{n} ranks on the simulated link")
axes[0][0].set_ylabel("seconds per all-reduce")
axes[0][0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# On the simulated link the model's assumptions hold by construction, so the fit should give
# back the link you set; the percentages printed above say how close it came in this run. What
# it cannot remove is the time Python and the operating system add to each step (waking a
# thread, adding a chunk): that shows up as extra α, and more of it on a busy machine. Compare
# with the fit on plain gloo above:

# %%
print(f"plain gloo on this machine: alpha = {model.alpha * 1e6:.0f} µs, 1/beta = {model.bandwidth / 1e9:.2f} GB/s")
print(f"simulated link:             alpha = {fitted.alpha * 1e6:.0f} µs, 1/beta = {fitted.bandwidth / 1e9:.2f} GB/s")
for n in WORLD_SIZES:
    s = LINK_SIZES[-1]
    print(f"{n} ranks, {format_size(s)}: naive / ring = {on_link[n, s]['naive'] / on_link[n, s]['ring']:.2f} on the simulated link "
          f"(model: {fitted.predict('naive', s, n) / fitted.predict('ring', s, n):.2f}), "
          f"{measured[n, max(SIZES)]['naive'] / measured[n, max(SIZES)]['ring']:.2f} on plain gloo at {format_size(max(SIZES))}")

# %% [markdown]
# What differs is the machine, not the model. On the simulated link every rank has a link of its
# own and waiting costs no CPU, exactly the model's assumptions, so the ring's advantage over the
# naive version grows with `N` as the formula says (the ratio tends to `N` as tensors grow). On plain
# gloo the "links" are the two CPU cores copying bytes through the kernel, shared by all ranks, so
# no algorithm can move more bytes per second than the cores can copy, and 4 ranks on 2 cores take
# turns. That is also why the rest of the course runs its communication experiments on a
# simulated link: it is the only way a laptop can show what a cluster's network does.

# %% [markdown]
# ## 6. Bandwidths, and the physical limit
#
# Two ways of turning a time into a speed (the convention of NVIDIA's `nccl-tests`):
#
# * **algorithm bandwidth** `algbw = S / T`: how fast *your tensor* got reduced;
# * **bus bandwidth** `busbw = algbw · 2(N − 1)/N`: the rate at which each rank moved data,
#   counting the `2(N − 1)/N · S` bytes any all-reduce must send. It does not depend on `N` for a
#   perfect ring, so it can be compared with the speed of the hardware link.
#
# What is the hardware link here? Processes on one machine exchange data through memory, so no
# transfer can beat a plain memory copy made under the same conditions. We measure that ceiling
# (on a shared machine it moves with the load, like everything else here):

# %%
mem_bw = memory_bandwidth(min(MAX_SIZE, 64 << 20))
print(f"memory copy on this machine: {mem_bw / 1e9:.2f} GB/s (bytes read + written per second)")

largest = max(SIZES)
fig, ax = plt.subplots(figsize=(6.5, 4))
for n, style in zip(WORLD_SIZES, ("-", "--")):
    for alg, color in (("naive", "C0"), ("ring", "C1"), ("pipelined", "C3"), ("torch", "C2")):
        ax.plot(SIZES, [busbw(s, measured[n, s][alg], n) / 1e9 for s in SIZES], style, marker="o",
                color=color, label=f"{NAMES[alg]}, {n} ranks")
ax.axhline(mem_bw / 1e9, color="gray", ls=":", label="memory copy")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(SIZES, [format_size(s) for s in SIZES])
ax.set_xlabel("tensor size")
ax.set_ylabel("bus bandwidth (GB/s)")
ax.legend(fontsize=8, ncol=2)
plt.tight_layout()
plt.show()

for n in WORLD_SIZES:
    t = measured[n, largest]
    print(f"{n} ranks, {format_size(largest)}, bandwidth ratios: pipelined / torch = {t['torch'] / t['pipelined']:.2f}x, "
          f"textbook ring / torch = {t['torch'] / t['ring']:.2f}x, pipelined / textbook = {t['ring'] / t['pipelined']:.2f}x, "
          f"textbook ring / naive = {t['naive'] / t['ring']:.2f}x; "
          f"pipelined busbw = {busbw(largest, t['pipelined'], n) / mem_bw:.0%} of the memory copy rate")
if any(busbw(largest, s, n) > mem_bw for n in WORLD_SIZES for s in measured[n, largest].values()):
    print("(a bus bandwidth above the memory copy rate means the copy was measured at a busier moment "
          "than the all-reduces: on a shared machine the ceiling is itself a noisy measurement)")

# %% [markdown]
# Read the ratios printed above; they are this run's. How the pipelined ring compared with the
# textbook ring and with gloo from 1 MB up, where bytes, not message start-ups, decide (a ratio
# above 1 means the pipelined ring moved the tensor faster):

# %%
for n in WORLD_SIZES:
    big = [s for s in SIZES if s >= 1 << 20]
    gain = {s: measured[n, s]["ring"] / measured[n, s]["pipelined"] for s in big}
    vs_torch = {s: measured[n, s]["torch"] / measured[n, s]["pipelined"] for s in big}
    print(f"{n} ranks: pipelined / textbook ring bandwidth " + ", ".join(f"{format_size(s)} {g:.2f}x" for s, g in gain.items())
          + "; pipelined / torch " + ", ".join(f"{format_size(s)} {g:.2f}x" for s, g in vs_torch.items()))
    better = sum(g > 1 for g in gain.values())
    print(f"   the pipelined ring was the faster ring at {better} of {len(big)} sizes in this run")

# %% [markdown]
# Why the ratios to gloo can be close at all: for large tensors both our rings and gloo's spend
# their time moving bytes, and Python's few microseconds per step vanish next to milliseconds of
# copying; the pipelined ring also keeps the links busy between steps, as gloo does. Why they can also be far apart here: with 4
# ranks on 2 cores, whoever gets a core first moves its bytes first, and the order of the ring's
# steps decides how often a rank waits for a neighbour that has no core. For small tensors,
# fixed costs decide, and which algorithm pays the least of them varies from machine to
# machine. This run, at the smallest size:

# %%
smallest = min(SIZES)
for n in WORLD_SIZES:
    t = measured[n, smallest]
    order = sorted(t, key=t.get)
    print(f"{n} ranks, {format_size(smallest)}: fastest {order[0]} ({t[order[0]] * 1e6:.0f} µs), "
          f"slowest {order[-1]} ({t[order[-1]] * 1e6:.0f} µs)")

# %% [markdown]
# If the ratios jump around from one run to the next, something else is using the cores (look at
# the spread of the individual times, or raise `REPEATS`). Where there is a gap to the memory copy
# line, it is what TCP over the loopback device costs: every byte is copied into the kernel and out again, on the
# same cores that run the ranks.
#
# On GPUs the same measurements look very different: NCCL's bus bandwidth over NVLink reaches
# hundreds of GB/s, and its all-reduce is a ring (or a tree for small messages) implemented
# inside CUDA kernels. The algorithm is the one you just wrote.
#
# **Bigger sweeps.** From a terminal, with more repeats and sizes up to 64 MB, a JSON file and a
# plot:
#
# ```
# dpcourse bench allreduce --world-size 4 --sizes 1KB,1MB,16MB,64MB --repeats 15 --json ar.json --plot ar.png
# ```

# %% [markdown]
# ## What to take away
#
# * The naive all-reduce funnels `2(N − 1)` full tensors through one rank; its time grows with `N`.
# * The ring splits the tensor into `N` chunks: `N − 1` reduce-scatter steps, then `N − 1`
#   all-gather steps, every rank sending and receiving at once. Each rank sends `2(N − 1)/N · S`
#   bytes, the minimum possible.
# * `α + β·b` per message explains the shape of the curves: latency for small tensors,
#   bandwidth for large ones. Where it misses, something the model assumed (independent links)
#   is not true of the machine.
# * Report bus bandwidth to compare with hardware; compare with the memory (or link) speed to
#   know how far from the limit you are.
#
# * The textbook ring waits at every step. `pipelined_ring_all_reduce` sends the same messages,
#   scheduled the way gloo schedules its own: receives posted early, each piece forwarded at once,
#   big chunks pipelined. Section 6 printed how the two rings and gloo compared in this run.
#
# In the exercise you write `ring_all_reduce` yourself. Lesson 05 then uses an all-reduce to
# build data-parallel training by hand.

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids
lesson_aids("04")
