# %% [markdown]
# # Lesson 09 — Sharded data parallelism: ZeRO by hand, then FSDP
#
# DDP (lessons 05 and 07) keeps a **full copy** of everything on every rank: the parameters, the
# gradients and the optimizer state. Eight GPUs with 80 GB each do not make a 640 GB machine: each
# one must still hold the whole model. This lesson asks two questions:
#
# 1. **Where does the memory of training go**, and why does sharding it save less than you might
#    expect?
# 2. **What does sharding cost in communication?** In particular, when does ZeRO-3's extra
#    all-gather cost more than it saves?
#
# The plan: measure the memory of one training step; write ZeRO stage 1 by hand and check that it is
# the same training as one process; then let PyTorch's FSDP2 (`fully_shard`) shard gradients and
# parameters too (ZeRO-2 and ZeRO-3), count and time its collectives, and price them with the α-β
# model of lesson 04. Last, save a sharded checkpoint on 2 ranks and resume it on 4.
#
# This machine has 2 CPU cores, and the ranks are processes on gloo. The memory figures below are
# exact counts of the tensors each rank holds; the timings are this run's and will differ on yours.

# %%
import inspect
import os
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

import dpcourse
from dpcourse.commlog import CollectiveLog, predict_seconds, step_traffic, wire_bytes
from dpcourse.data import shard, synthetic_classification
from dpcourse.ddp_by_hand import BucketedDDP
from dpcourse.memory import (STAGES, SavedActivations, gradient_bytes, parameter_bytes, resident_bytes,
                             state_bytes, zero_bytes_per_rank)
from dpcourse.models import WideMLP, count_parameters
from dpcourse.plots import plot_bars, plot_lines
from dpcourse.plots.collectives import trace_ring_steps
from dpcourse.plots.zero import plot_memory, plot_step_timeline
from dpcourse.zero import ZeroOptimizer

# Knobs: turn these up on a bigger machine (or with GPUs).
WORLD = 2                               # ranks for the FSDP and timing experiments
FEATURES, WIDTH, DEPTH = 256, 1024, 4   # WideMLP(256, 1024, 4): about 3.4 M parameters
GLOBAL_BATCH = 128                      # samples per step, split over the ranks
STEPS = 2                               # timed steps per round of an experiment (the median is reported)
MB = 2**20

torch.optim.AdamW([nn.Parameter(torch.zeros(1))]).step()  # import the optimizer machinery once, before forking
X, Y = synthetic_classification(GLOBAL_BATCH, features=FEATURES, seed=0).tensors
PSI = count_parameters(WideMLP(FEATURES, WIDTH, DEPTH))
print(f"model: WideMLP({FEATURES}, {WIDTH}, {DEPTH}), Ψ = {PSI:,} parameters; global batch {GLOBAL_BATCH}; "
      f"{WORLD} ranks for FSDP; {os.cpu_count()} CPU cores here")

# %% [markdown]
# ## 1. Where the memory goes
#
# Four kinds of tensors take memory during training:
#
# * **parameters** — the model itself, Ψ numbers;
# * **gradients** — one per parameter, from `backward()`;
# * **optimizer state** — what the optimizer keeps between steps: nothing for plain SGD, one
#   momentum tensor for SGD with momentum, **two** for Adam (the running mean and the running mean of
#   squares of the gradient);
# * **activations** — the outputs of each layer, saved by autograd during forward for backward. They
#   grow with the batch; the other three do not.
#
# We count each in one AdamW step of our 3.4 M-parameter model, in float32. Activations are
# measured with `torch.autograd.graph.saved_tensors_hooks`, which sees every tensor autograd saves
# (`dpcourse.memory.SavedActivations`). To check the counting against the operating system, the
# step runs in a fresh worker process whose resident memory (RSS) we read before and after.

# %%
def memory_of_one_step(dtype=torch.float32, master_dtype=None):
    """Bytes of each kind after one AdamW step, in a fresh process (a one-rank launch)."""
    rss = resident_bytes()
    torch.manual_seed(0)
    model = WideMLP(FEATURES, WIDTH, DEPTH).to(dtype)
    opt = ZeroOptimizer(model.parameters(), torch.optim.AdamW, master_dtype=master_dtype, lr=1e-3)  # 1 rank: plain AdamW
    with SavedActivations(model) as saved:
        loss = nn.functional.cross_entropy(model(X.to(dtype)).float(), Y)
    loss.backward()
    opt.step()
    parts = {"parameters": parameter_bytes(model), "gradients": gradient_bytes(model),
             "optimizer state": state_bytes(opt), "activations": saved.bytes}
    after = resident_bytes()
    return parts, None if rss is None or after is None else after - rss

fp32, rss_growth = dpcourse.launch(memory_of_one_step, 1)[0]
for part, nbytes in fp32.items():
    print(f"{part:16s} {nbytes / MB:7.1f} MB = {nbytes / PSI:5.2f} bytes per parameter")
kept = fp32["parameters"] + fp32["gradients"] + fp32["optimizer state"]
print(f"parameters + gradients + optimizer state: {kept / MB:.1f} MB")
if rss_growth is not None:
    print(f"the worker's resident memory (RSS) grew by {rss_growth / MB:.1f} MB during the step "
          f"({'more' if rss_growth > kept else 'less'} than that sum)")
