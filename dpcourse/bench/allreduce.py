"""Naive vs textbook ring vs pipelined ring vs torch's all_reduce, measured side by side in one run.

    dpcourse bench allreduce --world-size 4 --sizes 1KB,1MB,64MB --repeats 15 --json out.json --plot out.png

For every size, ``world_size`` workers time the four algorithms in turn, round after round in a
shuffled order (so a noisy neighbour hurts all of them alike), in three launches whose rounds are
pooled, and the median time, algorithm bandwidth and bus bandwidth of each are reported, with the
bandwidth ratios pipelined/torch, ring/torch, pipelined/ring and ring/naive.

The speed goal belongs to the pipelined ring: ``pipelined/torch`` of at least 0.9x from 1 MB up,
on 2 and 4 ranks, measured on a quiet machine. The textbook ring is there to show what its
scheduling buys; it has no goal of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from dpcourse.bench import format_size, parse_sizes
from dpcourse.costmodel import algbw, busbw, memory_bandwidth

__all__ = ["main", "measure", "run_benchmark", "ALGORITHMS"]

ALGORITHMS = ("naive", "ring", "pipelined", "torch")
# (numerator, denominator): bandwidth ratios reported for every size, the speed goal's first
RATIOS = (("pipelined", "torch"), ("ring", "torch"), ("pipelined", "ring"), ("ring", "naive"))


def _ops() -> dict[str, Callable]:
    import torch.distributed as dist

    from dpcourse.allreduce import naive_all_reduce, ring_all_reduce
    from dpcourse.allreduce_pipelined import pipelined_ring_all_reduce

    return {"naive": naive_all_reduce, "ring": ring_all_reduce, "pipelined": pipelined_ring_all_reduce,
            "torch": dist.all_reduce}


BATCH_BYTES = 8 << 20  # small all-reduces are timed in batches of about this many bytes


def measure(nbytes: int, repeats: int = 5, algorithms: tuple[str, ...] = ALGORITHMS, warmup: int = 2,
            seed: int = 0) -> dict[str, list[float]]:
    """Run inside a worker: seconds of one all-reduce of a float32 tensor of ``nbytes`` bytes.

    Each round times every algorithm once, between barriers, in an order shuffled afresh every round
    (the same on every rank), so that no algorithm always runs right after the slowest one. Below
    8 MB a timing covers several calls back to back (up to 64, about 8 MB in all), as in training,
    where all-reduces follow one another; one call's time is the batch's divided by its length, so
    the wake-up of the first message and the skew of the barrier weigh less. A round's time is the
    slowest rank's: an all-reduce is finished only when every rank has the sum. Returns
    ``{algorithm: [seconds per call]}`` on every rank.
    """
    import random

    import torch
    import torch.distributed as dist

    from dpcourse.launch import device

    ops = _ops()
    n = max(1, nbytes // 4)
    x = torch.rand(n, dtype=torch.float32, device=device())
    times: dict[str, list[float]] = {a: [] for a in algorithms}
    clock = torch.zeros(1, dtype=torch.float64)
    order = list(algorithms)
    shuffle = random.Random(seed).shuffle  # same seed on every rank: same order everywhere
    batch = max(1, min(64, BATCH_BYTES // max(1, nbytes)))
    for round_ in range(warmup + repeats):
        shuffle(order)
        for name in order:
            x.zero_()  # sums of zeros stay zero however many calls run (no overflow, no denormals)
            dist.barrier()
            start = time.perf_counter()
            for _ in range(batch):
                ops[name](x)
            if x.is_cuda:
                torch.cuda.synchronize()
            clock[0] = (time.perf_counter() - start) / batch
            dist.all_reduce(clock, op=dist.ReduceOp.MAX)
            if round_ >= warmup:
                times[name].append(float(clock[0]))
    for name in algorithms:  # a fast wrong answer is worth nothing: check each sum once
        x.fill_(1.0)
        ops[name](x)
        if not bool((x == dist.get_world_size()).all()):
            raise RuntimeError(f"{name} all-reduce gave a wrong sum during the benchmark")
    return times


def _row(nbytes: int, world_size: int, times: dict[str, list[float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"size_bytes": nbytes, "size": format_size(nbytes)}
    for name, ts in times.items():
        t = statistics.median(ts)
        row[name] = {"time_s": t, "times_s": ts, "algbw_GBps": algbw(nbytes, t) / 1e9,
                     "busbw_GBps": busbw(nbytes, t, world_size) / 1e9}
    for a, b in RATIOS:
        if a in times and b in times:
            row[f"{a}_vs_{b}"] = row[a]["algbw_GBps"] / row[b]["algbw_GBps"]
    return row


def run_benchmark(world_size: int, sizes: list[int], repeats: int = 15, backend: str | None = None,
                  timeout: float = 600.0, progress: bool = True, launches: int = 3) -> dict[str, Any]:
    """Measure every algorithm at every size; return the JSON-ready result.

    The ``repeats`` rounds of a size are spread over ``launches`` fresh groups of workers and pooled:
    how fast a group is depends on where its processes and threads happen to run, and on a small
    shared machine that varies from one launch to the next as much as from round to round.
    """
    from dpcourse.launch import choose_backend, launch

    if world_size < 1:
        raise ValueError(f"--world-size must be at least 1, got {world_size}.")
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}.")
    if not sizes or min(sizes) < 4:
        raise ValueError("--sizes must list sizes of at least 4 bytes, e.g. 1KB,1MB,64MB.")
    backend = choose_backend(backend, world_size)
    launches = max(1, min(launches, repeats))
    split = [repeats // launches + (1 if i < repeats % launches else 0) for i in range(launches)]  # rounds per launch
    rows = []
    bar = tqdm(sizes, desc="all-reduce sizes", unit="size", disable=not progress, file=sys.stderr)
    for nbytes in bar:
        bar.set_postfix_str(f"measuring {format_size(nbytes)}")
        times: dict[str, list[float]] = {}
        for seed, rounds in enumerate(split):
            part = launch(measure, world_size, nbytes, rounds, ALGORITHMS, 2, seed, timeout=timeout, backend=backend)[0]
            for name, ts in part.items():
                times.setdefault(name, []).extend(ts)
        rows.append(_row(nbytes, world_size, times))
    bar.close()
    return {"world_size": world_size, "backend": backend, "repeats": repeats, "launches": launches, "dtype": "float32",
            "memory_bandwidth_GBps": memory_bandwidth(min(max(sizes), 64 << 20)) / 1e9 if max(sizes) >= 1024 else None,
            "results": rows}


def format_table(result: dict[str, Any]) -> str:
    """The result as a text table: median time and bandwidths per algorithm, then the ratios."""
    n = result["world_size"]
    lines = [f"all-reduce of float32 tensors on {n} rank(s), backend {result['backend']}, "
             f"median of {result['repeats']} rounds from {result.get('launches', 1)} launches "
             "(algbw = size/time, busbw = algbw x 2(N-1)/N)",
             f"{'size':>7} | {'algorithm':>9} | {'time':>10} | {'algbw GB/s':>10} | {'busbw GB/s':>10}"]
    for row in result["results"]:
        for name in ALGORITHMS:
            if name in row:
                r = row[name]
                lines.append(f"{row['size']:>7} | {name:>9} | {r['time_s'] * 1e3:>7.3f} ms | "
                             f"{r['algbw_GBps']:>10.3f} | {r['busbw_GBps']:>10.3f}")
        ratios = [f"{a}/{b} = {row[f'{a}_vs_{b}']:.2f}x" for a, b in RATIOS if f"{a}_vs_{b}" in row]
        lines.append(f"{'':>7}   bandwidth ratios: " + ", ".join(ratios))
    if result.get("memory_bandwidth_GBps"):
        lines.append(f"memory copy bandwidth of this machine (the physical ceiling): "
                     f"{result['memory_bandwidth_GBps']:.2f} GB/s")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path | None = None):
    """Algorithm bandwidth against size for each algorithm; saved to ``path`` if given."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = [r["size_bytes"] for r in result["results"]]
    for name, marker in zip(ALGORITHMS, "so^x"):
        ax.plot(sizes, [r[name]["algbw_GBps"] for r in result["results"]], marker=marker, label=name)
    if result.get("memory_bandwidth_GBps"):
        ax.axhline(result["memory_bandwidth_GBps"], ls=":", c="gray", label="memory copy")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [format_size(s) for s in sizes])
    ax.set_xlabel("tensor size")
    ax.set_ylabel("algorithm bandwidth (GB/s)")
    ax.set_title(f"all-reduce on {result['world_size']} ranks ({result['backend']})")
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def main(args: argparse.Namespace) -> int:
    sizes = args.sizes if isinstance(args.sizes, list) else parse_sizes(args.sizes)
    try:
        result = run_benchmark(args.world_size, sizes, args.repeats)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        plot(result, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0
