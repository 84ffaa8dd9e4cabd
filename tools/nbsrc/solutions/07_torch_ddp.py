# %% [markdown]
# # Exercise 07 — From one process to DDP
#
# Below is a complete single-process training function, `train_single(config)`: a small classifier on
# synthetic data, SGD with momentum, gradient accumulation, a log line per epoch and a checkpoint after
# every epoch that a later call can resume from. Your task is to write **`train_ddp(config)`**, the
# same training as a `DistributedDataParallel` program. It runs on **every rank**, inside workers
# started by `dpcourse.launch` with the default process group already initialised (gloo on the CPU).
#
# ## The API
#
# `config` is a dict with the keys of `CONFIG` below:
#
# | key | meaning |
# |---|---|
# | `seed` | seeds the data, the initial weights and the shuffles |
# | `n`, `features`, `classes`, `hidden` | data set size and model shape (use `make_data` and `make_model`) |
# | `epochs` | train until this epoch count is reached (a resumed run trains only the missing ones) |
# | `batch_size` | micro-batch size **per rank** |
# | `accumulate` | micro-batches per optimizer step |
# | `lr`, `momentum` | SGD settings |
# | `checkpoint` | a file path, or `None` for no checkpoints |
# | `resume` | if true and `checkpoint` exists, continue from it |
#
# `n` is always a multiple of `world_size × batch_size × accumulate`, so every rank has the same
# number of full micro-batches.
#
# `train_ddp(config)` returns `{"params": {name: tensor}, "start_epoch": int}`: the final parameters of
# the model **without** the DDP wrapper (names without a `module.` prefix), and the epoch the run
# started at (0, or the one read from the checkpoint).
#
# ## What is required
#
# 1. **Same math as one process.** With `W` ranks, the result must equal `train_single` with
#    `batch_size = W × batch_size` (to about 1e-10; everything is float64). Wrap the model in `DDP`,
#    and give each rank its share of the data with a `DistributedSampler(data, seed=config["seed"])`
#    (its default `shuffle=True`) in a `DataLoader`; call `sampler.set_epoch(epoch)` every epoch.
# 2. **`no_sync` accumulation.** All micro-batches of an optimizer step except the last run forward
#    and backward inside `with ddp.no_sync():`. One all-reduce per optimizer step.
# 3. **Rank-0 logging.** Only rank 0 prints the per-epoch line.
# 4. **Rank-0 checkpoints.** After each epoch rank 0 saves `{"model", "optimizer", "epoch"}` with
#    `torch.save` (model state without the `module.` prefix; `epoch` = the next epoch to run); then all
#    ranks wait at `dist.barrier()`. When resuming, **every** rank loads the file with `torch.load`.
#    A resumed run must end exactly where an uninterrupted run ends, training only the missing epochs.
#
# Do not import `dpcourse.ddp_by_hand` or `dpcourse.torch_ddp` (the course's own code): graded code that uses
# them scores 0.
#
# **Hints** (click to open; try each one before the next):
#
# <details><summary>Hint 1: which backward communicates?</summary>
#
# With `accumulate = 3`, an optimizer step runs three micro-batches. Which of the three backward
# passes must all-reduce, and how can the loop tell that micro-batch from the other two, using only
# its index `i`?
#
# </details>
#
# <details><summary>Hint 2: the accumulation loop</summary>
#
# `(i + 1) % accumulate == 0` marks the last micro-batch of a step: run it normally and step the
# optimizer after it; run the others under `ddp.no_sync()`. Scale each loss by `1 / accumulate`, as
# `train_single` does (the per-rank loader gives every rank full micro-batches).
#
# </details>
#
# <details><summary>Hint 3: checkpoints</summary>
#
# DDP broadcasts rank 0's *parameters* when you wrap the model, but nothing else: each rank's
# optimizer (with its momentum) is its own. So where must the checkpoint be loaded, and by whom?
# And what stops rank 1 from reading the file while rank 0 is still writing it?
#
# </details>
#
# <details><summary>Hint 4 (the answer for checkpoints)</summary>
#
# Every rank loads the checkpoint into its plain model and its optimizer *before* wrapping the model
# in `DDP`. Rank 0 saves `model.state_dict()` of the plain model (so no `module.` prefix), and every
# rank then calls `dist.barrier()`: nobody goes on, or reads the file, before it is complete.
#
# </details>

# %%
import contextlib
import os
import tempfile

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

import dpcourse
from dpcourse.data import synthetic_classification


