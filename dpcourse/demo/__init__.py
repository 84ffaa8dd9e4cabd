"""The scaling demo: real data-parallel training at each setting, throughput, speedup and efficiency.

``dpcourse demo --workers 1,2 --model small`` trains a ``WideMLP`` on synthetic data with
``dpcourse.launch`` for every combination of the comma-separated settings, repeats each run
(``--repeats``), plots the median and the spread as runs finish, and saves ``demo.png`` and
``demo.csv`` in ``--out``.

What the numbers are measured against, because a speedup without its baseline means nothing:

* **speedup** is against the run with the fewest workers of the same model, batch, backend,
  algorithm and link (with ``--workers 1,2``: one rank with one thread); efficiency is speedup
  divided by the ratio of worker counts;
* **vs best single process** is against the fastest *plain* single process this machine has: one
  process with 1, 2, ... up to all cores' intra-op threads, measured in the same run. On a CPU that
  is the fair rival: torch's intra-op threads already use every core for one process.

``--network PRESET`` runs the ranks on a simulated link (see :mod:`dpcourse.network`);
``--cluster GPU`` dilates that link for the demo's model (see :mod:`dpcourse.dilation`), so the run
stands for "GPU on that link": every output says which link and which dilation it used. The demo
warns when the load average says the machine is busy, because then every timing is someone else's.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

from tqdm import tqdm

__all__ = ["Setting", "Result", "run_setting", "run_single_process", "run_settings", "with_single_process_baselines",
           "add_speedups", "aggregate", "plot_results", "write_csv", "settings_from_args", "busy_warning",
           "link_for", "ideal_limit", "check_network", "summary", "main", "MODELS", "ALGORITHMS", "COLUMNS", "SINGLE",
           "REAL_MACHINE"]

MODELS = ("tiny", "small", "medium", "large")
ALGORITHMS = ("ddp", "bucketed", "naive")
SINGLE = "single"          # the algorithm of a plain single process: no process group, no DDP
REAL_MACHINE = "this machine (gloo over loopback)"
BUSY_SHARE = 0.5           # warn when the 1-minute load average exceeds this share of the cores


@dataclass
class Setting:
    """One run of the demo. ``batch_size`` is per worker for weak scaling, global for strong.

    ``network`` is a preset's name from ``dpcourse.links()`` ("" runs on this machine's real
    loopback); ``cluster`` a GPU's name from ``dpcourse.dilation.gpus()`` ("" for no dilation).
    """

    workers: int = 1
    model: str = "small"
    batch_size: int = 128
    backend: str = "gloo"
    algorithm: str = "ddp"
    scaling: str = "weak"
    threads: int = 1
    network: str = ""
    cluster: str = ""

    def per_worker_batch(self) -> int:
        return self.batch_size if self.scaling == "weak" else max(1, self.batch_size // self.workers)

    def describe(self) -> str:
        if self.algorithm == SINGLE:
            return f"1 process x {self.threads} thread{'s' if self.threads > 1 else ''}"
        return (f"{self.workers} rank{'s' if self.workers > 1 else ''} x "
                f"{self.threads} thread{'s' if self.threads > 1 else ''}")


@dataclass
class Result(Setting):
    """A finished setting: the median over its repeats, their spread, and the speedups.

    ``speedup``/``efficiency`` and ``vs_best_single`` are filled by :func:`add_speedups`.
    """

    link: str = REAL_MACHINE
    dilation: float = 1.0
    parameters: int = 0
    steps: int = 0
    repeats: int = 1
    seconds: float = 0.0
    step_ms: float = 0.0
    samples_per_s: float = 0.0
    samples_per_s_min: float = 0.0
    samples_per_s_max: float = 0.0
    speedup: float = float("nan")
    speedup_min: float = float("nan")
    speedup_max: float = float("nan")
    efficiency: float = float("nan")
    baseline: str = ""
    vs_best_single: float = float("nan")
    best_single: str = ""
    loss: float = float("nan")


COLUMNS = [f.name for f in fields(Result)]


# --------------------------------------------------------------------------- the link a setting runs on

_LINKS: dict[tuple, tuple] = {}  # a cluster's dilation is measured once per model and batch


def link_for(setting: Setting) -> tuple["Link | None", str]:  # noqa: F821 (dpcourse.network.Link)
    """The simulated link a setting runs on (None: the real machine) and the dilation, described."""
    from dpcourse.network import resolve

    if not setting.network and not setting.cluster:
        return None, ""
    if setting.algorithm == SINGLE:
        return None, ""  # one process sends nothing: no link to simulate
    if not setting.cluster:
        return resolve(setting.network), ""
    key = (setting.network, setting.cluster, setting.model, setting.batch_size)
    if key not in _LINKS:
        import torch

        from dpcourse.data import synthetic_classification
        from dpcourse.dilation import cluster_link
        from dpcourse.models import build_model

        # Measured at the batch a rank computes when it trains alone: the step the GPU stands in for.
        data = synthetic_classification(n=setting.batch_size, features=256, seed=1)
        with torch.random.fork_rng():
            _LINKS[key] = cluster_link(setting.network or "InfiniBand NDR", build_model(setting.model, seed=0),
                                       *data.tensors, gpu=setting.cluster)
    link, dilation = _LINKS[key]
    return link, str(dilation)


# --------------------------------------------------------------------------- one run

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

    def no_finish() -> None:
        """DDP averages the gradients during backward: nothing left to do after it."""

    finish: Callable[[], None] = no_finish
    if algorithm == "ddp":
        net: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(model)
    elif algorithm == "bucketed":
        from dpcourse.ddp_by_hand import BucketedDDP  # written in lesson 05's library work

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
    """Train at ``setting`` once on ``setting.workers`` processes and measure throughput (global samples/s)."""
    if setting.algorithm == SINGLE:
        return run_single_process(setting, steps, warmup)
    from dpcourse.launch import launch

    link, _ = link_for(setting)
    per_worker = setting.per_worker_batch()
    outs = launch(_train, setting.workers, setting.model, per_worker, setting.algorithm, steps, warmup,
                  timeout=timeout, backend=None if link is not None else setting.backend, threads=setting.threads,
                  network=link)
    # A step ends when the slowest rank ends it; the median step resists a noisy neighbour's spikes.
    per_step = [max(o["step_seconds"][i] for o in outs) for i in range(steps)]
    step_s = statistics.median(per_step)
    throughput = per_worker * setting.workers / step_s
    return Result(**asdict(setting), link=str(link) if link is not None else REAL_MACHINE,
                  dilation=link.dilation if link is not None else 1.0, parameters=outs[0]["parameters"],
                  steps=steps, seconds=sum(per_step), step_ms=1000 * step_s, samples_per_s=throughput,
                  samples_per_s_min=throughput, samples_per_s_max=throughput, loss=outs[0]["loss"])


def run_single_process(setting: Setting, steps: int = 20, warmup: int = 3) -> Result:
    """A plain single process (no process group) with ``setting.threads`` intra-op threads, in this process.

    It runs here rather than in a forked worker on purpose: a forked child that uses several OpenMP
    threads can hang once its parent has used them (see the course NOTES), and this process owns them.
    """
    import torch

    from dpcourse.data import synthetic_classification
    from dpcourse.models import build_model, count_parameters

    before = torch.get_num_threads()
    torch.set_num_threads(setting.threads)
    try:
        model = build_model(setting.model, seed=0)
        data = synthetic_classification(n=setting.batch_size * 4, features=256, seed=1)
        x_all, y_all = data.tensors
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        b = setting.batch_size
        times, loss = [], float("nan")
        for i in range(warmup + steps):
            lo = (i % 4) * b
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out = torch.nn.functional.cross_entropy(model(x_all[lo:lo + b]), y_all[lo:lo + b])
            out.backward()
            opt.step()
            if i >= warmup:
                times.append(time.perf_counter() - start)
                loss = float(out.detach())
    finally:
        torch.set_num_threads(before)
    step_s = statistics.median(times)
    throughput = b / step_s
    return Result(**asdict(setting), parameters=count_parameters(model), steps=steps, seconds=sum(times),
                  step_ms=1000 * step_s, samples_per_s=throughput, samples_per_s_min=throughput,
                  samples_per_s_max=throughput, loss=loss)


def aggregate(runs: list[Result]) -> Result:
    """One result from repeats of the same setting: median throughput, and the min and max as the spread."""
    rates = [r.samples_per_s for r in runs]
    mid = statistics.median(rates)
    typical = min(runs, key=lambda r: abs(r.samples_per_s - mid))
    return replace(typical, repeats=len(runs), samples_per_s=mid, samples_per_s_min=min(rates),
                   samples_per_s_max=max(rates), step_ms=statistics.median(r.step_ms for r in runs),
                   seconds=sum(r.seconds for r in runs))


# --------------------------------------------------------------------------- speedups, honestly named

def _group(r: Setting) -> tuple:
    return (r.model, r.batch_size, r.backend, r.algorithm, r.scaling, r.threads, r.network, r.cluster)


def add_speedups(results: list[Result]) -> None:
    """Fill the speedups of every result (in place), each with the name of its baseline.

    ``speedup`` (and its spread) is against a plain single process with one thread of the same model
    and batch (the global batch for strong scaling) when that was measured, else against the
    fewest-worker run of the same group. ``vs_best_single`` is against the fastest single process
    (any thread count) of the same model and batch, if measured.
    """
    singles: dict[tuple, list[Result]] = {}
    for r in results:
        if r.algorithm == SINGLE:
            singles.setdefault((r.model, r.batch_size), []).append(r)
    for r in results:
        pool = singles.get((r.model, r.batch_size), [])
        one_thread = [b for b in pool if b.threads == 1]
        if r.algorithm == SINGLE:
            base = min(pool, key=lambda b: b.threads)
            ratio = r.threads / base.threads
        elif one_thread:
            base, ratio = one_thread[0], r.workers
        else:
            base = min((b for b in results if b.algorithm != SINGLE and _group(b) == _group(r)),
                       key=lambda b: b.workers)
            ratio = r.workers / base.workers
        r.speedup = r.samples_per_s / base.samples_per_s
        r.speedup_min = (r.samples_per_s_min or r.samples_per_s) / base.samples_per_s
        r.speedup_max = (r.samples_per_s_max or r.samples_per_s) / base.samples_per_s
        r.efficiency = r.speedup / ratio
        r.baseline = base.describe()  # the group (and so its scaling) is in the line's label
        if pool:
            best = max(pool, key=lambda b: b.samples_per_s)
            r.vs_best_single = r.samples_per_s / best.samples_per_s
            r.best_single = best.describe()


def with_single_process_baselines(settings: list[Setting], cores: int | None = None) -> list[Setting]:
    """``settings`` plus a plain single process with 1 .. ``cores`` threads for each model and batch.

    Not for runs on GPUs (nccl): there a rank is a GPU, and the baseline is one rank on one GPU.
    """
    cores = cores or os.cpu_count() or 1
    extra, seen = [], set()
    for s in settings:
        key = (s.model, s.batch_size)
        if s.algorithm == SINGLE or s.backend == "nccl" or key in seen:
            continue
        seen.add(key)
        extra += [Setting(1, s.model, s.batch_size, "-", SINGLE, "weak", t) for t in range(1, cores + 1)]
    return extra + list(settings)


def run_settings(settings: list[Setting], steps: int = 20, warmup: int = 3, timeout: float = 120.0,
                 on_result: Callable[[list[Result], int, int], None] | None = None, repeats: int = 1) -> list[Result]:
    """Run every setting ``repeats`` times, in rounds (so a burst of load hits every setting alike).

    After each run, call ``on_result(results_so_far, done, total)`` with each setting's median so far.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats!r}.")
    runs: list[list[Result]] = [[] for _ in settings]
    total, done = repeats * len(settings), 0
    results: list[Result] = []
    for _ in range(repeats):
        for i, s in enumerate(settings):
            runs[i].append(run_setting(s, steps, warmup, timeout))
            done += 1
            results = [aggregate(rs) for rs in runs if rs]
            add_speedups(results)
            if on_result is not None:
                on_result(results, done, total)
    return results


