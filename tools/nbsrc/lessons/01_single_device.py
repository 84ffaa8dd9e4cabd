# %% [markdown]
# # Lesson 01 — One device, measured
#
# Before we spread training over several workers we need to know what one worker does, and how
# fast. Every speedup in this course is a ratio, and a ratio needs a baseline that was measured,
# not guessed. This lesson asks three questions:
#
# 1. What does a clean training loop look like, and does it learn?
# 2. How many samples per second does it process, and where inside one step does the time go?
# 3. How does the batch size change both the speed and the learning?
#
# At the end the notebook prints the **baseline numbers** the later lessons compare against.
# They are this machine's numbers, measured by this run: expect yours to differ.

# %%
import os

import matplotlib.pyplot as plt
import torch

from dpcourse.data import digits_split, synthetic_classification
from dpcourse.models import build_model, count_parameters
from dpcourse.plots import plot_bars, plot_history, plot_lines, plot_phases
from dpcourse.train import evaluate, num_threads, pick_device, throughput, time_step_phases, train

DEVICE = pick_device()            # the GPU when there is one, else the CPU
ALL_THREADS = torch.get_num_threads()
print(f"torch {torch.__version__}, device: {DEVICE}, intra-op threads available: {ALL_THREADS}")
torch.set_num_threads(1)          # one thread unless a cell says otherwise (see below)

# Knobs: turn these up on a bigger machine.
EPOCHS = 6                  # epochs for the learning curves
BATCH = 128                 # the batch size of the baseline
STEPS = 12                  # timed steps per throughput measurement
SYNTH_FEATURES = 256        # input size of the synthetic timing workload
torch.manual_seed(0);

# %% [markdown]
# One choice up front: this notebook computes with **one CPU thread** except where it measures
# "all threads" on purpose. One thread is what each worker of a data-parallel run will use later,
# and its timings stay steadier when other programs share the machine.
#
# ## The data
#
# Two workloads ship with the course, so nothing is downloaded:
#
# * the **8×8 handwritten digits** (1,797 small greyscale images, 10 classes): real data, small
#   enough that a learning curve takes seconds;
# * a **synthetic classification** task (random inputs labelled by a fixed random linear
#   "teacher"): any size you like, for timing experiments where only the arithmetic matters.

# %%
train_set, test_set = digits_split()
x_train, y_train = train_set.tensors
print(f"train: {tuple(x_train.shape)}, test: {tuple(test_set.tensors[0].shape)}, labels 0..{y_train.max().item()}")

fig, axes = plt.subplots(1, 10, figsize=(10, 1.4))
for ax, image, label in zip(axes, x_train, y_train):
    ax.imshow(image[0], cmap="gray_r")
    ax.set_title(str(label.item()))
    ax.axis("off")
plt.show()

# %% [markdown]
# ## A training loop, written out once
#
# Strip away the bookkeeping and a training step has four parts. Keep these four names in mind;
# we will time each of them below, and later lessons will add a fifth (communication) between
# the backward pass and the optimizer.
#
# | phase | what happens |
# |---|---|
# | **data** | pick the next batch and move it to the device |
# | **forward** | compute the predictions and the loss |
# | **backward** | compute the gradient of the loss for every parameter |
# | **optimizer** | change the parameters using the gradients |
#
# Here is one epoch of it, by hand, on a small perceptron:

# %%
model = build_model("digits-mlp", seed=0)
loss_fn = torch.nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
for step, start in enumerate(range(0, len(order), 64)):
    idx = order[start:start + 64]
    x, y = x_train[idx], y_train[idx]           # data
    loss = loss_fn(model(x), y)                 # forward
    optimizer.zero_grad()
    loss.backward()                             # backward
    optimizer.step()                            # optimizer
    if step % 5 == 0:
        print(f"step {step:2d}  loss {loss.item():.3f}")

test_loss, test_acc = evaluate(model, test_set)
print(f"after one epoch: test loss {test_loss:.3f}, test accuracy {test_acc:.1%}")

# %% [markdown]
# `dpcourse.train.train` is exactly this loop plus bookkeeping: it reshuffles every epoch (with a
# seed, so a run can be repeated), records the loss of every step, evaluates on the test set after
# each epoch, and moves batches to the GPU when there is one. Let us train two models on the
# digits: the perceptron above and a small convolutional network.

# %%
runs = {}
for name in ("digits-mlp", "digits-cnn"):
    model = build_model(name, seed=0)
    runs[f"{name} ({count_parameters(model):,} parameters)"] = train(
        model, train_set, epochs=EPOCHS, batch_size=64, lr=0.05, test_set=test_set, device=DEVICE)

for label, h in runs.items():
    print(f"{label}: final test accuracy {h.test_accuracy[-1]:.1%}, "
          f"{h.samples_per_second:,.0f} training samples/s")
mlp_run, cnn_run = runs.values()
print(f"the CNN processed {mlp_run.samples_per_second / cnn_run.samples_per_second:.0f} times fewer samples per second "
      f"than the perceptron, and ended {100 * (cnn_run.test_accuracy[-1] - mlp_run.test_accuracy[-1]):+.1f} "
      "percentage points in test accuracy")
