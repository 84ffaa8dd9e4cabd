# exercise: 07
# expect: full
# The solution's train_ddp with the notebook's helpers, as a learner's notebook would define them.
import contextlib
import os
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
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


def train_ddp(config):
    """train_single as a DDP program: call it on every rank of an initialised process group."""
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
