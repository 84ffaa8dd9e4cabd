# %% [markdown]
# # Lesson 06 — `nn.DataParallel`: one process, many devices
#
# Lesson 05 built data parallelism from processes: one process per device, each with its own copy of
# the model, gradients averaged with an all-reduce. PyTorch also ships an older design that needs no
# processes at all: wrap the model in `nn.DataParallel` and a *single* Python process drives every GPU.
#
# **The question of this lesson:** what does `DataParallel` actually do in one training step, and why
# does the PyTorch documentation tell us to use `DistributedDataParallel` instead?
#
# We take the wrapper apart into its four phases — **replicate, scatter, parallel_apply, gather** —
# run them one at a time, then run the real wrapper, and finally measure the three costs that make
# it lose to DDP: the GIL, re-replication every step, and an overloaded first GPU.

# %%
import time

import matplotlib.pyplot as plt
import torch
from torch import nn

from dpcourse.dataparallel import cuda_devices, forward_step_by_step, gpu0_extra_bytes_estimate, threaded_apply
from dpcourse.models import WideMLP, build_model, count_parameters
from dpcourse.plots import plot_bars

GPUS = cuda_devices()
ALL_THREADS = torch.get_num_threads()
print(f"torch {torch.__version__}; GPUs visible: {len(GPUS)}; CPU threads: {torch.get_num_threads()}")

# Knobs: turn these up on a bigger machine.
BATCH = 256          # samples per step for the timing experiments
REPEATS = 7          # timed repeats (we report the median)
torch.manual_seed(0);

# %% [markdown]
# ## The four phases of one forward pass
#
# For a batch `x` and devices `0 … n-1`, `DataParallel.forward` does:
#
# 1. **scatter** — cut `x` along the batch dimension into `n` chunks and copy chunk `i` to device `i`;
# 2. **replicate** — copy the model's parameters and buffers from device 0 to every other device
#    (a fresh copy *every call*, because the optimizer changed the parameters since the last one);
# 3. **parallel_apply** — run replica `i` on chunk `i`, each in its own Python **thread**;
# 4. **gather** — copy every output back to device 0 and concatenate them.
#
# The loss is then computed on device 0, and `backward()` runs these steps in reverse: gradients of
# the outputs are scattered, each replica computes its gradients, and the replicas' parameter
# gradients are **summed back into the original model on device 0**. The optimizer only ever sees
# the original model.
#
# `torch.nn.parallel` exposes all four primitives. They only work on GPUs, so on a machine without
# two GPUs `forward_step_by_step` runs CPU stand-ins that do the same work (a deep copy per replica,
# `chunk`, one thread per replica, `cat`). The trace says which kind ran.

# %%
model = build_model("digits-cnn", seed=0)
x = torch.rand(64, 1, 8, 8)
if len(GPUS) >= 2:
    model, x = model.cuda(0), x.cuda(0)

out, trace = forward_step_by_step(model, x)
print(f"primitives: {trace.primitives}; devices: {trace.devices}; chunk sizes: {trace.chunk_sizes}")
for phase, seconds in trace.seconds.items():
    print(f"  {phase:<15} {1e3 * seconds:8.3f} ms")

# %% [markdown]
# The output of the four phases must be the output of the plain model on the whole batch: every
# replica holds the same weights, each sample goes through exactly one replica, and `gather` puts the
# chunks back in order.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    reference = model(x)
    split_output, _ = forward_step_by_step(model, x)
difference = (split_output - reference).abs().max().item()
assert split_output.shape == reference.shape and difference < 1e-5
print("four phases == one model on the whole batch: OK")

# %% [markdown]
# ## Where the gradients go
#
# The backward pass must leave in the original model the gradient of the loss over the *whole*
# batch. With a loss that is a mean over the batch, chunk `i` of size `b_i` contributes its own mean
# loss weighted by `b_i / B`, and the gradient of a sum is the sum of the gradients. So: give each
# replica its weighted loss, let each compute its gradients, and **add** them. On GPUs the adding is
# done by the backward of `replicate` (a "reduce-add" onto device 0). Here we do it by hand with two
# CPU replicas and compare with one model on the whole batch.

# %%
import copy

y = torch.randint(0, 10, (64,))
loss_fn = nn.CrossEntropyLoss()
cpu_model = build_model("digits-cnn", seed=0)
x_cpu = x.cpu()

whole = copy.deepcopy(cpu_model)
loss_fn(whole(x_cpu), y).backward()

replicas = [copy.deepcopy(cpu_model) for _ in range(2)]
for replica, xc, yc in zip(replicas, x_cpu.chunk(2), y.chunk(2)):
    (loss_fn(replica(xc), yc) * len(yc) / len(y)).backward()
summed = [sum(r.get_parameter(name).grad for r in replicas) for name, _ in cpu_model.named_parameters()]
grad_difference = max((s - p.grad).abs().max().item() for s, p in zip(summed, whole.parameters()))
print(f"max |sum of replica gradients - whole-batch gradient| = {grad_difference:.1e}")
assert grad_difference < 1e-5