assert fp32["optimizer state"] >= 2 * fp32["parameters"]  # Adam: two moments per parameter

# %% [markdown]
# In float32, AdamW costs **4 + 4 + 8 = 16 bytes per parameter** before a single activation: the
# optimizer state alone is twice the model. (The worker's RSS need not equal that sum: it also
# counts temporary buffers of the step, activations already freed after backward, and pages the
# memory allocator keeps for reuse; and memory can be reserved before it is touched.)
#
# Large models train in **mixed precision**: parameters and gradients in bfloat16 (2 bytes each),
# and, because small updates vanish when added to a bf16 number, an fp32 **master copy** of the
# parameters inside the optimizer, next to Adam's two fp32 moments. The ZeRO paper's accounting for
# Ψ parameters is then
#
# $$\underbrace{2\Psi}_{\text{bf16 parameters}} + \underbrace{2\Psi}_{\text{bf16 gradients}} + \underbrace{(4+4+4)\Psi}_{\text{fp32 master, momentum, variance}} = 16\Psi \text{ bytes}.$$
#
# `ZeroOptimizer(..., master_dtype=torch.float32)` on a bf16 model does exactly that. Measured:

# %%
# NBVAL_CHECK_OUTPUT
mixed, _ = dpcourse.launch(memory_of_one_step, 1, torch.bfloat16, torch.float32)[0]
formula = zero_bytes_per_rank(PSI, 1, "DDP")
for part in formula:
    print(f"{part:16s} measured {mixed[part] / PSI:5.2f} bytes per parameter, accounting {formula[part] / PSI:.0f}")
    assert abs(mixed[part] / PSI - formula[part] / PSI) < 0.01
print(f"activations: {mixed['activations'] / fp32['activations']:.2f} times float32's")
fig = plot_memory({"float32 AdamW": fp32, "bf16 + fp32 master AdamW": mixed},
                  title=f"One training step of a {PSI / 1e6:.1f} M-parameter model, batch {GLOBAL_BATCH}")
plt.show()

# %% [markdown]
# Mixed precision halves the parameters and the gradients (and the activations, by the ratio printed
# above), but not the optimizer state: **12 of the 16 bytes per parameter are optimizer state**, and every DDP rank holds all of it.
# That is the redundancy ZeRO ("Zero Redundancy Optimizer") removes. With N ranks:
#
# | | parameters | gradients | optimizer state | per rank, bytes |
# |---|---|---|---|---|
# | DDP | full | full | full | 2Ψ + 2Ψ + 12Ψ |
# | ZeRO-1 | full | full | **1/N** | 2Ψ + 2Ψ + 12Ψ/N |
# | ZeRO-2 | full | **1/N** | **1/N** | 2Ψ + (2Ψ + 12Ψ)/N |
# | ZeRO-3 (FSDP) | **1/N** | **1/N** | **1/N** | 16Ψ/N |
#
# Why does ZeRO save less than expected? Because of the grey top of the bars above: the
# **activations** are not sharded by any ZeRO stage (each rank computes its own samples), and
# ZeRO-1 and ZeRO-2 keep the full model on every rank, so however many ranks you add their memory per
# rank never falls below 4Ψ (ZeRO-1: parameters and gradients) or 2Ψ (ZeRO-2: parameters). For a 7-billion-parameter model on 8 ranks:

# %%
# NBVAL_CHECK_OUTPUT
for stage in STAGES:
    per_rank = sum(zero_bytes_per_rank(7e9, 8, stage).values())
    print(f"{stage:7s} {per_rank / 1e9:6.1f} GB per rank for parameters, gradients and optimizer state")

# %% [markdown]
# ## 2. ZeRO-1 by hand
#
# Lesson 04's ring all-reduce is two halves: in the first N−1 steps (a **reduce-scatter**) each rank
# ends with the complete sum of one chunk; in the last N−1 steps (an **all-gather**) the summed chunks
# travel round the ring to everyone. Let us see the halfway point in the ring's own trace, with 4
# ranks and 8 numbers: after the reduce-scatter steps, which chunks of each rank already hold the sum
# over all ranks?

# %%
# NBVAL_CHECK_OUTPUT
def halfway():
    r, n = dist.get_rank(), dist.get_world_size()
    t = torch.arange(8.0) + 100 * r
    total = sum(torch.arange(8.0) + 100 * k for k in range(n))
    trace = trace_ring_steps(t)                       # the ring, with a snapshot after every step
    after_reduce_scatter = torch.tensor(trace[n - 1][2])  # the snapshot after the last reduce-scatter step
    done = [c for c, (a, b) in enumerate([(2 * i, 2 * i + 2) for i in range(n)])
            if torch.equal(after_reduce_scatter[a:b], total[a:b])]
    mine = torch.empty(2)
    dist.reduce_scatter_single(mine, torch.arange(8.0) + 100 * r)   # torch's reduce-scatter: chunk r
    return done, torch.equal(mine, total[2 * r:2 * r + 2])

for r, (done, same) in enumerate(dpcourse.launch(halfway, 4)):
    print(f"rank {r}: after the ring's reduce-scatter it holds the full sum of chunk {done}; "
          f"dist.reduce_scatter_single gives it chunk {r}: {same}")