CONFIG = {"seed": 0, "n": 48, "features": 8, "classes": 3, "hidden": 16, "epochs": 3, "batch_size": 4,
          "accumulate": 1, "lr": 0.1, "momentum": 0.9, "checkpoint": None, "resume": False}


def make_data(config):
    """The training set: float32 inputs, int64 labels."""
    return synthetic_classification(config["n"], config["features"], config["classes"], seed=config["seed"])


def make_model(config):
    """A small float64 classifier, identical on every rank for the same seed."""
    torch.manual_seed(config["seed"])
    return nn.Sequential(nn.Linear(config["features"], config["hidden"]), nn.Tanh(),
                         nn.Linear(config["hidden"], config["classes"])).double()


def train_single(config):
    """The single-process version: read it, then write train_ddp below."""
    data = make_data(config)
    x, y = data.tensors
    model = make_model(config)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    start_epoch = 0
    if config["checkpoint"] and config["resume"] and os.path.exists(config["checkpoint"]):
        state = torch.load(config["checkpoint"], weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
    batch, acc = config["batch_size"], config["accumulate"]
    for epoch in range(start_epoch, config["epochs"]):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(config["seed"] + epoch))
        total = 0.0
        for i, start in enumerate(range(0, len(y), batch)):
            idx = order[start:start + batch]
            loss = nn.functional.cross_entropy(model(x[idx].double()), y[idx])
            (loss / acc).backward()
            total += loss.item()
            if (i + 1) % acc == 0:
                opt.step()
                opt.zero_grad()
        print(f"epoch {epoch}: mean micro-batch loss {total / (i + 1):.4f}")
        if config["checkpoint"]:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1},
                       config["checkpoint"])
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}, "start_epoch": start_epoch}


single = train_single(CONFIG)

# %% [markdown]
# ## Your turn: `train_ddp(config)`

# %% tags=["graded"]
def train_ddp(config):
    """train_single as a DDP program: call it on every rank of an initialised process group."""
    ### BEGIN SOLUTION
    rank = dist.get_rank()
    data = make_data(config)
    model = make_model(config)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    start_epoch = 0
    if config["checkpoint"] and config["resume"] and os.path.exists(config["checkpoint"]):
        state = torch.load(config["checkpoint"], weights_only=True)  # every rank reads the same file
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
    ddp = DDP(model)
    sampler = DistributedSampler(data, seed=config["seed"])
    loader = DataLoader(data, batch_size=config["batch_size"], sampler=sampler)
    acc = config["accumulate"]
    for epoch in range(start_epoch, config["epochs"]):
        sampler.set_epoch(epoch)
        total = 0.0
        for i, (x, y) in enumerate(loader):
            last = (i + 1) % acc == 0
            with ddp.no_sync() if not last else contextlib.nullcontext():
                loss = nn.functional.cross_entropy(ddp(x.double()), y)
                (loss / acc).backward()
            total += loss.item()
            if last:
                opt.step()
                opt.zero_grad()
        if rank == 0:
            print(f"epoch {epoch}: mean micro-batch loss on rank 0 {total / (i + 1):.4f}")
            if config["checkpoint"]:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1},
                           config["checkpoint"])
        if config["checkpoint"]:
            dist.barrier()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}, "start_epoch": start_epoch}
    ### END SOLUTION

# %% [markdown]
# ## Try it
#
# Two ranks with 4 samples each must match one process with 8.

# %%
results = dpcourse.launch(train_ddp, 2, CONFIG)
reference = train_single({**CONFIG, "batch_size": 2 * CONFIG["batch_size"]})
difference = max((results[0]["params"][k] - reference["params"][k]).abs().max().item() for k in reference["params"])
print(f"max difference, 2 ranks x 4 vs 1 process x 8: {difference:.1e}")

# %% [markdown]
# And a checkpoint: 1 epoch, then resume to 3, against 3 straight.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "ckpt.pt")
    dpcourse.launch(train_ddp, 2, {**CONFIG, "epochs": 1, "checkpoint": path})
    resumed = dpcourse.launch(train_ddp, 2, {**CONFIG, "checkpoint": path, "resume": True})[0]
difference = max((resumed["params"][k] - results[0]["params"][k]).abs().max().item() for k in reference["params"])
print(f"resumed at epoch {resumed['start_epoch']}; max difference to the uninterrupted run: {difference:.1e}")

# %% [markdown]
# ## Self-check
#
# Runs the visible tests in separate processes (a hang cannot freeze your notebook) and prints one
# line per test.

# %%
from dpcourse.grading import check

check("07", train_ddp)