# %% [markdown]
# ## The real wrapper
#
# Now `nn.DataParallel` itself. Watch three things: which devices it found, what its forward returns,
# and what happened to the names in `state_dict()`.

# %%
# NBVAL_CHECK_OUTPUT
dp = nn.DataParallel(build_model("digits-cnn", seed=0).to("cuda:0" if GPUS else "cpu"))
with torch.no_grad():
    dp_out = dp(x)
print("device_ids:", dp.device_ids if not GPUS else f"{len(dp.device_ids)} GPU(s)")
print("output shape:", tuple(dp_out.shape))
print("first state_dict key:", next(iter(dp.state_dict())))
print("first key of the wrapped module:", next(iter(dp.module.state_dict())))

# %% [markdown]
# **What happened depends on the hardware:**
#
# * **No GPU (a CPU-only machine):** `device_ids` is empty and `forward` simply calls the wrapped
#   module. There is no warning, no splitting and no thread: the wrapper silently does nothing.
# * **One GPU:** the same shortcut — with a single device there is nothing to split.
# * **Two or more GPUs:** the four phases run on every call.
#
# In every case the parameter names gain a `module.` prefix. A checkpoint saved from the wrapper
# (`dp.state_dict()`) will not load into a plain model without stripping it; save
# `dp.module.state_dict()` instead. The same prefix appears with `DistributedDataParallel`.
#
# ## Measured on two or more GPUs: speedup and GPU-0 memory
#
# The next cell runs only where at least two GPUs are visible. It times training steps of a wide MLP
# on one GPU and under `DataParallel` on all of them, and reads the peak memory of every GPU. Expect a
# speedup below the number of GPUs (the phases above cost time on every step) and more memory on
# GPU 0 than on the others.

# %%
def train_steps(net, params, steps, x, y):
    opt = torch.optim.SGD(params, lr=0.01)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    torch.cuda.synchronize()


if len(GPUS) >= 2:
    xg, yg = torch.randn(4 * BATCH, 256, device="cuda:0"), torch.randint(0, 10, (4 * BATCH,), device="cuda:0")
    timings, memory = {}, {}
    for label in ("1 GPU", f"DataParallel, {len(GPUS)} GPUs"):
        torch.manual_seed(0)
        base = WideMLP(256, 4096, 4).cuda(0)
        net = base if label == "1 GPU" else nn.DataParallel(base)
        train_steps(net, base.parameters(), 3, xg, yg)  # warm-up
        for d in GPUS:
            torch.cuda.reset_peak_memory_stats(d)
        start = time.perf_counter()
        train_steps(net, base.parameters(), 20, xg, yg)
        timings[label] = 20 * len(yg) / (time.perf_counter() - start)
        memory[label] = [torch.cuda.max_memory_allocated(d) / 2**20 for d in GPUS]
    for label in timings:
        print(f"{label:<24} {timings[label]:>10,.0f} samples/s   peak MiB per GPU: "
              + ", ".join(f"{m:,.0f}" for m in memory[label]))
    print(f"speedup of DataParallel over one GPU: {list(timings.values())[1] / list(timings.values())[0]:.2f}x")
else:
    print(f"skipped: this machine has {len(GPUS)} GPU(s); the measurement needs at least 2.")

# %% [markdown]
# ## Why PyTorch recommends DDP instead
#
# ### 1. One process, one GIL
#
# `parallel_apply` runs the replicas in Python threads of one process. Threads share the global
# interpreter lock (GIL): only one of them can execute Python code at a time. Heavy tensor kernels
# release the GIL while they compute, so threads overlap well when each layer is a big matrix
# multiply, and badly when the model spends its time in Python (many small layers, small batches).
#
# We can measure this on a CPU: run two replicas one after another, then in two threads
# (`threaded_apply`, the same threading `parallel_apply` uses), once for a model of a few big layers
# (time spent in matrix multiplies, which release the GIL) and once for a module whose forward does
# its work in plain Python (which holds the GIL). Each replica gets one intra-op thread, so two
# threads can at best use two cores.
#
# **What to look for:** on an idle machine with two free cores, the big-layer model approaches 2×
# and the Python-bound one stays near 1× — its threads take turns. The cell prints the machine's
# load average first. If it is well above the number of cores, other processes are competing for
# them: then the ratios measure the scheduler more than the GIL, can land anywhere around 1×, and
# are worth re-running on an idle machine before drawing a conclusion.

# %%
import os


class PythonBound(nn.Module):
    """A 'model' whose forward is a Python loop over numbers: it holds the GIL the whole time."""

    def forward(self, x):
        total = 0.0
        for value in x.flatten().tolist():
            total += value * value
        return x * 0 + total


def median_seconds(fn, repeats=REPEATS):
    fn()  # warm-up: first calls pay for allocations and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