# %% [markdown]
# So a ring all-reduce **is** a reduce-scatter followed by an all-gather (the ring happens to number
# its chunks one off). DDP runs the two halves back to back. ZeRO-1 puts the optimizer step **in
# between**:
#
# 1. keep all parameters in one flat buffer, cut into N equal shards (padded at the end, so any
#    parameter count works);
# 2. reduce-scatter the flat gradient: rank r receives the summed gradient of shard r only;
# 3. rank r steps **its shard** with the optimizer state of its shard only;
# 4. all-gather the updated shards, so every rank holds the full new parameters.
#
# The bytes on the wire are those of an all-reduce, so ZeRO-1 shards the optimizer state **for free
# in communication**. The course's version, `dpcourse.zero.ZeroOptimizer`, wraps any `torch.optim`
# optimizer class. A shard boundary may fall in the middle of a parameter, so each rank cuts its
# shard at parameter boundaries into *pieces*, one per parameter it overlaps, and gives the wrapped
# optimizer those pieces in their parameters' groups: options like "no weight decay on biases" then
# reach the right elements. Its `step()`:

# %%
print(inspect.getsource(ZeroOptimizer.step))

# %% [markdown]
# **Is it the same training?** A small model with an odd number of parameters (so its shards end
# inside parameters, and the last one is padded), AdamW with weight decay (none on the biases),
# float64, four steps; each rank gets its share of every global
# batch. We compare every rank's parameters with one process training on the full batches.

# %%
# NBVAL_CHECK_OUTPUT
def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 40), nn.Tanh(), nn.Linear(40, 7)).double()

def groups(model):
    return [{"params": [p for n, p in model.named_parameters() if n.endswith("weight")]},
            {"params": [p for n, p in model.named_parameters() if n.endswith("bias")], "weight_decay": 0.0}]

def train_small(zero=True, steps=4, **options):
    model = small_model()
    make = ZeroOptimizer if zero else (lambda params, cls, **kw: cls(params, **kw))
    opt = make(groups(model), torch.optim.AdamW, lr=0.01, weight_decay=0.1, **options)
    r, w = (dpcourse.rank(), dpcourse.world_size()) if zero else (0, 1)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(24, 20, generator=g, dtype=torch.float64), torch.randint(0, 7, (24,), generator=g)
        nn.functional.cross_entropy(model(shard(x, r, w)), shard(y, r, w)).backward()
        opt.step()
        opt.zero_grad()
    return torch.cat([p.detach().flatten() for p in model.parameters()])

numel = count_parameters(small_model())
print(f"parameters: {numel} (odd: {numel % 2 == 1})")
reference = train_small(zero=False)
for world in (1, 2, 4):
    gap = max((p - reference).abs().max().item() for p in dpcourse.launch(train_small, world))
    print(f"ZeRO-1 on {world} rank(s): every rank equals one process within 1e-12: {gap < 1e-12}")
    assert gap < 1e-12

# %% [markdown]
# The same training, to float64 rounding. `ZeroOptimizer` used `torch.distributed`'s reduce-scatter.
# Lesson 04's ring does the same job in its first N−1 steps, so let us write just that half by hand,
# from `isend`/`recv`, and plug it in (`ZeroOptimizer(..., reduce_scatter=...)`). At step j, rank r
# passes chunk r−j−1 to its right neighbour and adds the chunk arriving from its left; each chunk
# travels N−1 hops and ends, summed, on the rank whose number it carries.

# %%
# NBVAL_CHECK_OUTPUT
def ring_reduce_scatter(output, input):
    """The first half of lesson 04's ring: rank r ends with the sum over all ranks of chunk r."""
    r, n = dist.get_rank(), dist.get_world_size()
    chunks = list(input.clone().chunk(n))          # N equal chunks: ZeroOptimizer pads its flat buffer
    incoming = torch.empty_like(chunks[0])
    for j in range(n - 1):
        sending = dist.isend(chunks[(r - j - 1) % n], dst=(r + 1) % n)
        dist.recv(incoming, src=(r - 1) % n)
        chunks[(r - j - 2) % n] += incoming
        sending.wait()
    output.copy_(chunks[r])