# --------------------------------------------------------------------------- the machine and its limits

def busy_warning(cores: int | None = None, load: float | None = None) -> str | None:
    """A warning when the 1-minute load average says other work shares this machine, else None."""
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            return None
    if load <= BUSY_SHARE * cores:
        return None
    return (f"warning: the machine is busy (load average {load:.2f} over the last minute on {cores} cores): "
            "other programs share the cores, so timings are noisy and speedups lower than on an idle machine.")


def ideal_limit(results: list[Result], cores: int | None = None) -> tuple[int, str, str]:
    """How far a straight "ideal" line is honest: ``(ranks, short label, why)``.

    On this machine's CPU, ranks beyond the core count share cores: no speedup beyond ``cores`` is
    possible, so the line stops there. With a GPU per rank (nccl), it goes as far as the GPUs. On a
    simulated cluster each rank stands for a GPU, so the cluster's ideal goes on, but here each
    rank's computation still needs a core of its own: past ``cores`` the points understate it.
    """
    cores = cores or os.cpu_count() or 1
    dp = [r for r in results if r.algorithm != SINGLE]
    if any(r.backend == "nccl" for r in dp):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return gpus, f"{gpus} GPUs", f"{gpus} GPU(s), one per rank"
    if any(r.link != REAL_MACHINE for r in dp):
        return cores, f"{cores} cores", (f"on the simulated cluster each rank stands for a GPU, but computes on one of "
                                         f"{cores} CPU cores: past {cores} ranks they share cores and the points "
                                         "understate the cluster")
    return cores, f"{cores} cores", f"this machine has {cores} CPU cores, and ranks beyond {cores} share them"


