"""The simulated link against its own cost model, and overlap against no overlap, in one run.

    dpcourse bench network [--link 1GbE] [--sizes 1MB,4MB,16MB,64MB] [--world-sizes 2,4]
                           [--cluster 100GbE] [--gpu A100] [--steps 8] [--json out.json]

Part 1 times ``dist.all_reduce`` (gloo's, under the simulated link) and the course's ring all-reduce
on ``--link`` at each size and world size, against the alpha-beta prediction of a ring on that link:
``2 (N-1) latency + 2 (N-1) / N * S / bandwidth``. Part 2 trains one model on the cluster link
``--cluster`` dilated for ``--gpu`` (see :mod:`dpcourse.dilation`), with a flat all-reduce after
backward, with ``BucketedDDP`` and with torch's DDP, interleaved in rounds inside the same workers,
and prints each step time against the flat one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dpcourse.bench import format_size, publish
from dpcourse.launch import launch
from dpcourse.network import Link, resolve

__all__ = ["predict", "time_allreduces", "allreduce_part", "ddp_part", "run", "report", "main"]

MODEL = (256, 768, 3)  # WideMLP(256, 768, 3): 1.4 M parameters, 5.5 MB of float32 gradients
DDP_VARIANTS = {"flat": "flat all-reduce after backward", "bucketed": "BucketedDDP (1 MB buckets)",
                "torch_ddp": "torch DDP (1 MB buckets)"}


def predict(link: Link, nbytes: int, world_size: int) -> float:
    """Seconds for a ring all-reduce of ``nbytes`` on ``world_size`` ranks of ``link``."""
    if world_size == 1:
        return 0.0
    return link.time(2 * (world_size - 1) * nbytes / world_size, 2 * (world_size - 1))


def time_allreduces(sizes: list[int], repeats: int, algorithms: tuple[str, ...] = ("gloo all_reduce", "course ring"),
                    ) -> dict[str, dict[int, list[float]]]:
    """In every worker: seconds of each all-reduce in ``algorithms`` at each size, ``repeats`` times.

    ``algorithms`` names from ``"gloo all_reduce"``, ``"course ring"`` (the textbook ring),
    ``"course pipelined ring"`` and ``"course naive"``. The
    rounds alternate the order of the algorithms; a barrier starts every timed call on all ranks.
    """
    from dpcourse.allreduce import naive_all_reduce, ring_all_reduce
    from dpcourse.allreduce_pipelined import pipelined_ring_all_reduce

    known = {"gloo all_reduce": dist.all_reduce, "course ring": ring_all_reduce,
             "course pipelined ring": pipelined_ring_all_reduce, "course naive": naive_all_reduce}
    unknown = [a for a in algorithms if a not in known]
    if unknown:
        raise ValueError(f"unknown algorithm(s) {unknown}: use names from {list(known)}.")
    ops = {a: known[a] for a in algorithms}
    times: dict[str, dict[int, list[float]]] = {k: {s: [] for s in sizes} for k in ops}
    for size in sizes:
        t = torch.ones(size // 4)
        for op in ops.values():
            op(t)  # warm-up: connections, buffers
        for i in range(repeats):
            for name in (list(ops) if i % 2 == 0 else list(ops)[::-1]):
                dist.barrier()
                start = time.perf_counter()
                ops[name](t)
                times[name][size].append(time.perf_counter() - start)
    return times


def allreduce_part(link: Link, sizes: list[int], world_sizes: list[int], repeats: int = 5,
                   timeout: float = 600.0) -> list[dict[str, Any]]:
    rows = []
    for n in world_sizes:
        times = launch(time_allreduces, n, sizes, repeats, network=link, timeout=timeout)[0]
        for size in sizes:
            p = predict(link, size, n)
            row = {"world_size": n, "bytes": size, "predicted_s": p}
            for name, per in times.items():
                row[name] = statistics.median(per[size])
            rows.append(row)
    return rows


def _data(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, MODEL[0], generator=g), torch.randint(0, 10, (batch,), generator=g)


def _ddp_steps(per_rank: int, steps: int) -> dict[str, list[float]]:
    from torch.nn.parallel import DistributedDataParallel

    from dpcourse.ddp_by_hand import BucketedDDP, flat_average_gradients
    from dpcourse.models import WideMLP

    x, y = _data(per_rank)
    steppers = {}
    for variant in DDP_VARIANTS:
        torch.manual_seed(0)
        model = WideMLP(*MODEL)
        if variant == "flat":
            wrapped, sync = model, (lambda m=model: flat_average_gradients(m))
        elif variant == "bucketed":
            wrapped = BucketedDDP(model, bucket_mb=1.0, first_bucket_mb=1.0)
            sync = wrapped.finish_gradient_synchronization
        else:
            wrapped, sync = DistributedDataParallel(model, bucket_cap_mb=1.0), (lambda: None)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step(wrapped=wrapped, sync=sync, opt=opt):
            opt.zero_grad()
            nn.functional.cross_entropy(wrapped(x), y).backward()
            sync()
            opt.step()

        steppers[variant] = step
        step()  # warm-up
    times: dict[str, list[float]] = {v: [] for v in DDP_VARIANTS}
    order = list(DDP_VARIANTS)
    for _ in range(steps):  # rounds, each in another order, so that every variant sees the same load
        order = order[1:] + order[:1]
        for variant in order:
            dist.barrier()
            start = time.perf_counter()
            steppers[variant]()
            times[variant].append(time.perf_counter() - start)
    return times


def _compute_only(per_rank: int, steps: int) -> list[float]:
    from dpcourse.models import WideMLP

    torch.manual_seed(0)
    model = WideMLP(*MODEL)
    x, y = _data(per_rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out = []
    for i in range(steps + 1):
        start = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i:
            out.append(time.perf_counter() - start)
    return out


def ddp_part(cluster: str = "100GbE", gpu: str = "A100", world_size: int = 2, per_rank: int = 256,
             steps: int = 8, timeout: float = 600.0) -> dict[str, Any]:
    from dpcourse.dilation import cluster_link
    from dpcourse.models import WideMLP

    torch.manual_seed(0)
    link, dilation = cluster_link(cluster, WideMLP(*MODEL), *_data(per_rank), gpu=gpu)
    compute = launch(_compute_only, 1, per_rank, steps, timeout=timeout)[0]
    times = launch(_ddp_steps, world_size, per_rank, steps, network=link, timeout=timeout)[0]
    step = {k: statistics.median(v) for k, v in times.items()}
    return {"link": str(link), "dilation": str(dilation), "world_size": world_size, "per_rank_batch": per_rank,
            "compute_only_s": statistics.median(compute), "step_s": step,
            "vs_flat": {k: v / step["flat"] for k, v in step.items()}, "raw_s": times,
            "gradient_bytes": sum(p.numel() * 4 for p in WideMLP(*MODEL).parameters())}


def run(link: str = "1GbE", sizes: list[int] | None = None, world_sizes: list[int] | None = None,
        repeats: int = 5, cluster: str = "100GbE", gpu: str = "A100", steps: int = 8) -> dict[str, Any]:
    base = resolve(link)
    rows = allreduce_part(base, sizes or [1 << 20, 4 << 20, 16 << 20, 64 << 20], world_sizes or [2, 4], repeats)
    return {"link": str(base), "allreduce": rows, "ddp": ddp_part(cluster, gpu, steps=steps)}


def report(result: dict[str, Any]) -> str:
    lines = [f"Part 1: all-reduce on {result['link']}; median of the timed rounds",
             f"{'ranks':>5s} {'size':>6s} {'predicted':>10s} {'gloo':>9s} {'ratio':>6s} {'ring':>9s} {'ratio':>6s}"]
    for r in result["allreduce"]:
        g, c, p = r["gloo all_reduce"], r["course ring"], r["predicted_s"]
        lines.append(f"{r['world_size']:5d} {format_size(r['bytes']):>6s} {p * 1e3:8.1f}ms {g * 1e3:7.1f}ms "
                     f"{g / p:6.2f} {c * 1e3:7.1f}ms {c / p:6.2f}")
    lines.append("ratio = measured / predicted by the alpha-beta model of a ring on this link")
    d = result["ddp"]
    lines += ["", f"Part 2: one training step, {d['world_size']} ranks x {d['per_rank_batch']} samples, "
              f"{d['gradient_bytes'] / 1e6:.1f} MB of gradients, on {d['link']}",
              f"  the dilation: {d['dilation']}",
              f"  computation alone (1 process, 1 thread, {d['per_rank_batch']} samples): "
              f"{d['compute_only_s'] * 1e3:.1f} ms",
              f"{'variant':34s} {'step':>9s} {'vs flat':>8s}"]
    for k, label in DDP_VARIANTS.items():
        lines.append(f"{label:34s} {d['step_s'][k] * 1e3:7.1f}ms {d['vs_flat'][k]:8.2f}")
    best = min(("bucketed", "torch_ddp"), key=lambda k: d["step_s"][k])
    lines.append(f"{DDP_VARIANTS[best]} takes {d['vs_flat'][best]:.2f}x the step time of the flat all-reduce after "
                 f"backward ({'faster' if d['vs_flat'][best] < 1 else 'not faster'}: overlap hides communication "
                 "behind the backward pass only where both take time)")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    result = run(link=args.link, sizes=args.sizes, world_sizes=[int(w) for w in str(args.world_sizes).split(",")],
                 repeats=args.repeats, cluster=args.cluster, gpu=args.gpu, steps=args.steps)
    return publish(result, report(result), getattr(args, "json", None))