def same_as_torch():
    x = torch.randn(12, generator=torch.Generator().manual_seed(dist.get_rank()), dtype=torch.float64)
    ours, theirs = (torch.empty(12 // dist.get_world_size(), dtype=torch.float64) for _ in range(2))
    ring_reduce_scatter(ours, x)
    dist.reduce_scatter_single(theirs, x)
    return (ours - theirs).abs().max().item()

def train_small_on_the_ring():
    return train_small(reduce_scatter=ring_reduce_scatter)  # the same run, on the ring just written

for world in (2, 4):
    agree = max(dpcourse.launch(same_as_torch, world)) < 1e-12
    gap = max((p - reference).abs().max().item() for p in dpcourse.launch(train_small_on_the_ring, world))
    print(f"{world} ranks: hand-written ring = torch's reduce-scatter: {agree}; "
          f"ZeRO-1 on it equals one process within 1e-12: {gap < 1e-12}")
    assert agree and gap < 1e-12

# %% [markdown]
# The same training, to float64 rounding. Now the point of it all: the **optimizer state per rank**,
# for our 3.4 M-parameter model in float32 (4 ranks on 2 cores are oversubscribed: fine for counting
# bytes).

# %%
def zero1_memory():
    torch.manual_seed(0)
    model = WideMLP(FEATURES, WIDTH, DEPTH)
    opt = ZeroOptimizer(model.parameters(), torch.optim.AdamW, lr=1e-3)
    r, w = dpcourse.rank(), dpcourse.world_size()
    nn.functional.cross_entropy(model(shard(X, r, w)), shard(Y, r, w)).backward()
    opt.step()
    return {"parameters": parameter_bytes(model), "gradients": gradient_bytes(model),
            "optimizer state": state_bytes(opt)}

per_world = {w: dpcourse.launch(zero1_memory, w) for w in (1, 2, 4)}
full_state = per_world[1][0]["optimizer state"]
for w, ranks in per_world.items():
    states = [r["optimizer state"] for r in ranks]
    print(f"{w} rank(s): optimizer state per rank {', '.join(f'{s / MB:.2f}' for s in states)} MB "
          f"= {max(states) / full_state:.3f} of one process's (1/N = {1 / w:.3f})")
    assert max(states) <= full_state / w * 1.01
fig = plot_lines(list(per_world), {"measured, largest rank": [max(r["optimizer state"] for r in ranks) / MB
                                                             for ranks in per_world.values()],
                                   "full state / N": [full_state / w / MB for w in per_world]},
                 "ranks N", "AdamW state per rank (MB)", "ZeRO-1: optimizer state per rank falls as 1/N")
plt.show()

# %% [markdown]
# The measured line lies on the 1/N line: each rank keeps Adam's two moments for Ψ/N parameters
# (plus one 4-byte step counter per piece). The parameters and gradients per rank did not move:

# %%
for w, ranks in per_world.items():
    print(f"{w} rank(s), rank 0: " + ", ".join(f"{k} {v / MB:.1f} MB" for k, v in ranks[0].items()))

# %% [markdown]
# PyTorch ships the same idea as `torch.distributed.optim.ZeroRedundancyOptimizer`. It differs in
# two ways that we can measure: it gives **whole parameters** to ranks (greedily, by size), so the
# shards are only as balanced as the parameter sizes allow; and it leaves the gradients to DDP, which
# all-reduces them, and then **broadcasts** each rank's updated parameters. Below: the state per rank
# and the collectives of one step, with the course's `BucketedDDP` (lesson 05) doing the all-reduce.

# %%
from torch.distributed.optim import ZeroRedundancyOptimizer

def zero_side_by_side():
    r, w = dpcourse.rank(), dpcourse.world_size()
    out = {}
    for name in ("ZeroOptimizer (ours)", "ZeroRedundancyOptimizer + BucketedDDP"):
        torch.manual_seed(0)
        model = WideMLP(FEATURES, WIDTH, DEPTH)
        if name.startswith("ZeroOptimizer"):
            net, opt, sync = model, ZeroOptimizer(model.parameters(), torch.optim.AdamW, lr=1e-3), lambda: None
        else:
            net = BucketedDDP(model, bucket_mb=25)
            opt, sync = ZeroRedundancyOptimizer(model.parameters(), torch.optim.AdamW, lr=1e-3), net.finish_gradient_synchronization
        for step in range(2):
            with CollectiveLog() as log:
                nn.functional.cross_entropy(net(shard(X, r, w)), shard(Y, r, w)).backward()
                sync()
                opt.step()
            opt.zero_grad()
        out[name] = {"state": state_bytes(opt), "calls": log.counts(), "sent": log.bytes_sent(),
                     "params": torch.cat([p.detach().flatten() for p in model.parameters()])}
    ours, theirs = out
    out["gap"] = (out[ours].pop("params") - out[theirs].pop("params")).abs().max().item()
    return out

both = dpcourse.launch(zero_side_by_side, WORLD, timeout=120)
names = [name for name in both[0] if name != "gap"]
for name in names:
    states = [rank[name]["state"] / MB for rank in both]
    print(f"{name}: state per rank {', '.join(f'{s:.2f}' for s in states)} MB (largest / smallest = "
          f"{max(states) / min(states):.2f}); one step: {both[0][name]['calls']}, "
          f"{both[0][name]['sent'] / MB:.1f} MB sent by rank 0")
ours, theirs = names
print(f"same parameters after 2 steps: max difference {both[0]['gap']:.1e}; ZeroRedundancyOptimizer + DDP sent "
      f"{both[0][theirs]['sent'] / both[0][ours]['sent']:.2f}x our bytes")

# %% [markdown]
# Ours is balanced to the element (the ratio above is 1.00). Theirs can only be as balanced as the
# parameter sizes allow: this model's 1 M-element matrices cannot be cut, so the ratio printed above
# is what whole-parameter partitioning gives here. Ours also moves fewer bytes: a reduce-scatter plus
# an all-gather, 2(N−1)/N · Ψ values per rank, against DDP's all-reduce plus one broadcast per
# parameter, 3(N−1)/N · Ψ.
#
# ## 3. ZeRO-2 and ZeRO-3 with FSDP2
#
# Once each rank steps only its shard, it needs only its shard of the **gradient**: the
# reduce-scatter can run per layer during backward, and each layer's full gradient freed right away
# (ZeRO-2). Going further, a rank need not keep the other ranks' **parameters** either: it can
# all-gather a layer's parameters just before that layer's forward, and free them after (ZeRO-3).
# Backward needs them again, so ZeRO-3 all-gathers each layer **twice** per step.
#
# PyTorch's FSDP2 does both. `fully_shard(module)` turns a module's parameters into `DTensor`s
# holding 1/N of each parameter; applied to each layer and then to the whole model, every layer
# becomes a unit that is gathered and reduce-scattered on its own. `reshard_after_forward=True`
# frees the gathered parameters after forward (ZeRO-3); `False` keeps them until the end of backward:
# FSDP's `SHARD_GRAD_OP`, the ZeRO-2 strategy (one all-gather per step, parameters sharded only between steps).
#
# A probe: the bytes of parameters each rank holds **right after forward**, when activations are at
# their peak — the moment that decides whether a step fits in memory.

# %%
def fsdp_model(reshard_after_forward, width=WIDTH, depth=DEPTH):
    torch.manual_seed(0)
    model = WideMLP(FEATURES, width, depth)
    for layer in model.net:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, reshard_after_forward=reshard_after_forward)
    fully_shard(model, reshard_after_forward=reshard_after_forward)
    return model

def held_parameter_bytes(model):
    """Bytes of parameters this rank holds now: a DTensor's local shard, or a whole (gathered) tensor."""
    return sum(parameter_bytes(layer) for layer in model.net if isinstance(layer, nn.Linear))

def strategy(name):
    """(model, optimizer, function to call after backward) for one strategy, on this rank."""
    torch.manual_seed(0)
    if name == "DDP":
        net = BucketedDDP(WideMLP(FEATURES, WIDTH, DEPTH), bucket_mb=25)
        return net, torch.optim.AdamW(net.module.parameters(), lr=1e-3), net.finish_gradient_synchronization
    if name == "ZeRO-1":
        net = WideMLP(FEATURES, WIDTH, DEPTH)
        return net, ZeroOptimizer(net.parameters(), torch.optim.AdamW, lr=1e-3), lambda: None
    net = fsdp_model(reshard_after_forward=(name == "ZeRO-3"))
    return net, torch.optim.AdamW(net.parameters(), lr=1e-3), lambda: None

def memory_and_collectives(name):
    """Per-rank bytes and the collectives of one step (the second) of strategy ``name``, on this rank."""
    r, w = dpcourse.rank(), dpcourse.world_size()
    net, opt, sync = strategy(name)
    for step in range(2):               # the second step is the one reported (state exists by then)
        with CollectiveLog() as log:
            out = net(shard(X, r, w))
            after_forward = held_parameter_bytes(getattr(net, "module", net))
            nn.functional.cross_entropy(out, shard(Y, r, w)).backward()
            sync()
            opt.step()
        model = getattr(net, "module", net)
        grads = gradient_bytes(model)
        opt.zero_grad()
    return {"at rest": {"parameters": parameter_bytes(model), "gradients": grads, "optimizer state": state_bytes(opt)},
            "after forward": after_forward, "calls": log.counts(), "sent": log.bytes_sent(),
            "params": torch.cat([(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().flatten()
                                 for p in model.parameters()])}

def all_strategies():
    out = {name: memory_and_collectives(name) for name in STAGES}
    ddp = out["DDP"]["params"]
    for m in out.values():   # compare here: 13 MB of parameters per strategy need not travel back
        m["gap"] = (m.pop("params") - ddp).abs().max().item()
    return out

measured = dpcourse.launch(all_strategies, WORLD, timeout=120)[0]
for name, m in measured.items():
    print(f"{name:7s} per rank between steps: " + ", ".join(f"{k} {v / MB:5.1f} MB" for k, v in m["at rest"].items())
          + f"; parameters held after forward {m['after forward'] / MB:5.1f} MB")
gap = max(m["gap"] for m in measured.values())
print(f"after 2 AdamW steps all four strategies agree with DDP within {gap:.1e} (float32 rounding)")
assert gap < 1e-5

# %%
fig = plot_memory({name: {**m["at rest"], "gathered parameters (peak, after forward)":
                          max(m["after forward"] - m["at rest"]["parameters"], 0)} for name, m in measured.items()},
                  title=f"Per-rank memory, {WORLD} ranks, float32 AdamW (measured)")
plt.show()

# %% [markdown]
# Read it per column. DDP holds everything; ZeRO-1 keeps 1/N of the optimizer state; FSDP's ZeRO-2
# also keeps 1/N of the gradients, and between steps of the parameters, but right after forward it holds
# all of them again (the top part of its bar); ZeRO-3 holds only its shard plus, for a moment,
# one layer. (FSDP gradients are its sharded `.grad`s; FSDP also keeps a few small buffers we do not
# count.)
#
# Now the price. The collectives each strategy called in one step, and the bytes each rank sent
# (the least a ring must send; `dpcourse.commlog`):

# %%
units = DEPTH + 1
param_bytes = PSI * 4
for name, m in measured.items():
    predicted = sum(wire_bytes(op, nbytes, WORLD) for op, nbytes in step_traffic(name, param_bytes, WORLD, units))
    print(f"{name:7s} {str(m['calls']):45s} {m['sent'] / MB:5.1f} MB sent per rank "
          f"({m['sent'] / measured['DDP']['sent']:.2f}x DDP; the table below predicts {predicted / MB:.1f} MB)")
    assert abs(m["sent"] - predicted) < 0.01 * predicted
assert measured["ZeRO-3"]["calls"]["all-gather"] == 2 * units

# %% [markdown]
# DDP, ZeRO-1 and ZeRO-2 send the same bytes: 2(N−1)/N · Ψ values, whether as one all-reduce or as a
# reduce-scatter plus an all-gather. ZeRO-3 sends **1.5×** as much, because it all-gathers every
# layer's parameters twice (the counts: forward and backward each gather every layer once).
#
# **A timeline of one ZeRO-3 step.** Hooks on each layer time its forward and backward; the
# collective log times each all-gather and reduce-scatter. FSDP2 on gloo issues them synchronously,
# so on a CPU nothing overlaps; on GPUs FSDP runs them on their own CUDA streams and prefetches the
# next layer's all-gather while the current layer computes.

# %%
def one_step_timeline():
    r, w = dpcourse.rank(), dpcourse.world_size()
    net, opt, _ = strategy("ZeRO-3")
    marks = []                                         # (time, what, layer)

    def watch(i, layer):
        def after_forward(module, args, out):
            marks.append((time.perf_counter(), "forward end", i))
            out.register_hook(lambda grad: marks.append((time.perf_counter(), "backward start", i)))
        layer.register_forward_pre_hook(lambda module, args: marks.append((time.perf_counter(), "forward start", i)))
        layer.register_forward_hook(after_forward)

    for i, layer in enumerate(m for m in net.net if isinstance(m, nn.Linear)):
        watch(i, layer)
    for step in range(2):                              # step 0 warms up; step 1 is drawn
        marks.clear()
        dist.barrier()                                 # start together: the first all-gather would wait for the other rank
        start = time.perf_counter()
        with CollectiveLog() as log:
            nn.functional.cross_entropy(net(shard(X, r, w)), shard(Y, r, w)).backward()
            backward_done = time.perf_counter()
            opt.step()
        end = time.perf_counter()
        opt.zero_grad()
    ms = lambda t: 1e3 * (t - start)
    bars = [("collectives", c.op, "", ms(c.start), ms(c.end)) for c in log.calls]
    starts = {i: t for t, what, i in marks if what == "forward start"}
    bars += [("compute", "forward", f"F{i}", ms(starts[i]), ms(t)) for t, what, i in marks if what == "forward end"]
    for t, what, i in marks:                           # a layer's backward lasts until the next collective or layer
        if what == "backward start":
            later = [c.start for c in log.calls if c.start > t] + [u for u, v, _ in marks if u > t] + [backward_done]
            bars.append(("compute", "backward", f"B{i}", ms(t), ms(min(later))))
    bars.append(("compute", "optimizer", "step", ms(backward_done), ms(end)))
    return bars, log.counts()

bars, counts = dpcourse.launch(one_step_timeline, WORLD)[0]
fig = plot_step_timeline(bars, f"One ZeRO-3 (FSDP2) step on rank 0 of {WORLD}: F = forward, B = backward of layer i")
plt.show()
print(f"collectives in this step: {counts}")

# %% [markdown]
# Left to right: before each layer's forward (F0…F4) an all-gather fetches its parameters; backward
# runs the layers in reverse (B4…B0), each preceded by a second all-gather and followed by the
# reduce-scatter of its gradient; the optimizer then steps the shards. Every collective waits here for
# the other rank as well, so its bar includes that rank's lag.
#
# ## 4. The cost, measured and modelled
#
# On this machine the ranks talk over loopback, which is nearly free and says nothing about a
# cluster. So we run the four strategies on **a simulated link** (`dpcourse.network`, the course's
# process group that runs every collective on gloo and completes it only when a link of the given
# latency and bandwidth would have: results stay bit-identical). We pick a slow one, 1 Gb/s Ethernet,
# so that communication is not negligible next to this CPU's slow compute, just as it is not
# negligible next to a GPU's fast compute on a fast link. Each rank's counters (`dpcourse.network.stats()`) give the
# bytes it sent and the seconds its outgoing wire was busy. The four strategies run in one launch, in
# turns, so that a busy moment of the machine does not land on one strategy only.

# %%
import dpcourse.network
from dpcourse.costmodel import AlphaBeta

LINK = dpcourse.links()["1GbE"]
print(LINK)

def step_times(rounds=2, steps=STEPS):
    r, w = dpcourse.rank(), dpcourse.world_size()
    built = {name: strategy(name) for name in STAGES}
    times = {name: [] for name in STAGES}
    wire = {}
    for round_ in range(rounds):
        for name, (net, opt, sync) in built.items():
            for step in range(0 if round_ == 0 else 1, steps + 1):   # step 0 of the first round is a warm-up
                dist.barrier()
                dpcourse.network.reset_stats()
                start = time.perf_counter()
                nn.functional.cross_entropy(net(shard(X, r, w)), shard(Y, r, w)).backward()
                sync()
                opt.step()
                opt.zero_grad()
                if step:
                    times[name].append(time.perf_counter() - start)
                    wire[name] = dpcourse.network.stats()
    return {name: (1e3 * float(np.median(t)), wire[name]) for name, t in times.items()}

def one_process_step(steps=STEPS):
    torch.manual_seed(0)
    model = WideMLP(FEATURES, WIDTH, DEPTH)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        nn.functional.cross_entropy(model(shard(X, 0, WORLD)), shard(Y, 0, WORLD)).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times[1:]))