def plot_results(results: list[Result], fig: "matplotlib.figure.Figure | None" = None,  # noqa: F821
                 warning: str | None = None) -> "matplotlib.figure.Figure":  # noqa: F821
    """Throughput, speedup and efficiency against workers: medians, min-max spread, baselines named."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(13, 5.4))
    fig.clf()
    axes = fig.subplots(1, 3)
    cores = os.cpu_count() or 1
    groups: dict[tuple, list[Result]] = {}
    for r in results:
        if r.algorithm != SINGLE:
            groups.setdefault(_group(r), []).append(r)
    singles = [r for r in results if r.algorithm == SINGLE]
    all_workers = sorted({r.workers for rs in groups.values() for r in rs}) or [1]
    baselines = sorted({r.baseline for rs in groups.values() for r in rs if r.baseline})
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r.workers)
        label = f"{key[0]}, B={key[1]} ({key[4]}), {key[3]}" + (f", {key[6]}" if key[6] else "") + \
            (f" as {key[7]}" if key[7] else "")
        xs = [r.workers for r in rs]

        def spread(lo, mid, hi):
            return [[m - a for a, m in zip(lo, mid)], [b - m for b, m in zip(hi, mid)]]

        thr = [r.samples_per_s for r in rs]
        axes[0].errorbar(xs, thr, yerr=spread([r.samples_per_s_min for r in rs], thr,
                                              [r.samples_per_s_max for r in rs]),
                         fmt="o-", capsize=3, label=label)
        sp = [r.speedup for r in rs]
        axes[1].errorbar(xs, sp, yerr=spread([r.speedup_min for r in rs], sp, [r.speedup_max for r in rs]),
                         fmt="o-", capsize=3, label=label)
        axes[2].plot(xs, [100 * r.efficiency for r in rs], "o-", label=label)
        best = max((s for s in singles if (s.model, s.batch_size) == (key[0], key[1])),
                   key=lambda s: s.samples_per_s, default=None)
        if best is not None:
            level = best.samples_per_s / (rs[0].samples_per_s / rs[0].speedup)
            axes[0].errorbar([1], [best.samples_per_s], yerr=[[best.samples_per_s - best.samples_per_s_min],
                                                                 [best.samples_per_s_max - best.samples_per_s]],
                             fmt="*", ms=13, capsize=3, color="tab:red",
                             label=f"best single process ({best.describe()}), {key[0]} B={key[1]}")
            cpu_only = " (this CPU's, not the cluster's)" if any(r.link != REAL_MACHINE for r in rs) else ""
            axes[1].axhline(level, color="tab:red", ls=":", lw=1.2,
                            label=f"best single process ({best.describe()}): {level:.2f}x{cpu_only}")
    limit, short, why = ideal_limit(results, cores)
    single_base = any(r.algorithm != SINGLE and r.baseline.startswith("1 process") for r in results)
    base = 1 if single_base else all_workers[0]
    if single_base:
        axes[1].plot([1], [1], "s", color="k", ms=6, label="baseline: 1 process x 1 thread")
    honest = [w for w in all_workers if w <= max(limit, base)]
    if honest:
        axes[1].plot(honest, [w / base for w in honest], "k--", lw=1, label=f"ideal (stops at {short})")
    beyond = [w for w in all_workers if w >= limit]
    simulated = any(r.link != REAL_MACHINE for rs in groups.values() for r in rs)
    if simulated and len(beyond) > 1:
        axes[1].plot(beyond, [w / base for w in beyond], "k:", lw=1, label="ideal for the cluster (a GPU per rank), "
                                                                             "not reachable here")
    axes[2].axhline(100, color="k", ls="--", lw=1)
    base_name = " / ".join(baselines) if baselines else "fewest workers"
    for ax, title, unit in zip(axes, ("throughput (median, min-max bars)", f"speedup vs {base_name}",
                                      "scaling efficiency"),
                               ("samples / s (all workers)", f"x  (baseline: {base_name})", "% of ideal")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("workers (ranks)")
        ax.set_ylabel(unit, fontsize=8)
        ax.set_xticks(all_workers)
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.set_ylim(bottom=0)
    for ax in axes[:2]:  # below the plots, where a legend can never cover a point or a line
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    repeats = max((r.repeats for r in results), default=1)
    links = sorted({r.link for rs in groups.values() for r in rs})
    lines = [f"measured on {cores} CPU core(s){_gpu_note()}, {repeats} repeat(s) per point, 1 thread per rank; "
             f"link: {'; '.join(links) or REAL_MACHINE}"]
    lines.append(f"ideal line stops at {limit} ranks: {why}")
    dilations = sorted({_dilation_text(r) for rs in groups.values() for r in rs} - {""})
    lines += [f"dilation: {d}" for d in dilations]
    if warning:
        lines.append(warning)
    fig.suptitle("\n".join(lines), fontsize=8)
    fig.tight_layout()
    return fig


def _dilation_text(r: Result) -> str:
    if not r.cluster:
        return ""
    key = (r.network, r.cluster, r.model, r.batch_size)
    return str(_LINKS[key][1]) if key in _LINKS else f"x{r.dilation:,.0f}"


def _gpu_note() -> str:
    import torch

    return f" and {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else ""


def write_csv(results: list[Result], path: Path) -> None:
    """One row per setting with the columns of :data:`COLUMNS`."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in results:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(r).items()})


