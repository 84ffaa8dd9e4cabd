"""One process vs naive gradient averaging vs BucketedDDP vs PyTorch's DDP, on one model and data.

    dpcourse bench ddp --world-size 2 --steps 10 [--json out.json]

Every variant trains the same model from the same initial weights on the same global batch with
SGD. The three distributed variants run inside the same workers, interleaved in rounds, so that
they see the same machine load; the single-process baseline runs the whole global batch in one
process with one thread (the same compute each rank gets), half of its steps just before the
distributed runs and half just after. With enough GPUs the launcher picks
NCCL and every variant runs on the GPUs instead. Step times are medians over the timed
steps of rank 0; samples/s is the global batch divided by the step time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dpcourse.bench import publish
from dpcourse.data import shard, synthetic_classification
from dpcourse.ddp_by_hand import BucketedDDP, average_gradients
from dpcourse.launch import device, launch
from dpcourse.models import build_model, count_parameters

__all__ = ["run", "main", "VARIANTS"]

VARIANTS = ("naive", "bucketed", "torch_ddp")
LABELS = {"single": "single process (1 thread)", "naive": "naive average_gradients",
          "bucketed": "BucketedDDP (25 MB buckets)", "torch_ddp": "torch DDP (25 MB buckets)"}
_CHUNK = 2  # timed steps per variant per round


def _data(batch: int, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = synthetic_classification(batch, features=features, seed=0)
    return ds.tensors[0], ds.tensors[1]


def _features(model: nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features


def _time_steps(step, n: int) -> list[float]:
    times = []
    cuda = device().type == "cuda"
    for _ in range(n):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def _single(model_name: str, batch: int, steps: int, warmup: int) -> list[float]:
    model = build_model(model_name, seed=0).to(device())
    x, y = (t.to(device()) for t in _data(batch, _features(model)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    _time_steps(step, warmup)
    return _time_steps(step, steps)


def _distributed(model_name: str, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    r, w = dist.get_rank(), dist.get_world_size()
    steppers = {}
    for variant in VARIANTS:
        model = build_model(model_name, seed=0).to(device())
        x, y = (shard(t, r, w).to(device()) for t in _data(batch, _features(model)))
        if variant == "naive":
            wrapped, sync = model, (lambda m=model: average_gradients(m))
        elif variant == "bucketed":
            wrapped = BucketedDDP(model, bucket_mb=25.0)
            sync = wrapped.finish_gradient_synchronization
        else:
            wrapped, sync = DistributedDataParallel(model, bucket_cap_mb=25.0), (lambda: None)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step(wrapped=wrapped, sync=sync, opt=opt, x=x, y=y):
            opt.zero_grad()
            nn.functional.cross_entropy(wrapped(x), y).backward()
            sync()
            opt.step()

        steppers[variant] = step
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for variant in VARIANTS:
        _time_steps(steppers[variant], warmup)
    order = list(VARIANTS)
    while any(len(t) < steps for t in times.values()):  # rounds: every variant a few steps in turn
        order = order[1:] + order[:1]  # and each round in another order, so no variant is always last
        for variant in order:
            n = min(_CHUNK, steps - len(times[variant]))
            dist.barrier()
            times[variant] += _time_steps(steppers[variant], n)
    return {"times": times, "backend": dist.get_backend(), "device": str(device())}


def run(world_size: int = 2, steps: int = 10, model: str = "large", batch_size: int = 256,
        warmup: int = 2, timeout: float = 600.0) -> dict[str, Any]:
    """Measure all variants side by side; returns step times (s), samples/s and ratios."""
    if world_size < 1 or steps < 1:
        raise ValueError(f"world_size and steps must be at least 1, got {world_size} and {steps}.")
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must be divisible by world_size {world_size}.")
    # The baseline needs its own launch: half its steps right before the distributed runs, half right after.
    before = launch(_single, 1, model, batch_size, (steps + 1) // 2, warmup, timeout=timeout)[0]
    distributed = launch(_distributed, world_size, model, batch_size, steps, warmup, timeout=timeout)[0]
    single = before + launch(_single, 1, model, batch_size, steps // 2 or 1, warmup, timeout=timeout)[0]
    raw = {"single": single, **distributed["times"]}
    step = {k: statistics.median(v) for k, v in raw.items()}
    result: dict[str, Any] = {
        "model": model, "parameters": count_parameters(build_model(model, seed=0)),
        "world_size": world_size, "backend": distributed["backend"], "device": distributed["device"],
        "batch_size": batch_size, "steps": steps, "threads_per_process": 1,
        "step_time_s": step,
        "samples_per_s": {k: batch_size / v for k, v in step.items()},
        "step_time_vs_torch_ddp": {k: v / step["torch_ddp"] for k, v in step.items()},
        "speedup_vs_single": {k: step["single"] / v for k, v in step.items()},
        "raw_step_times_s": raw,
    }
    result["bucketed_over_torch_ddp"] = step["bucketed"] / step["torch_ddp"]
    return result


def report(result: dict[str, Any]) -> str:
    """The result as a small table, with the goal line."""
    w = result["world_size"]
    lines = [
        f"model {result['model']!r}: {result['parameters'] / 1e6:.1f} M parameters; global batch "
        f"{result['batch_size']} ({result['batch_size'] // w} per rank); {w} ranks, {result['backend']} "
        f"on {result['device'].split(':')[0]}, 1 thread per process; "
        f"median of {result['steps']} steps",
        f"{'variant':30s} {'step (ms)':>10s} {'samples/s':>10s} {'vs torch DDP':>13s} {'speedup vs 1 process':>21s}",
    ]
    for k in ("single", *VARIANTS):
        lines.append(f"{LABELS[k]:30s} {1e3 * result['step_time_s'][k]:10.1f} {result['samples_per_s'][k]:10.0f} "
                     f"{result['step_time_vs_torch_ddp'][k]:12.2f}x {result['speedup_vs_single'][k]:20.2f}x")
    ratio = result["bucketed_over_torch_ddp"]
    lines.append(f"BucketedDDP step time / torch DDP step time: {ratio:.2f} (goal: at most 1.10) "
                 f"-> {'met' if ratio <= 1.10 else 'not met'}")
    if w > (os.cpu_count() or 1):
        lines.append(f"note: {w} ranks on {os.cpu_count()} cores are oversubscribed.")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    result = run(world_size=args.world_size, steps=args.steps, model=args.model,
                 batch_size=args.batch_size)
    return publish(result, report(result), getattr(args, "json", None))
