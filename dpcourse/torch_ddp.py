"""The ladder: one model, one data stream, four ways to train it, the same answer.

    single process  ->  hand-written DDP (dpcourse.ddp_by_hand.BucketedDDP)  ->  nn.DataParallel  ->  torch DDP

Every rung starts from the same initial weights (``build_model(name, seed)``) and takes ``steps`` SGD
steps over the same global batches: step ``s`` uses samples ``s*B ... (s+1)*B - 1`` of a fixed shuffle
of the digits training set. The data-parallel rungs split each global batch into contiguous shards
(``dpcourse.data.shard``), average the gradients, and so compute the same update as one process that
sees the whole batch. Their final parameters must therefore agree with the single process up to the
rounding of a different summation order (about 1e-7 in float32, 1e-15 in float64).

    results = climb("digits-cnn", steps=10, batch_size=64, world_size=2)
    print(table(results))
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

__all__ = ["Rung", "climb", "table", "max_difference", "RUNGS"]

RUNGS = ("single process", "hand-written DDP", "nn.DataParallel", "torch DDP")


@dataclass
class Rung:
    """One rung's outcome: final parameters, median step time, and where it ran."""

    name: str
    params: dict[str, np.ndarray]
    step_ms: float
    ranks: int
    device: str
    batch_size: int
    note: str = ""

    @property
    def samples_per_s(self) -> float:
        return self.batch_size / (self.step_ms / 1000.0)


def _batches(batch_size: int, steps: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from dpcourse.data import digits_split

    x, y = digits_split()[0].tensors
    if steps * batch_size > len(y):
        raise ValueError(f"steps * batch_size = {steps * batch_size} exceeds the {len(y)} training digits: "
                         "use fewer steps or a smaller batch.")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    return [(x[order[s * batch_size:(s + 1) * batch_size]].to(dtype), y[order[s * batch_size:(s + 1) * batch_size]])
            for s in range(steps)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(model: nn.Module, params_of: nn.Module, batches: list, device: torch.device, lr: float,
           after_backward: Callable[[], None] = lambda: None, shard: Callable | None = None) -> tuple[dict, float]:
    """SGD over ``batches``; returns (final parameters of ``params_of`` as numpy, median step ms)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for x, y in batches:
        if shard is not None:
            x, y = shard(x), shard(y)
        x, y = x.to(device), y.to(device)
        _sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        after_backward()
        opt.step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    params = {k: v.detach().cpu().numpy().copy() for k, v in params_of.state_dict().items()}
    warm = times[1:] if len(times) > 1 else times  # the first step pays one-off costs
    return params, statistics.median(warm)


def _single(name: str, batches: list, lr: float, dtype: torch.dtype, data_parallel: bool) -> Rung:
    from dpcourse.models import build_model

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = torch.device("cuda", 0) if gpus else torch.device("cpu")
    model = build_model(name, seed=0).to(device, dtype)
    net: nn.Module = model
    note = ""
    if data_parallel:
        net = nn.DataParallel(model)
        if gpus == 0:
            note = "no GPU: DataParallel calls the module directly (device_ids == [])"
        elif gpus == 1:
            note = "one GPU: DataParallel calls the module directly"
        else:
            note = f"split over {gpus} GPUs, gathered on cuda:0"
    params, ms = _train(net, model, batches, device, lr)
    where = f"{gpus} GPUs" if data_parallel and gpus > 1 else str(device)
    return Rung(RUNGS[2] if data_parallel else RUNGS[0], params, ms, 1, where, len(batches[0][1]), note)


def _ddp_worker(name: str, batches: list, lr: float, dtype: torch.dtype, handwritten: bool) -> tuple[dict, float, str]:
    import gc

    import torch.distributed as dist

    import dpcourse
    from dpcourse.data import shard
    from dpcourse.models import build_model

    rank, world = dpcourse.rank(), dpcourse.world_size()
    device = dpcourse.device()
    model = build_model(name, seed=0).to(device, dtype)
    cut = lambda t: shard(t, rank, world)  # noqa: E731 - this rank's contiguous slice of the global batch
    if handwritten:
        from dpcourse.ddp_by_hand import BucketedDDP

        net = BucketedDDP(model)
        result = _train(net, model, batches, device, lr, net.finish_gradient_synchronization, cut)
    else:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        result = _train(net, model, batches, device, lr, shard=cut)
    del net
    gc.collect()  # let the reducer go before the process group does
    return result[0], result[1], f"{dist.get_backend()} on {device}"


def climb(model: str = "digits-cnn", steps: int = 10, batch_size: int = 64, world_size: int = 2, lr: float = 0.05,
          double: bool = False, threads: int = 1, rungs: tuple[str, ...] = RUNGS, timeout: float = 120.0) -> list[Rung]:
    """Train ``model`` on every rung in ``rungs`` and return their :class:`Rung` results.

    ``batch_size`` is the global batch (each of ``world_size`` ranks gets ``batch_size / world_size``);
    ``threads`` is torch's thread count for the one-process rungs and per rank for the others;
    ``double`` trains in float64 so that agreement is checked without float32 rounding noise.
    """
    import dpcourse
    from dpcourse.train import num_threads

    unknown = set(rungs) - set(RUNGS)
    if unknown:
        raise ValueError(f"unknown rung(s) {sorted(unknown)}: choose from {list(RUNGS)}.")
    if batch_size % world_size:
        raise ValueError(f"batch_size ({batch_size}) must divide evenly by world_size ({world_size}) "
                         "for the rungs to compute the same update.")
    dtype = torch.float64 if double else torch.float32
    batches = _batches(batch_size, steps, dtype)
    results = []
    for name in rungs:
        if name in (RUNGS[0], RUNGS[2]):
            with num_threads(threads):
                results.append(_single(model, batches, lr, dtype, data_parallel=name == RUNGS[2]))
        else:
            out = dpcourse.launch(_ddp_worker, world_size, model, batches, lr, dtype, name == RUNGS[1],
                                  timeout=timeout, threads=threads)
            params, ms, where = out[0]
            slowest = max(o[1] for o in out)  # a step is over when the slowest rank is done
            results.append(Rung(name, params, slowest, world_size, where, batch_size))
    return results


def max_difference(a: Rung, b: Rung) -> float:
    """Largest absolute difference between two rungs' final parameters."""
    if a.params.keys() != b.params.keys():
        raise ValueError(f"{a.name} and {b.name} have different parameter names.")
    return max(float(np.abs(a.params[k].astype(np.float64) - b.params[k]).max()) for k in a.params)


def table(results: list[Rung]) -> str:
    """A plain-text table: step time, throughput and agreement with the first rung."""
    base = results[0]
    lines = [f"{'rung':<18} {'ranks':>5} {'where':<18} {'step ms':>8} {'samples/s':>10} "
             f"{'max |diff| vs ' + base.name:>28}"]
    for r in results:
        lines.append(f"{r.name:<18} {r.ranks:>5} {r.device:<18} {r.step_ms:>8.2f} {r.samples_per_s:>10,.0f} "
                     f"{max_difference(base, r):>28.1e}")
        if r.note:
            lines.append(f"{'':<18}   note: {r.note}")
    return "\n".join(lines)