# --------------------------------------------------------------------------- the command line

def _split(text: object) -> list[str]:
    return [p.strip() for p in str(text).split(",") if p.strip()]


def settings_from_args(args: argparse.Namespace) -> list[Setting]:
    """Every combination of the comma-separated CLI values, checked, with clear errors."""
    import torch

    try:
        workers = [int(w) for w in _split(args.workers)]
        batches = [int(b) for b in _split(args.batch_size)]
    except ValueError:
        raise ValueError("--workers and --batch-size take whole numbers separated by commas, "
                         "e.g. --workers 1,2,4") from None
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
                import dpcourse.ddp_by_hand  # noqa: F401
            except ImportError:
                raise ValueError("--algorithm bucketed needs dpcourse.ddp_by_hand.BucketedDDP, which this "
                                 "checkout lacks; use ddp or naive") from None
    network, cluster = check_network(args)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    default = "nccl" if gpus >= max(workers) and not network else "gloo"
    backends = _split(args.backend) if args.backend else [default]
    for b in backends:
        if b not in ("gloo", "nccl"):
            raise ValueError(f"unknown backend {b!r}: use gloo or nccl")
        if b == "nccl" and gpus < max(workers):
            raise ValueError(f"--backend nccl needs one GPU per worker: {max(workers)} workers, {gpus} GPU(s); "
                             "use gloo")
        if b == "nccl" and network:
            raise ValueError("--network simulates a link over gloo on CPU: drop --backend nccl or --network")
    scaling = getattr(args, "scaling", "weak")
    return [Setting(w, m, b, be, a, scaling, 1, network, cluster)
            for m, b, be, a, w in itertools.product(models, batches, backends, algorithms, sorted(workers))]


