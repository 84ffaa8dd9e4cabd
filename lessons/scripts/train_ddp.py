"""Lesson 01's digits training, ported to DistributedDataParallel.

Run it the production way (one process per device, started by torchrun):

    python -m torch.distributed.run --standalone --nproc_per_node=2 scripts/train_ddp.py --epochs 3

or import it and call :func:`train` on every rank under ``dpcourse.launch``. Every feature lesson 07
teaches is a flag: ``--accumulate`` (``no_sync``), ``--uneven`` (``Join``), ``--sync-bn``,
``--bucket-cap-mb`` / ``--grad-as-bucket-view``, ``--checkpoint-dir`` / ``--resume`` (rank 0 writes,
every rank loads), ``--amp`` (bf16 autocast on GPU), ``--collective-timeout`` (how long a collective
waits for a silent peer). ``--crash-at-step`` kills one worker on purpose (first attempt only) so that
``torchrun --max-restarts=1`` can show a restart from the checkpoint; ``--crash-node-at-step``, given
to one node's command only, kills that whole node (its torchrun and its workers), to show what a
fixed ``--nnodes`` job and an elastic ``--nnodes=MIN:MAX`` one do when a machine is lost.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import os
import signal
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset

from dpcourse.data import digits_split
from dpcourse.models import build_model

__all__ = ["Config", "train", "setup", "make_model", "evaluate", "main"]


@dataclass
class Config:
    """Everything a run depends on. ``batch_size`` is per rank: the global batch is ``batch_size * world``."""

    model: str = "digits-mlp"      # digits-mlp, digits-cnn or digits-bn (an MLP with BatchNorm)
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    accumulate: int = 1            # micro-batches per optimizer step (all but the last under no_sync)
    uneven: bool = False           # give ranks different numbers of batches
    join: bool = True              # with --uneven: wrap the loop in Join (--no-join shows why)
    sync_bn: bool = False          # convert BatchNorm layers to SyncBatchNorm
    bucket_cap_mb: float = 25.0
    grad_as_bucket_view: bool = False
    checkpoint_dir: str | None = None
    resume: bool = False
    amp: bool = False              # bf16 autocast (GPU only; ignored on CPU)
    device: str = "auto"           # auto (cuda under nccl, else cpu), cpu or cuda
    double: bool = False           # float64 parameters: agreement checks free of rounding noise
    crash_at_step: int = -1        # kill rank 1 at this global step on the first attempt
    crash_node_at_step: int = -1   # kill this node (torchrun agent + its workers) at this step, first attempt
    collective_timeout: float = 120.0  # seconds a collective waits for a peer before it fails
    out: str | None = None         # rank 0 saves the final parameters here
    log_every: int = 0             # print every N steps on rank 0 (0: once per epoch)


class DigitsBN(nn.Module):
    """A digits MLP with a BatchNorm layer: what ``--sync-bn`` is about."""

    def __init__(self, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_model(name: str, seed: int) -> nn.Module:
    """The model by name, with weights fixed by ``seed`` (identical on every rank)."""
    if name == "digits-bn":
        torch.manual_seed(seed)
        return DigitsBN()
    return build_model(name, seed)


def setup(backend: str | None = None, timeout_s: float = 120.0) -> None:
    """Join the process group described by torchrun's environment, unless one exists already."""
    if dist.is_initialized():
        return
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"no process group and no {', '.join(missing)} in the environment: "
                           "start this script with torchrun (python -m torch.distributed.run ...).")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    timeout = datetime.timedelta(seconds=timeout_s)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        dist.init_process_group(backend, timeout=timeout)
        return
    # Under torchrun the key-value store outlives a restart. Workers of a new attempt must not read the
    # addresses that the dead attempt's workers left there, so each attempt gets its own key prefix.
    agent_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_hosts_store and rank == 0, timeout=timeout)
    dist.init_process_group(backend, store=dist.PrefixStore(f"train_ddp/attempt_{attempt}", store),
                            rank=rank, world_size=world, timeout=timeout)