compute_ms = dpcourse.launch(one_process_step, 1)[0]     # one rank's share of the batch, no communication
on_link = dpcourse.launch(step_times, WORLD, network=LINK, timeout=180)[0]
alpha, beta = LINK.latency, 1 / LINK.bandwidth
print(f"one rank's compute alone ({GLOBAL_BATCH // WORLD} samples, no communication): {compute_ms:.0f} ms per step")
step_ms, predicted_ms = {}, {}
for name in STAGES:
    ms, wire = on_link[name]
    step_ms[name] = ms
    predicted_ms[name] = 1e3 * predict_seconds(step_traffic(name, param_bytes, WORLD, units), WORLD, alpha, beta)
    print(f"{name:7s} {ms:6.0f} ms per step; sent {wire['bytes_sent'] / MB:5.1f} MB per rank, wire busy "
          f"{1e3 * wire['wire_s']:5.0f} ms (α-β predicts {predicted_ms[name]:5.0f} ms); {wire['ops']}")
ddp_check = 1e3 * AlphaBeta(alpha, beta).predict("ring", param_bytes, WORLD)   # lesson 04's model, one all-reduce
print(f"lesson 04's α-β model for one ring all-reduce of all {param_bytes / MB:.1f} MB: {ddp_check:.0f} ms")
fig = plot_bars(step_ms, "ms per training step", f"{WORLD} ranks on simulated {LINK.name}, {PSI / 1e6:.1f} M parameters",
                fmt="{:.0f}")
