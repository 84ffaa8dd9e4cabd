# %% [markdown]
# # Exercise 02 — Gradient accumulation that is exact
#
# Lesson 02 showed that the gradient of a batch's mean loss can be assembled from pieces: run
# micro-batches one after another, let `backward()` add into `.grad`, and scale each piece
# correctly. That is **gradient accumulation**: it lets one device train with a batch that does not
# fit in its memory, and it is the single-process twin of data parallelism (workers ↔
# micro-batches, all-reduce ↔ the sum in `.grad`).
#
# The lesson's version divided every micro-batch loss by k, which is only right when all
# micro-batches have the same size. Your version must be exact for *any* split.
#
# ## Your task
#
# Write `accumulate_gradients(model, loss_fn, x, y, micro_batches)`:
#
# * **Inputs.** `model` is an `nn.Module`; `loss_fn` is a *mean*-reduction loss such as
#   `nn.CrossEntropyLoss()`; `x` and `y` are a batch of `N = len(x)` inputs and targets;
#   `micro_batches` is a whole number from 1 to `N`.
# * **Split.** Cut the batch into `micro_batches` consecutive pieces with
#   `torch.tensor_split(x, micro_batches)` (and the same for `y`). The pieces' sizes may differ by
#   one, e.g. 10 samples in 3 pieces are 4 + 3 + 3.
# * **One piece at a time.** Run the forward and backward pass on each piece separately. The model
#   must never see more than one micro-batch at once (that is the whole point: memory).
# * **Start from zero.** The function *overwrites* gradients: whatever was in `.grad` before the call
#   is discarded (zero the gradients first). It does not step any optimizer and leaves the
#   parameters unchanged.
# * **Result.** Afterwards every parameter's `.grad` holds the gradient of `loss_fn(model(x), y)`,
#   the full-batch mean loss, up to floating-point rounding, also when `N` does not divide by
#   `micro_batches`. Return that full-batch mean loss as a Python `float`.
# * **Bad input.** If `micro_batches` is not a whole number from 1 to `N`, raise `ValueError` with a
#   message that says what is allowed.
#
# **Hints** (click to open; try each one before the next):
#
# <details><summary>Hint 1</summary>
#
# Ten samples in pieces of 4, 3 and 3. Dividing each piece's mean loss by 3 gives every piece the
# same weight: does every *sample* then count equally, as it does in the full-batch mean? Which
# samples count too much?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Write the full-batch mean as a sum over the pieces: with $L_j$ the mean loss of piece $j$ and
# $n_j$ its size, $\frac1N\sum_i \ell_i = \sum_j \frac{n_j}{N}\,L_j$. `backward()` adds into
# `.grad`, so the sum over $j$ happens by itself. Which factor should multiply $L_j$ before
# `backward()`?
#
# </details>
#
# <details><summary>Hint 3 (the answer)</summary>
#
# Zero the gradients once, then for each piece `(xs, ys)` call
# `(loss_fn(model(xs), ys) * len(xs) / N).backward()`. The full-batch mean loss is the sum of
# these weighted losses (take `.item()` of each).
#
# </details>

# %%
import matplotlib.pyplot as plt
import torch
from torch import nn

from dpcourse.data import digits_split
from dpcourse.models import build_model
from dpcourse.plots import plot_bars, plot_lines
from dpcourse.train import gradient_vector, max_difference

torch.set_num_threads(1)   # small models: one thread is as fast and steadier on a shared machine

# %% tags=["graded"]
def accumulate_gradients(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         micro_batches: int) -> float:
    """Leave in ``.grad`` the gradient of the full-batch mean loss, computed one micro-batch at a
    time; return the full-batch mean loss as a float. Existing gradients are overwritten."""
    ### BEGIN SOLUTION
    n = len(x)
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or not 1 <= micro_batches <= n:
        raise ValueError(f"micro_batches must be a whole number from 1 to len(x) = {n}, got {micro_batches!r}.")
    model.zero_grad(set_to_none=True)
    total = 0.0
    for xs, ys in zip(torch.tensor_split(x, micro_batches), torch.tensor_split(y, micro_batches)):
        weighted = loss_fn(model(xs), ys) * (len(xs) / n)   # this piece's share of the full-batch mean
        weighted.backward()                                # adds into .grad
        total += weighted.item()
    return total
    ### END SOLUTION

# %% [markdown]
# ## Check your function
#
# The cell below runs the visible tests on your function, each in a separate process with a time
# limit, and prints one line per test with a hint when a test fails.

# %%
from dpcourse.grading import check
check("02", accumulate_gradients)

# %% [markdown]
# A check of our own, in the open: the gradient after accumulation against the full-batch
# gradient, for splits that divide the batch of 100 evenly and splits that do not. We use
# float64, so anything above about $10^{-12}$ would be a real error, not rounding.

# %%
train_set, _ = digits_split()
X, Y = train_set.tensors
loss_fn = nn.CrossEntropyLoss()
model = build_model("digits-mlp", seed=0).double()
x, y = X[:100].double(), Y[:100]

model.zero_grad()
full_loss = loss_fn(model(x), y)
full_loss.backward()
full_grad = gradient_vector(model).clone()

for k in (1, 2, 3, 7, 10, 33, 100):
    loss = accumulate_gradients(model, loss_fn, x, y, k)
    sizes = sorted({len(part) for part in torch.tensor_split(x, k)})
    diff = max_difference(full_grad, gradient_vector(model))
    print(f"{k:3d} micro-batches (sizes {sizes}): max gradient difference {diff:.1e}, "
          f"loss difference {abs(loss - full_loss.item()):.1e}")
    assert diff < 1e-12 and abs(loss - full_loss.item()) < 1e-12