print(f"load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
workloads = {
    "few big layers": (WideMLP(256, 1024, 3), torch.randn(BATCH, 256)),
    "Python-bound": (PythonBound(), torch.randn(256, 256)),
}
gain = {}
torch.set_num_threads(1)
with torch.no_grad():
    for label, (net, batch) in workloads.items():
        pair, inputs = [net, copy.deepcopy(net)], [batch, batch.clone()]
        one_after_other = median_seconds(lambda: [m(b) for m, b in zip(pair, inputs)])
        in_threads = median_seconds(lambda: threaded_apply(pair, inputs))
        gain[label] = one_after_other / in_threads
        print(f"{label:<16} sequential {1e3 * one_after_other:7.2f} ms, two threads {1e3 * in_threads:7.2f} ms,"
              f" gain {gain[label]:.2f}x")
torch.set_num_threads(ALL_THREADS)

plot_bars(gain, ylabel="time sequential / time in 2 threads",
          title="Two replicas in two threads of one process", fmt="{:.2f}x")
plt.show()

# %% [markdown]
# With DDP each replica has its own process and its own interpreter: no lock is shared, and the
# Python overhead of one replica never waits for another's.
#
# ### 2. Replication on every step
#
# `DataParallel` copies the model to every device on **every** forward call, because only the
# original on device 0 is updated by the optimizer. DDP copies the model once, at construction, and
# afterwards keeps the replicas identical by applying identical averaged gradients. The trace of the
# step-by-step forward above timed our `replicate` phase; here it is against the forward work of the
# same step, for a model of a few million parameters.

# %%
big = WideMLP(256, 1024, 4)
xb = torch.randn(BATCH, 256)
if len(GPUS) >= 2:
    big, xb = big.cuda(0), xb.cuda(0)
traces = []
with torch.no_grad():
    for _ in range(REPEATS):
        traces.append(forward_step_by_step(big, xb)[1])
phase_ms = {k: 1e3 * sorted(t.seconds[k] for t in traces)[len(traces) // 2] for k in traces[0].seconds}
print(f"{count_parameters(big):,} parameters, batch {BATCH}, {traces[0].primitives} (median of {REPEATS})")
for phase, ms in phase_ms.items():
    print(f"  {phase:<15} {ms:8.2f} ms")
print(f"replicate / parallel_apply: {phase_ms['replicate'] / phase_ms['parallel_apply']:.2f}")

# %% [markdown]
# On the CPU the "replication" is a deep copy in memory; on GPUs it is a broadcast over PCIe or
# NVLink. Either way it is paid once per step by `DataParallel` and once per run by DDP, and it
# grows with the parameter count while the forward work grows with the batch. The smaller the batch
# per device, the larger its share.
#
# ### 3. An overloaded first GPU
#
# Device 0 is special under `DataParallel`: it receives the whole batch before scattering, the whole
# output after gathering, computes the whole loss, holds the summed gradients and all of the
# optimizer state. The other devices hold only their replica and their chunk's activations. Under DDP
# every rank does the same work with the same memory.
#
# Below is an **estimate** (computed from tensor sizes, not measured) of the extra memory on GPU 0
# for a wide MLP trained with SGD and momentum. Where two GPUs are present, the measurement cell
# above shows the real peak memory of every GPU.

# %%
wide = WideMLP(256, 2048, 3)
estimate = gpu0_extra_bytes_estimate(wide, torch.randn(4 * BATCH, 256), output_features=10, optimizer_states=1)
print(f"ESTIMATE of the extra memory on GPU 0 ({count_parameters(wide):,} parameters, batch {4 * BATCH}):")
for part, n_bytes in estimate.items():
    print(f"  {part:<30} {n_bytes / 2**20:8.1f} MiB")

# %% [markdown]
# Most of the extra is proportional to the parameter count: gradients and optimizer state live only
# on GPU 0. With Adam (two state tensors per parameter) it grows further. A model that just fits on
# one GPU under DDP may not fit on GPU 0 under `DataParallel`.
#
# ### In one table
#
# | | `nn.DataParallel` | `DistributedDataParallel` |
# |---|---|---|
# | processes | one, one thread per device | one per device |
# | model copies | re-made every step | made once, kept equal by averaged gradients |
# | gradient combination | reduce-add onto device 0 | all-reduce, overlapping backward |
# | device 0 | holds batch, outputs, loss, optimizer | same work as every other rank |
# | machines | one | one or many |
# | code change | one line | process group + sampler + launcher |
#
# Its one advantage is that one line. Lesson 07 pays the price of the second column and gets
# everything else in return.
#
# ## Check yourself

# %%
# NBVAL_CHECK_OUTPUT
assert difference < 1e-5, "the four phases must reproduce the whole-batch output"
assert grad_difference < 1e-5, "the summed replica gradients must equal the whole-batch gradient"
assert next(iter(dp.state_dict())).startswith("module."), "DataParallel prefixes parameter names"
assert set(gain) == {"few big layers", "Python-bound"} and all(g > 0 for g in gain.values())
assert estimate["total"] > estimate["gradients of the master copy"] > 0
print("lesson 06 checks passed")

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids

lesson_aids("06")