plt.show()

# %%
extra = step_ms["ZeRO-3"] - step_ms["ZeRO-2"]
print(f"ZeRO-3 - ZeRO-2: {extra:+.0f} ms per step measured; the extra all-gather alone is "
      f"{predicted_ms['ZeRO-3'] - predicted_ms['ZeRO-2']:.0f} ms on this link")
for name in STAGES:
    print(f"{name:7s} step - compute = {step_ms[name] - compute_ms:5.0f} ms; "
          f"communication on the wire {predicted_ms[name]:5.0f} ms")

# %% [markdown]
# How to read this (numbers from this run): the wire-busy column is what the link charged, and the
# α-β model, with the link's own latency and bandwidth, predicts it from nothing but the bytes and
# messages of each strategy: DDP, ZeRO-1 and ZeRO-2 put the same bytes on the wire, ZeRO-3 half as
# much again. The step time is compute plus whatever communication the step had to wait for, plus
# noise: the compute was measured in another launch, and other work on the machine slows both. Our
# `BucketedDDP` starts its bucket all-reduces during backward, so part of its wire time can hide
# behind the compute; our ZeRO-1 and FSDP2 on CPU wait for each collective, so theirs cannot. And the
# simulated link only ever adds waiting: a collective ends when both the link's time has passed and
# gloo has really finished it underneath, and gloo's CPU reduce-scatter is not a ring (on this kind of
# machine it can take longer than its all-reduce of the same tensor). On GPUs, NCCL runs both as
# rings, and FSDP2 runs its collectives on separate CUDA streams and prefetches the next layer's
# all-gather.
#
# **When does ZeRO-3's extra all-gather cost more than it saves?** It saves memory: (N−1)/N of the
# parameters. It costs one all-gather of the parameters per step, about (N−1)/N · 2Ψ · β seconds for
# bf16 weights plus α per message. On a GPU, FSDP hides that all-gather behind compute by prefetching
# the next layer's parameters; it stays hidden as long as gathering a layer takes less time than
# computing it. Backward of a layer with P parameters on B samples (tokens) costs about 4·B·P
# floating-point operations, the all-gather (N−1)/N · 2P · β seconds, so the layer size cancels:
#
# $$\text{hidden} \iff \frac{4 B P}{F} > \frac{N-1}{N}\, 2 P \beta \iff B > B^* = \frac{N-1}{N}\cdot\frac{F\,\beta}{2}$$
#
# where F is the compute rate (FLOP/s). Below B* samples per rank — small batches, a fast GPU, a slow
# link — the extra all-gather is exposed and ZeRO-3 is slower than ZeRO-2 by about its full duration;
# it then costs more than it saves unless the memory is needed to fit the model at all. And with many
# small units, the α term ((N−1)·α per all-gather, twice per unit) dominates even when bandwidth does
# not. B* for this machine on the simulated link (its measured compute rate), and for GPUs on the course's link presets:

# %%
flops = 6 * PSI * (GLOBAL_BATCH // WORLD) / (compute_ms / 1e3)   # forward + backward ≈ 6 flops per parameter and sample

def b_star(f, beta, n=WORLD, bytes_per_parameter=2):
    """Samples per rank above which a layer's all-gather takes less time than its backward compute."""
    return (n - 1) / n * bytes_per_parameter * f * beta / 4

print(f"measured compute rate here F ≈ {flops / 1e9:.1f} GFLOP/s; on the simulated {LINK.name} with this run's "
      f"float32 weights B* = {b_star(flops, beta, bytes_per_parameter=4):,.0f} samples per rank "
      f"(this run used {GLOBAL_BATCH // WORLD})")
GPU_FLOPS = 400e12   # assumed: what a training step achieves on an H100 in bf16, not measured here
for preset in ("NVLink", "InfiniBand NDR", "25GbE"):
    link = dpcourse.links()[preset]
    print(f"an H100 (assumed {GPU_FLOPS / 1e12:.0f} TFLOP/s) on {link.name:22s}: B* ≈ "
          f"{b_star(GPU_FLOPS, 1 / link.bandwidth):9,.0f} samples (tokens) per rank")

# %% [markdown]
# Within one GPU node (NVLink) the extra all-gather hides behind a few hundred tokens per rank; across
# a 25 Gb/s Ethernet link it needs tens of thousands. That is why large jobs run ZeRO-3 (FSDP) inside a
# node and plain data parallelism or ZeRO-1/2 across nodes ("hybrid sharding",
# `fully_shard(..., mesh=2-D device mesh)`).
#
# ## 5. Checkpoints of a sharded model
#
# No rank holds the whole model, so no rank can `torch.save` it. `torch.distributed.checkpoint`
# (DCP) writes **one file per rank** with its shards, and a metadata file that says which piece of
# which tensor lies where. Loading asks for the pieces the *new* sharding needs, so a checkpoint
# saved on 2 ranks loads on 4. The test: 3 steps on 2 ranks, save; load on 4 ranks, 3 more steps;
# compare with 6 steps in one process.

# %%
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

CKPT_WIDTH, CKPT_DEPTH = 256, 3   # a smaller model, so that four ranks on two cores stay quick
print(f"checkpointed model: WideMLP({FEATURES}, {CKPT_WIDTH}, {CKPT_DEPTH}), "
      f"{count_parameters(WideMLP(FEATURES, CKPT_WIDTH, CKPT_DEPTH)):,} parameters")

def fsdp_train(path, phase, steps=range(0), compare_with=None):
    r, w = dpcourse.rank(), dpcourse.world_size()
    model = fsdp_model(reshard_after_forward=True, width=CKPT_WIDTH, depth=CKPT_DEPTH)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    if phase == "resume":
        model_state, optim_state = get_state_dict(model, opt)
        dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=path)
        set_state_dict(model, opt, model_state_dict=model_state, optim_state_dict=optim_state)
    for step in steps:
        x, y = synthetic_classification(GLOBAL_BATCH, features=FEATURES, seed=10 + step).tensors
        nn.functional.cross_entropy(model(shard(x, r, w)), shard(y, r, w)).backward()
        opt.step()
        opt.zero_grad()
    if phase == "save":
        model_state, optim_state = get_state_dict(model, opt)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=path)
    params = torch.cat([p.full_tensor().detach().flatten() for p in model.parameters()])
    return None if compare_with is None else (params - compare_with).abs().max().item()