def _device(cfg: Config) -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    if cfg.device == "cpu":
        return torch.device("cpu")
    if cfg.device == "cuda" or (cfg.device == "auto" and dist.get_backend() == "nccl"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda asked for, but CUDA is not available: use --device cpu.")
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


def _rank_data(cfg: Config, train_set: Any, rank: int, world: int,
               epoch: int) -> tuple[DataLoader, DistributedSampler | None]:
    if cfg.uneven:
        # deliberately unequal shards: rank r gets 1/(r+2)... of the data, so ranks run out at different steps
        n = len(train_set)
        sizes = [n // (2 + r) for r in range(world)]
        start = sum(sizes[:rank])
        part = Subset(train_set, range(start, start + sizes[rank]))
        g = torch.Generator().manual_seed(cfg.seed + epoch)
        return DataLoader(part, batch_size=cfg.batch_size, shuffle=True, generator=g), None
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    return DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler), sampler


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, step: int,
                     cfg: Config) -> None:
    """Rank 0 writes to a temporary name and renames: a crash mid-write never leaves half a file."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                "config": dataclasses.asdict(cfg)}, tmp)
    os.replace(tmp, path)


def _lose_this_node(step: int) -> None:
    """Simulate a machine that dies: its torchrun agent and every worker on it vanish at once.

    Every local worker reaches the same step (they step together), so local rank 0 kills the agent and
    each worker kills itself: nothing of this node is left to say goodbye to the other nodes.
    """
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        raise RuntimeError("--crash-node-at-step only makes sense under torchrun (it kills torchrun's agent).")
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print(f"rank {dist.get_rank()}: simulating the loss of this whole node at step {step}", flush=True)
        os.kill(os.getppid(), signal.SIGKILL)  # the torchrun agent of this node
    os.kill(os.getpid(), signal.SIGKILL)


def evaluate(model: nn.Module, dataset: Any, device: torch.device) -> float:
    """Accuracy of ``model`` on ``dataset`` (run on one rank; no communication)."""
    model.eval()
    with torch.no_grad():
        x, y = dataset.tensors
        dtype = next(model.parameters()).dtype
        acc = (model(x.to(device, dtype)).argmax(1).cpu() == y).float().mean().item()
    model.train()
    return acc


def train(cfg: Config | dict | None = None, **overrides: Any) -> dict[str, Any]:
    """Train on every rank of the current process group; return this rank's results.

    Returns ``{"params": {name: cpu tensor}, "losses": [mean loss per epoch], "steps": int,
    "start_epoch": int, "accuracy": float, "seconds": float}`` on every rank (parameters agree).
    """
    if cfg is None:
        cfg = Config()
    elif isinstance(cfg, dict):
        cfg = Config(**cfg)
    cfg = dataclasses.replace(cfg, **overrides)
    if cfg.accumulate < 1 or cfg.batch_size < 1 or cfg.epochs < 0:
        raise ValueError("accumulate and batch_size must be at least 1 and epochs at least 0.")
    setup(timeout_s=cfg.collective_timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = _device(cfg)
    dtype = torch.float64 if cfg.double else torch.float32

    model = make_model(cfg.model, cfg.seed).to(device, dtype)
    if cfg.sync_bn:
        if device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA devices (SyncBatchNorm has no CPU kernel): drop the flag on CPU.")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)

    start_epoch, step = 0, 0
    ckpt = Path(cfg.checkpoint_dir) / "last.pt" if cfg.checkpoint_dir else None
    if ckpt is not None and rank == 0:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    if ckpt is not None and cfg.resume and ckpt.exists():
        # every rank reads the same file, mapped to its own device: no broadcast needed
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"], state["step"]
        if rank == 0:
            print(f"resumed from checkpoint at epoch {start_epoch} (step {step}) with {world} rank(s)", flush=True)

    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
              bucket_cap_mb=cfg.bucket_cap_mb, gradient_as_bucket_view=cfg.grad_as_bucket_view)
    train_set, test_set = digits_split()
    loss_fn = nn.CrossEntropyLoss()
    use_amp = cfg.amp and device.type == "cuda"
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    losses: list[float] = []
    start = time.perf_counter()

    for epoch in range(start_epoch, cfg.epochs):
        loader, sampler = _rank_data(cfg, train_set, rank, world, epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        total = torch.zeros(2, dtype=torch.float64)  # [loss x samples, samples] on this rank
        with Join([ddp]) if cfg.uneven and cfg.join else nullcontext():
            batches = list(loader)
            for i, (x, y) in enumerate(batches):
                x, y = x.to(device, dtype), y.to(device)
                group = batches[i - i % cfg.accumulate:][:cfg.accumulate]  # this optimizer step's micro-batches
                last_micro = (i + 1) % cfg.accumulate == 0 or i + 1 == len(batches)
                with ExitStack() as stack:
                    if not last_micro:
                        stack.enter_context(ddp.no_sync())  # keep gradients local, sync on the last micro-batch
                    with torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext():
                        loss = loss_fn(ddp(x), y)
                    # weight each micro-batch by its share of the step's samples: the sum of the
                    # gradients is then exactly the gradient of the mean loss over the whole step
                    (loss * (len(y) / sum(len(b[1]) for b in group))).backward()
                total += torch.tensor([loss.item() * len(y), len(y)], dtype=torch.float64)
                if last_micro:
                    opt.step()
                    opt.zero_grad(set_to_none=not cfg.grad_as_bucket_view)
                    step += 1
                    if cfg.log_every and rank == 0 and step % cfg.log_every == 0:
                        print(f"epoch {epoch} step {step} loss {loss.item():.4f}", flush=True)
                    if step == cfg.crash_at_step and rank == 1 and restart == 0:
                        print(f"rank 1: simulating a crash at step {step}", flush=True)
                        os.kill(os.getpid(), signal.SIGKILL)
                    if step == cfg.crash_node_at_step and restart == 0:
                        _lose_this_node(step)
        dist.all_reduce(total)  # the epoch's loss over all ranks, for the log
        losses.append(total[0].item() / total[1].item())
        if rank == 0:
            if ckpt is not None:
                _save_checkpoint(ckpt, model, opt, epoch + 1, step, cfg)
            print(f"epoch {epoch}: loss {losses[-1]:.4f}", flush=True)
        if ckpt is not None:
            dist.barrier()  # nobody runs ahead of a checkpoint that is still being written

    seconds = time.perf_counter() - start
    params = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    accuracy = evaluate(model, test_set, device)
    if rank == 0 and cfg.out:
        torch.save({"params": params, "losses": losses, "steps": step}, cfg.out)
    del ddp, opt
    gc.collect()  # drop the reducer before the process group goes (NOTES.md: gloo teardown)
    return {"params": params, "losses": losses, "steps": step, "start_epoch": start_epoch,
            "accuracy": accuracy, "seconds": seconds}


def parse_args(argv: list[str] | None = None) -> Config:
    """Command-line flags -> :class:`Config` (one flag per field, dashes for underscores)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=f.default)
    return Config(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        setup(timeout_s=cfg.collective_timeout)
    except RuntimeError as exc:
        print(f"train_ddp.py: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(cfg)
        if dist.get_rank() == 0:
            print(f"done: {result['steps']} steps in {result['seconds']:.2f} s, "
                  f"test accuracy {result['accuracy']:.3f}", flush=True)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