plot_history(runs, title=f"digits, batch 64, {EPOCHS} epochs")
plt.show()

# %% [markdown]
# **What to look for.** Both losses fall steeply at first, then flatten; the step-to-step noise is
# the price of estimating the gradient from 64 samples instead of all of them. The convolutional
# net is far slower per sample (the cell prints by how much): it has far more arithmetic per image.
# The accuracy line is measured on images the model never trained on.
#
# ## Throughput: samples per second
#
# Throughput is the number to compare across setups: *training samples processed per second*,
# timing whole steps (data, forward, backward, optimizer) after a few warm-up steps. We measure
# it for two models at batch size `BATCH`:
#
# * `digits-cnn` on the digits (a small but compute-heavy model), and
# * `medium`, a wide MLP (4 hidden layers of 1,024 units) on the synthetic data, a stand-in for
#   "a bigger model".
#
# On the CPU, PyTorch splits big operations over several threads, so we measure both with one
# thread and with all of them. That pair matters later: a data-parallel run with two one-thread
# workers must be compared with **one process using both cores**, not only with one thread.

# %%
synthetic = synthetic_classification(n=4096, features=SYNTH_FEATURES, classes=10)
workloads = {"digits-cnn": train_set, "medium": synthetic}
for name in workloads:
    print(f"{name}: {count_parameters(build_model(name)):,} parameters")

baseline = {}
for name, data in workloads.items():
    for threads in sorted({1, ALL_THREADS}):
        with num_threads(threads):
            baseline[(name, threads)] = throughput(build_model(name, seed=0), data, batch_size=BATCH,
                                                   steps=STEPS, device=DEVICE)
        print(f"{name:10s} batch {BATCH}, {threads} thread(s): {baseline[(name, threads)]:10,.0f} samples/s")

plot_bars({f"{n}\n{t} thread(s)": v for (n, t), v in baseline.items()}, ylabel="training samples / s",
          title=f"Throughput at batch {BATCH} on {DEVICE}", log=True)
plt.show()

# %% [markdown]
# **Reading it.** Compare the two bars of each model: that ratio is what a second core buys
# *inside one process*. On a quiet 2-core machine expect it to be somewhere between 1× and 2×
# for the bigger models (not every operation splits well, and the threads share memory
# bandwidth); if other programs are using the cores, extra threads can even make things slower,
# because a thread that waits for a busy core holds up all the others. (On a GPU the thread
# count hardly matters: the GPU does the arithmetic.)
#
# ## Where one step spends its time
#
# `time_step_phases` times each of the four phases separately, taking the median over several
# steps. On a GPU it calls `torch.cuda.synchronize()` at every phase boundary: CUDA calls return
# before the GPU has finished, so without the sync a phase's time would be charged to whichever
# later line happens to wait for it.

# %%
phase_models = {"digits-mlp": train_set, "digits-cnn": train_set, "medium": synthetic}
phases = {}
for name, data in phase_models.items():
    phases[f"{name}, batch {BATCH}"] = time_step_phases(build_model(name, seed=0), data, batch_size=BATCH,
                                                      steps=STEPS, device=DEVICE)
for label, p in phases.items():
    total = sum(p.values())
    print(f"{label:24s}" + "  ".join(f"{k} {v / total:5.1%}" for k, v in p.items())
          + f"   backward / forward: {p['backward'] / p['forward']:.1f}")
plot_phases(phases)
plt.show()

# %% [markdown]
# **What to look for.** Compare the total length of the bars first: the perceptron's whole step is
# tiny, so fixed costs (Python, launching each operation, fetching the batch) weigh more in it.
# For the larger models look at the backward pass: it computes gradients for both the weights and
# the activations, so it has more arithmetic than the forward pass; the printed ratio
# backward / forward is what that cost in this run (small layers on a CPU can hide the difference
# behind fixed costs). For the larger models the optimizer step of plain SGD, a multiply-add per
# parameter whatever the batch, is a small slice next to the passes that involve every sample.
#
# Keep this picture in mind. Data parallelism splits the **forward and backward** work across
# workers and then adds a new cost, averaging gradients, whose size grows with the *number of
# parameters*, not with the batch. A model whose step is dominated by compute on many samples
# gains; a tiny model gains little.
#
# ## Batch size: speed versus learning
#
# A larger batch gives the hardware bigger operations to chew on, so throughput rises, until the
# machine is saturated. But a larger batch also means fewer parameter updates per epoch.
# First the speed:

# %%
batch_sizes = [8, 32, 128, 512]
speed = [throughput(build_model("digits-cnn", seed=0), train_set, batch_size=b, steps=max(4, STEPS * 32 // b),
                    device=DEVICE) for b in batch_sizes]
for b, s in zip(batch_sizes, speed):
    print(f"batch {b:4d}: {s:10,.0f} samples/s")
plot_lines(batch_sizes, {"digits-cnn": speed}, xlabel="batch size", ylabel="training samples / s",
           title="Throughput against batch size", logx=True)
plt.show()

# %% [markdown]
# Now the learning. We train the perceptron for the same number of epochs (the same number of
# samples seen) with three batch sizes at the same learning rate, then once more with the
# largest batch and a learning rate raised in proportion to the batch (the "linear scaling"
# heuristic; it tends to hold for moderate batches and fails for very large ones).

# %%
curves = {}
for b, lr in [(16, 0.02), (64, 0.02), (256, 0.02), (256, 0.08)]:
    curves[f"batch {b}, lr {lr}"] = train(build_model("digits-mlp", seed=0), train_set, epochs=4, batch_size=b,
                                        lr=lr, test_set=test_set, device=DEVICE)
for label, h in curves.items():
    print(f"{label:18s}: {len(h.step_loss):4d} steps, final test accuracy {h.test_accuracy[-1]:.1%}")
b16, b256, b256_lr = (curves[k] for k in ("batch 16, lr 0.02", "batch 256, lr 0.02", "batch 256, lr 0.08"))
gap = b16.test_accuracy[-1] - b256.test_accuracy[-1]
print(f"batch 256 took {len(b16.step_loss) / len(b256.step_loss):.0f} times fewer steps than batch 16 and ended "
      f"{-100 * gap:+.1f} percentage points against it in test accuracy; with the raised learning rate, "
      f"{100 * (b256_lr.test_accuracy[-1] - b16.test_accuracy[-1]):+.1f}")
plot_history(curves, title="Same samples seen, different batch sizes")
plt.show()

# %% [markdown]
# **What to look for.** At a fixed learning rate, the batch-256 run takes far fewer steps than the
# batch-16 run for the same samples (the cell prints how many times fewer), and the printed
# accuracies say what that cost: each of its steps averages more samples, but it makes fewer
# updates, so per sample seen small batches usually learn faster. Raising the learning rate with
# the batch is the usual way to win some of that back; compare the last line. This is the
# trade-off behind data-parallel training: k workers form a k-times larger global batch, so they go faster per
# *sample* only if the larger batch learns about as well per sample. We come back to it in the
# lessons on scaling.
#
# ## Mixed precision (GPU only)
#
# On a GPU, running the forward and backward passes in 16-bit floating point (`torch.autocast`,
# bfloat16 where the GPU supports it, else float16 with loss scaling) roughly halves memory traffic
# and uses the tensor cores. CPUs in this course run in float32, so the cell below measures the
# comparison only when a GPU is present.

# %%
if DEVICE.type == "cuda":
    big = synthetic_classification(n=8192, features=1024, classes=10)
    amp_speed = {f"large, {'mixed' if amp else 'float32'}": throughput(build_model("large", seed=0), big,
                                                                      batch_size=512, steps=STEPS, amp=amp)
                 for amp in (False, True)}
    for label, s in amp_speed.items():
        print(f"{label:18s}: {s:12,.0f} samples/s")
    print(f"mixed / float32: {amp_speed['large, mixed'] / amp_speed['large, float32']:.2f}x")
else:
    print("No CUDA GPU here: mixed precision skipped (train(..., amp=True) needs a GPU).")

# %% [markdown]
# ## The baseline
#
# These are the numbers later lessons compare against. Each later lesson re-measures its own
# baseline in the same run as its parallel version (a shared machine's speed drifts from minute
# to minute, so only side-by-side numbers make a fair ratio), but these tell you what to expect.
# The load average printed with them says how busy the machine was: a load well above the number
# of cores means other programs competed for them, and every number here is then lower than the
# machine can do, the multi-thread ones most of all.

# %%
print(f"Baseline on this machine ({DEVICE}, torch {torch.__version__}), batch {BATCH}, training samples/s:")
for (name, threads), value in baseline.items():
    print(f"  {name:10s} {threads} thread(s): {value:10,.0f}")
if hasattr(os, "getloadavg"):   # how busy the machine was: other programs' work slows every number above
    print(f"  load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU cores")
if ALL_THREADS > 1:
    for name in workloads:
        print(f"  {name:10s} {ALL_THREADS} threads / 1 thread: "
              f"{baseline[(name, ALL_THREADS)] / baseline[(name, 1)]:.2f}x")

# %% [markdown]
# ## Check
#
# The claims of this lesson, asserted on this run's own results:

# %%
# NBVAL_CHECK_OUTPUT
cnn = next(h for label, h in runs.items() if label.startswith("digits-cnn"))
assert cnn.test_accuracy[-1] > 0.9, "the CNN should classify more than 90% of test digits after training"
for h in runs.values():
    assert h.train_loss[-1] < 0.5 * h.train_loss[0], "training should at least halve the loss"
assert all(v > 0 for v in baseline.values())
assert all(set(p) == {"data", "forward", "backward", "optimizer"} and min(p.values()) >= 0 for p in phases.values())
small, large = curves["batch 16, lr 0.02"], curves["batch 256, lr 0.02"]
assert len(small.step_loss) > len(large.step_loss), "smaller batches take more steps per epoch"
print("all checks passed")

# %% [markdown]
# ## Summary, key terms and self-check

# %%
from dpcourse.aids import lesson_aids
lesson_aids("01")