def uninterrupted(steps):
    torch.manual_seed(0)
    model = WideMLP(FEATURES, CKPT_WIDTH, CKPT_DEPTH)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    for step in steps:
        x, y = synthetic_classification(GLOBAL_BATCH, features=FEATURES, seed=10 + step).tensors
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return torch.cat([p.detach().flatten() for p in model.parameters()])

folder = Path(tempfile.mkdtemp(prefix="dpcourse-checkpoint-"))
dpcourse.launch(fsdp_train, 2, str(folder), "save", range(3), timeout=120)
print("written:", sorted(p.name for p in folder.iterdir()))
straight = dpcourse.launch(uninterrupted, 1, range(6))[0]
gap = max(dpcourse.launch(fsdp_train, 4, str(folder), "resume", range(3, 6), straight, timeout=120))
print(f"saved on 2 ranks, resumed on 4: every rank's parameters equal 6 uninterrupted steps within {gap:.1e}")
assert gap < 1e-5
shutil.rmtree(folder)                          # the checkpoint was only for this demonstration

# %% [markdown]
# One `.distcp` file per saving rank plus `.metadata`; four ranks read the pieces they need and
# continue the same training to float32 rounding. (Our hand-written `ZeroOptimizer` saves each rank's
# shard with `state_dict()` and loads it back on the same number of ranks only; resharding is what
# DCP adds.)
#
# ## Summary
#
# * Training memory = parameters + gradients + optimizer state + activations. With mixed-precision
#   Adam that is 2Ψ + 2Ψ + 12Ψ bytes before activations: the optimizer state is the biggest part.
# * ZeRO-1 shards the optimizer state: reduce-scatter the gradients, step your shard, all-gather
#   the parameters. Same training, same bytes on the wire as DDP, state per rank 1/N.
# * ZeRO-2 also shards gradients, ZeRO-3 (FSDP) parameters too, at the price of a second
#   all-gather per step (1.5× DDP's bytes), which hides behind compute only above a batch of B* per rank.
# * Activations are never sharded by ZeRO; sharded checkpoints (DCP) reload on any number of ranks.
#
# Next: the exercise `exercises/09_zero.ipynb`, where you write the ZeRO-1 wrapper yourself.

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids
lesson_aids("09")
