"""The scaling demo: real data-parallel training at each setting, throughput, speedup and efficiency.

``dpcourse demo --workers 1,2,4 --model small,medium`` trains a ``WideMLP`` on synthetic data with
``dpcourse.launch`` for every combination of the comma-separated settings, plots the results as each
run finishes, and saves ``demo.png`` and ``demo.csv`` in ``--out``. Speedup is measured against the
run with the fewest workers that has the same model, batch, backend and algorithm; efficiency is
speedup divided by the ratio of worker counts. ``--batch-size`` is per worker (weak scaling) unless
``--scaling strong`` splits it as a global batch.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

__all__ = ["Setting", "Result", "run_setting", "run_settings", "add_speedups", "plot_results", "write_csv",
           "settings_from_args", "main", "MODELS", "ALGORITHMS", "COLUMNS"]

MODELS = ("tiny", "small", "medium", "large")
ALGORITHMS = ("ddp", "bucketed", "naive")


@dataclass
class Setting:
    """One run of the demo. ``batch_size`` is per worker for weak scaling, global for strong."""

    workers: int = 1
    model: str = "small"
    batch_size: int = 128
    backend: str = "gloo"
    algorithm: str = "ddp"
    scaling: str = "weak"

    def per_worker_batch(self) -> int:
        return self.batch_size if self.scaling == "weak" else max(1, self.batch_size // self.workers)


@dataclass
class Result(Setting):
    """A finished run: its setting plus what was measured (speedup/efficiency filled by :func:`add_speedups`)."""

    parameters: int = 0
    steps: int = 0
    seconds: float = 0.0
    step_ms: float = 0.0
    samples_per_s: float = 0.0
    speedup: float = float("nan")
    efficiency: float = float("nan")
    loss: float = float("nan")


COLUMNS = [f.name for f in fields(Result)]


def _train(model_name: str, per_worker_batch: int, algorithm: str, steps: int, warmup: int) -> dict:
    """Runs on every worker: a few SGD steps of data-parallel training; returns rank-local timings."""
    import torch
    import torch.distributed as dist

    from dpcourse.data import synthetic_classification
    from dpcourse.launch import device
    from dpcourse.models import build_model, count_parameters

    rank, world = dist.get_rank(), dist.get_world_size()
    dev = device()
    model = build_model(model_name, seed=0).to(dev)
    data = synthetic_classification(n=per_worker_batch * 4, features=256, seed=1 + rank)
    x_all, y_all = data.tensors[0].to(dev), data.tensors[1].to(dev)
    finish: Callable[[], None] = lambda: None
    if algorithm == "ddp":
        net: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(model)
    elif algorithm == "bucketed":
        from dpcourse.ddp import BucketedDDP  # written in lesson 05's library work

        net = BucketedDDP(model, 25.0)
        finish = net.finish_gradient_synchronization
    else:  # naive: one all-reduce per parameter after the whole backward pass
        net = model

        def finish() -> None:
            for p in model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(i: int) -> float:
        lo = (i % 4) * per_worker_batch
        x, y = x_all[lo:lo + per_worker_batch], y_all[lo:lo + per_worker_batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        finish()
        opt.step()
        return float(loss.detach())

    for i in range(warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    loss, step_seconds = float("nan"), []
    for i in range(steps):
        start = time.perf_counter()
        loss = step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        step_seconds.append(time.perf_counter() - start)
    # No teardown here: the launcher ends each worker once every result is in, so DDP's reducer is
    # never destroyed in a forked child (where gloo teardown can hang, see the course NOTES), and a
    # gc.collect() over the heap forked from the parent would cost about a second.
    return {"step_seconds": step_seconds, "loss": loss, "parameters": count_parameters(model)}


def run_setting(setting: Setting, steps: int = 20, warmup: int = 3, timeout: float = 120.0) -> Result:
    """Train at ``setting`` on ``setting.workers`` processes and measure throughput (global samples/s)."""
    from dpcourse.launch import launch

    per_worker = setting.per_worker_batch()
    outs = launch(_train, setting.workers, setting.model, per_worker, setting.algorithm, steps, warmup,
                  timeout=timeout, backend=setting.backend)
    # A step ends when the slowest rank ends it; the median step resists a noisy neighbour's spikes.
    per_step = [max(o["step_seconds"][i] for o in outs) for i in range(steps)]
    step_s = statistics.median(per_step)
    return Result(**asdict(setting), parameters=outs[0]["parameters"], steps=steps, seconds=sum(per_step),
                  step_ms=1000 * step_s, samples_per_s=per_worker * setting.workers / step_s, loss=outs[0]["loss"])


def _group(r: Result) -> tuple:
    return (r.model, r.batch_size, r.backend, r.algorithm, r.scaling)


def add_speedups(results: list[Result]) -> None:
    """Fill speedup and efficiency, each run against the fewest-worker run of its group (in place)."""
    for r in results:
        base = min((b for b in results if _group(b) == _group(r)), key=lambda b: b.workers)
        r.speedup = r.samples_per_s / base.samples_per_s
        r.efficiency = r.speedup / (r.workers / base.workers)


def run_settings(settings: list[Setting], steps: int = 20, warmup: int = 3, timeout: float = 120.0,
                 on_result: Callable[[list[Result], int, int], None] | None = None) -> list[Result]:
    """Run every setting in turn; after each, call ``on_result(results_so_far, done, total)``."""
    results: list[Result] = []
    for i, s in enumerate(settings, 1):
        results.append(run_setting(s, steps, warmup, timeout))
        add_speedups(results)
        if on_result is not None:
            on_result(results, i, len(settings))
    return results


def plot_results(results: list[Result], fig: "matplotlib.figure.Figure | None" = None) -> "matplotlib.figure.Figure":  # noqa: F821
    """Throughput, speedup and efficiency against workers, one line per group of settings."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(12, 3.8))
    fig.clf()
    axes = fig.subplots(1, 3)
    groups: dict[tuple, list[Result]] = {}
    for r in results:
        groups.setdefault(_group(r), []).append(r)
    all_workers = sorted({r.workers for r in results}) or [1]
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r.workers)
        label = f"{key[0]}, B={key[1]} ({key[4]}), {key[2]}, {key[3]}"
        xs = [r.workers for r in rs]
        axes[0].plot(xs, [r.samples_per_s for r in rs], "o-", label=label)
        axes[1].plot(xs, [r.speedup for r in rs], "o-", label=label)
        axes[2].plot(xs, [100 * r.efficiency for r in rs], "o-", label=label)
    base = all_workers[0]
    axes[1].plot(all_workers, [w / base for w in all_workers], "k--", lw=1, label="ideal")
    axes[2].axhline(100, color="k", ls="--", lw=1)
    for ax, title, unit in zip(axes, ("throughput", "speedup", "scaling efficiency"),
                               ("samples / s (all workers)", "x vs fewest workers", "%")):
        ax.set_title(title)
        ax.set_xlabel("workers")
        ax.set_ylabel(unit)
        ax.set_xticks(all_workers)
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.set_ylim(bottom=0)
    axes[1].legend(fontsize=7)
    import os

    cores = os.cpu_count() or 1
    fig.suptitle(f"measured on {cores} CPU core(s){_gpu_note()}; speedup against the fewest-worker run, "
                 "1 thread per worker", fontsize=9)
    fig.tight_layout()
    return fig