def check_network(args: argparse.Namespace) -> tuple[str, str]:
    """The preset name and GPU name from ``--network`` and ``--cluster``, checked ("" when not given)."""
    from dpcourse.dilation import gpus
    from dpcourse.network import links, resolve

    network, cluster = getattr(args, "network", None) or "", getattr(args, "cluster", None) or ""
    if network.lower() in ("none", "real"):
        network = ""
    if network:
        try:
            link = resolve(network)
        except ValueError:
            raise ValueError(f"unknown network {network!r}: choose from {', '.join(links())} (or leave it out "
                             "to run on this machine's real loopback)") from None
        network = next(name for name, preset in links().items() if preset == link)
    if cluster:
        if cluster not in gpus():
            raise ValueError(f"unknown GPU {cluster!r} for --cluster: choose from {', '.join(gpus())}")
        network = network or "InfiniBand NDR"
    return network, cluster


def summary(results: list[Result]) -> list[str]:
    """The real speedups, each against every baseline measured: one line per data-parallel setting."""
    lines = []
    for r in results:
        if r.algorithm == SINGLE:
            continue
        singles = sorted((s for s in results
                          if s.algorithm == SINGLE and (s.model, s.batch_size) == (r.model, r.batch_size)),
                         key=lambda s: s.threads)
        text = (f"{r.describe()} ({r.model}, B={r.batch_size} {r.scaling}, {r.algorithm}): "
                f"{r.samples_per_s:,.0f} samples/s")
        if singles:
            best = max(singles, key=lambda s: s.samples_per_s)
            text += "".join(f"; {r.samples_per_s / s.samples_per_s:.2f}x vs {s.describe()}"
                            + (" (this machine's best single process)" if s is best and len(singles) > 1 else "")
                            for s in singles)
        elif r.baseline and r.baseline != r.describe():
            text += f"; {r.speedup:.2f}x vs {r.baseline}"
        if r.speedup == r.speedup and r.repeats > 1:
            text += f" (speedup min-max over {r.repeats} repeats: {r.speedup_min:.2f}-{r.speedup_max:.2f})"
        lines.append(text)
    return lines