accumulate_gradients(model, loss_fn, x, y, 3)    # a second call must overwrite, not add
assert max_difference(full_grad, gradient_vector(model)) < 1e-12
print("accumulation matches the full batch")

# %% [markdown]
# ## Using it: a big batch on a small budget
#
# Now train twice from the same initial weights: once with full batches of 250 samples, once with
# the same batches accumulated in 8 micro-batches (sizes 32 and 31, so not all equal). If the
# function is exact, the two runs are the same training run, up to rounding. For contrast, a
# third run uses the tempting shortcut of dividing every micro-batch loss by 8.

# %%
def naive_accumulate(model, loss_fn, x, y, micro_batches):
    """The shortcut: every micro-batch gets weight 1/k, whatever its size."""
    model.zero_grad(set_to_none=True)
    for xs, ys in zip(torch.tensor_split(x, micro_batches), torch.tensor_split(y, micro_batches)):
        (loss_fn(model(xs), ys) / micro_batches).backward()


def full_batch(model, x, y):
    model.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    return loss.item()


def exact(model, x, y):
    return accumulate_gradients(model, loss_fn, x, y, 8)


def shortcut(model, x, y):
    naive_accumulate(model, loss_fn, x, y, 8)
    with torch.no_grad():
        return loss_fn(model(x), y).item()


STEPS, BATCH = 40, 250
methods = {"full batch of 250": full_batch, "8 micro-batches, exact": exact, "8 micro-batches, divide by 8": shortcut}
models = {name: build_model("digits-mlp", seed=0) for name in methods}
opts = {name: torch.optim.SGD(m.parameters(), lr=0.2, momentum=0.9) for name, m in models.items()}
losses = {name: [] for name in methods}
drift = {name: [] for name in list(methods)[1:]}      # max parameter difference to the full-batch run
for step in range(STEPS):
    idx = torch.arange(step * BATCH, (step + 1) * BATCH) % len(X)
    for name, step_fn in methods.items():
        losses[name].append(step_fn(models[name], X[idx], Y[idx]))
        opts[name].step()
    for name in drift:
        drift[name].append(max_difference(models[name], models["full batch of 250"]))

for name in methods:
    print(f"{name:30s}: final loss {losses[name][-1]:.4f}, max parameter difference to full batch "
          f"{max_difference(models[name], models['full batch of 250']):.1e}")
plot_lines(range(1, STEPS + 1), {name: [max(d, 1e-20) for d in ds] for name, ds in drift.items()}, xlabel="step",
           ylabel="max abs parameter difference", title="Distance from full-batch training", logy=True)
plt.show()

# %% [markdown]
# **Reading it.** The three losses are close (plot `losses` to see them lie almost on top of each
# other), so the loss alone would not tell you anything is wrong. The parameters do: the exact
# accumulation stays at float32 rounding level from the full-batch run (the additions happen in a
# different order), while the shortcut moves away step after step, by orders of magnitude more.
# With sizes 32 and 31 its weighting is only slightly off; with more lopsided splits the gap grows,
# as lesson 02's last experiment showed.
#
# ## What accumulation costs
#
# Accumulation saves memory, not time: the same arithmetic is done in more, smaller operations,
# and each operation has a fixed cost. The cell below times one accumulated step of the convolutional net
# on a batch of 256 for several numbers of micro-batches (on this machine, in this run, with the
# one CPU thread set at the top).

# %%
import time

cnn = build_model("digits-cnn", seed=0)
xb, yb = X[:256], Y[:256]
step_ms = {}
REPEATS = 2                                                  # turn up for steadier numbers
for k in (1, 4, 16, 64):
    accumulate_gradients(cnn, loss_fn, xb, yb, k)           # warm-up
    start = time.perf_counter()
    for _ in range(REPEATS):
        accumulate_gradients(cnn, loss_fn, xb, yb, k)
    step_ms[f"{k}"] = 1e3 * (time.perf_counter() - start) / REPEATS
for k, ms in step_ms.items():
    print(f"{k:>2s} micro-batches: {ms:7.1f} ms per batch of 256")
plot_bars(step_ms, ylabel="ms per batch of 256", title="Accumulation: same batch, more pieces", fmt="{:.0f}")
plt.xlabel("micro-batches")
plt.show()

# %% [markdown]
# **What to look for.** A trend, not a single bar: on a shared machine one bar can be off by tens
# of percent. With one CPU thread, moderate pieces cost little extra (a single core stays busy even
# on small operations); once pieces get down to a few samples, the fixed cost per operation takes
# over and the time per batch climbs. On a GPU the climb starts much earlier, because a small piece
# leaves most of the GPU idle. What you buy with that time is memory: only one
# micro-batch's activations are alive at once. Data parallelism buys the same big batch the other
# way round, with more devices instead of more time.
#
# ## Final check

# %%
# NBVAL_CHECK_OUTPUT
reference = models["full batch of 250"]
exact_model, shortcut_model = models["8 micro-batches, exact"], models["8 micro-batches, divide by 8"]
assert max_difference(exact_model, reference) < 1e-4
assert max_difference(shortcut_model, reference) > 10 * max_difference(exact_model, reference)
print("exact accumulation reproduces full-batch training; the shortcut does not")