def _gpu_note() -> str:
    import torch

    return f" and {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else ""


def write_csv(results: list[Result], path: Path) -> None:
    """One row per run with the columns of :data:`COLUMNS`."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in results:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(r).items()})


def _split(text: object) -> list[str]:
    return [p.strip() for p in str(text).split(",") if p.strip()]


def settings_from_args(args: argparse.Namespace) -> list[Setting]:
    """Every combination of the comma-separated CLI values, checked, with clear errors."""
    import torch

    try:
        workers = [int(w) for w in _split(args.workers)]
        batches = [int(b) for b in _split(args.batch_size)]
    except ValueError:
        raise ValueError("--workers and --batch-size take whole numbers separated by commas, e.g. --workers 1,2,4") from None
    if not workers or min(workers) < 1:
        raise ValueError("--workers needs one or more positive numbers, e.g. --workers 1,2")
    if not batches or min(batches) < 1:
        raise ValueError("--batch-size needs positive numbers, e.g. --batch-size 64,256")
    models = _split(args.model)
    for m in models:
        if m not in MODELS:
            raise ValueError(f"unknown model {m!r}: choose from {', '.join(MODELS)}")
    algorithms = _split(args.algorithm)
    for a in algorithms:
        if a not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {a!r}: choose from {', '.join(ALGORITHMS)}")
        if a == "bucketed":
            try:
                import dpcourse.ddp  # noqa: F401
            except ImportError:
                raise ValueError("--algorithm bucketed needs dpcourse.ddp.BucketedDDP, which this checkout lacks; use ddp or naive") from None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backends = _split(args.backend) if args.backend else ["nccl" if gpus >= max(workers) else "gloo"]
    for b in backends:
        if b not in ("gloo", "nccl"):
            raise ValueError(f"unknown backend {b!r}: use gloo or nccl")
        if b == "nccl" and gpus < max(workers):
            raise ValueError(f"--backend nccl needs one GPU per worker: {max(workers)} workers, {gpus} GPU(s); use gloo")
    scaling = getattr(args, "scaling", "weak")
    return [Setting(w, m, b, be, a, scaling)
            for m, b, be, a, w in itertools.product(models, batches, backends, algorithms, sorted(workers))]


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


def main(args: argparse.Namespace) -> int:
    """``dpcourse demo``: run the settings, print a line per run, keep ``demo.png`` and ``demo.csv`` up to date."""
    import matplotlib

    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"dpcourse demo: {exc}", file=sys.stderr)
        return 2
    steps = args.steps if args.steps else 20
    if steps < 1:
        print("dpcourse demo: --steps must be at least 1", file=sys.stderr)
        return 2
    live = bool(getattr(args, "show", False))
    if not live:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png, csv_path = out / "demo.png", out / "demo.csv"
    cores = __import__("os").cpu_count() or 1
    if max(s.workers for s in settings) > cores and settings[0].backend == "gloo":
        print(f"note: up to {max(s.workers for s in settings)} workers on {cores} CPU cores is oversubscribed: "
              "expect efficiency to fall for that reason alone.")
    print(f"{len(settings)} runs, {steps} timed steps each; plots and table go to {out}/")
    fig = plt.figure(figsize=(12, 3.8))
    if live:
        plt.ion()
        plt.show()
    start = time.perf_counter()

    def on_result(results: list[Result], done: int, total: int) -> None:
        r = results[-1]
        print(f"\r{_bar(done, total)}  {time.perf_counter() - start:5.1f} s   "
              f"{r.workers} worker(s) {r.model} B={r.batch_size} {r.algorithm}/{r.backend}: "
              f"{r.samples_per_s:9.0f} samples/s  speedup {r.speedup:4.2f}x  efficiency {100 * r.efficiency:4.0f} %",
              flush=True)
        plot_results(results, fig)
        fig.savefig(png, dpi=110)
        write_csv(results, csv_path)
        if live:
            plt.pause(0.05)

    print("preparing: importing what DDP needs, once, before the workers start...", flush=True)
    print(_bar(0, len(settings)), flush=True)
    try:
        results = run_settings(settings, steps=steps, timeout=args.timeout if getattr(args, "timeout", None) else 120.0,
                               on_result=on_result)
    except Exception as exc:
        print(f"dpcourse demo: a run failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        plt.close(fig)
    print(f"done in {time.perf_counter() - start:.1f} s: wrote {png} and {csv_path}")
    if any(math.isnan(r.loss) for r in results):
        print("warning: a run produced a NaN loss", file=sys.stderr)
    return 0