def main(args: argparse.Namespace) -> int:
    """``dpcourse demo``: run the settings, print a line per run, keep ``demo.png`` and ``demo.csv`` up to date."""
    import matplotlib

    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"dpcourse demo: {exc}", file=sys.stderr)
        return 2
    steps = args.steps if args.steps else 20
    repeats = getattr(args, "repeats", None)
    repeats = 3 if repeats is None else repeats
    if steps < 1:
        print("dpcourse demo: --steps must be at least 1", file=sys.stderr)
        return 2
    if repeats < 1:
        print("dpcourse demo: --repeats must be at least 1", file=sys.stderr)
        return 2
    live = bool(getattr(args, "show", False))
    if not live:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png, csv_path = out / "demo.png", out / "demo.csv"
    cores = os.cpu_count() or 1
    warning = busy_warning(cores)
    if warning:
        print(warning, flush=True)
    if max(s.workers for s in settings) > cores and settings[0].backend == "gloo":
        print(f"note: {max(s.workers for s in settings)} workers on {cores} CPU cores is oversubscribed: "
              "expect efficiency to fall for that reason alone.")
    if not getattr(args, "no_baselines", False):
        settings = with_single_process_baselines(settings, cores)
    first = next(s for s in settings if s.algorithm != SINGLE)
    if first.cluster:
        print(f"measuring the dilation: a training step of {first.model} here against an {first.cluster}...",
              flush=True)
    link, dilation = link_for(first)
    print(f"link: {link if link is not None else REAL_MACHINE}")
    if dilation:
        print(f"dilation: {dilation}")
    print(f"{len(settings)} settings x {repeats} repeat(s), {steps} timed steps each; plots and table go to {out}/")
    fig = plt.figure(figsize=(13, 5.4))
    if live:
        plt.ion()
        plt.show()
    start = time.perf_counter()

    def on_result(results: list[Result], done: int, total: int) -> None:
        r = results[(done - 1) % len(results)] if len(results) == len(settings) else results[-1]
        # One line per run on stdout (kept in a log), the bar on stderr (a terminal only): tqdm.write
        # lifts the bar out of the way while the line is printed.
        tqdm.write(f"[{done}/{total}] {time.perf_counter() - start:5.1f} s   "
                   f"{r.describe()} {r.model} B={r.batch_size} {r.algorithm}: "
                   f"{r.samples_per_s:9.0f} samples/s  speedup {r.speedup:4.2f}x vs {r.baseline}", file=sys.stdout)
        sys.stdout.flush()
        bar.update(1)
        plot_results(results, fig, warning)
        fig.savefig(png, dpi=110)
        write_csv(results, csv_path)
        if live:
            plt.pause(0.05)

    print("preparing: importing what DDP needs, once, before the workers start...", flush=True)
    bar = tqdm(total=len(settings) * repeats, desc="runs", unit="run", file=sys.stderr, disable=None)
    try:
        results = run_settings(settings, steps=steps, timeout=args.timeout if getattr(args, "timeout", None) else 120.0,
                               on_result=on_result, repeats=repeats)
    except Exception as exc:
        bar.close()  # before the message, so it starts on a line of its own
        print(f"dpcourse demo: a run failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        plt.close(fig)
    print(f"done in {time.perf_counter() - start:.1f} s: wrote {png} and {csv_path}")
    for line in summary(results):
        print(line)
    if any(r.link != REAL_MACHINE for r in results if r.algorithm != SINGLE):
        print("on a simulated link each rank stands for a device with its own link; on this machine its "
              f"computation still runs on one of {cores} cores")
    if any(math.isnan(r.loss) for r in results):
        print("warning: a run produced a NaN loss", file=sys.stderr)
    return 0
