"""Gradient compression side by side: bytes per step and step time of DDP's communication hooks on one link.

    dpcourse bench compression --network 10GbE [--gpu A100] [--hook my_hook.py:topk_hook --hook-state "TopKState(0.01)"]

Every method trains the same model from the same weights on the same batches, under torch's
``DistributedDataParallel`` with one bucket, on the simulated link ``--network``: default DDP (fp32
all-reduce), bf16 (``dpcourse.compression.bf16_hook``), torch's PowerSGD at ranks 1 and 4, and your
hook when ``--hook FILE:FUNCTION`` is given (a ``.py`` file, or a notebook whose cells tagged
``graded`` define it; ``--hook-state`` is a Python expression evaluated next to it, e.g.
``"TopKState(0.01)"``). All methods run in the same workers, one step each in turn, so they share the
machine's load. Bytes are what each rank's process group sent in one step (after PowerSGD's plain
warm-up steps); the step time is the median of rank 0's timed steps. ``--gpu`` dilates the link for the
model, as lesson 10 does, so that computing and communicating keep the ratio they have on that GPU;
``--gpu none`` runs the link as it is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpcourse.bench import publish

__all__ = ["run", "report", "main", "METHODS", "load_hook", "lesson_model"]

METHODS = ("none", "bf16", "powersgd-1", "powersgd-4")
LABELS = {"none": "default DDP (fp32)", "bf16": "bf16 cast", "powersgd-1": "PowerSGD rank 1",
          "powersgd-4": "PowerSGD rank 4", "yours": "your hook"}
PRELUDE = "import torch\nimport torch.distributed as dist\nfrom torch import nn\n"


def lesson_model() -> nn.Module:
    """Lesson 10's model: an MLP on the 8x8 digits, 300 k parameters, little computation per byte."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10))


def _model(name: str) -> nn.Module:
    if name == "lesson10":
        return lesson_model()
    from dpcourse.models import build_model

    return build_model(name, seed=0)


def _batches(name: str, model: nn.Module, per_rank: int, world: int,
             steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Global batches (the same on every rank), ``per_rank * world`` samples each."""
    if name == "lesson10":
        from dpcourse.data import digits_split

        x, y = digits_split()[0].tensors
    else:
        from dpcourse.data import synthetic_classification

        features = next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features
        x, y = synthetic_classification(per_rank * world * 4, features=features, seed=0).tensors
    n = per_rank * world
    return [(x[(i * n + torch.arange(n)) % len(y)], y[(i * n + torch.arange(n)) % len(y)]) for i in range(steps)]


def load_hook(spec: str, state: str | None = None) -> tuple[Any, dict]:
    """``FILE:FUNCTION`` -> (the hook, the namespace it was defined in); a one-line ValueError if not found."""
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name:
        raise ValueError(f"--hook takes FILE:FUNCTION, e.g. my_hook.py:topk_hook; got {spec!r}.")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--hook: there is no file {path!r}.")
    if file.suffix == ".ipynb":
        cells = json.loads(file.read_text()).get("cells", [])
        graded = [c for c in cells
                  if c.get("cell_type") == "code" and "graded" in c.get("metadata", {}).get("tags", [])]
        if not graded:
            raise ValueError(f"--hook: {path} has no code cell tagged 'graded'; export your hook to a .py file.")
        source = PRELUDE + "\n\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                                       for c in graded)
    else:
        source = PRELUDE + file.read_text()  # torch, dist and nn, as in the exercise notebook
    namespace: dict = {"__name__": "dpcourse_bench_hook", "__file__": str(file)}
    try:  # dont_inherit: this module's `from __future__ import annotations` would turn the hook's
        # annotations into strings, and DDP refuses a hook whose bucket annotation is not dist.GradBucket
        exec(compile(source, str(file), "exec", dont_inherit=True), namespace)
    except Exception as exc:  # the learner's file: say what broke, in one line
        raise ValueError(f"--hook: running {path} raised {type(exc).__name__}: {exc}") from None
    hook = namespace.get(name)
    if not callable(hook):
        raise ValueError(f"--hook: {path} defines no function {name!r}.")
    if state:
        try:
            eval(state, dict(namespace))
        except Exception as exc:
            raise ValueError(f"--hook-state {state!r} raised {type(exc).__name__}: {exc}") from None
    return hook, namespace


def _worker(methods: list[str], hook: Any, namespace: dict, state: str | None, model_name: str, per_rank: int,
            steps: int, warmup: int) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from dpcourse import compression

    r, w = dist.get_rank(), dist.get_world_size()
    runs = {}
    for method in methods:
        model = _model(model_name)
        ddp = DistributedDataParallel(model, bucket_cap_mb=25)  # one bucket (see lesson 10: PowerSGD on gloo)
        if method == "yours":
            ddp.register_comm_hook(eval(state, dict(namespace)) if state else None, hook)
        else:
            compression.register(ddp, method)
        runs[method] = (model, ddp, torch.optim.SGD(model.parameters(), lr=0.01), [], [])
    data = _batches(model_name, runs[methods[0]][0], per_rank, w, warmup + steps)
    for i, (x, y) in enumerate(data):
        x, y = x[r * per_rank:(r + 1) * per_rank], y[r * per_rank:(r + 1) * per_rank]
        for method, (model, ddp, opt, times, sent) in runs.items():
            seconds, counted = compression.timed_step(ddp, opt, x, y)
            if i >= warmup:
                times.append(seconds)
                sent.append(counted.total)
    out = {}
    for method, (model, _, _, times, sent) in runs.items():
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        copies = [torch.empty_like(flat) for _ in range(w)]
        dist.all_gather(copies, flat)
        out[method] = {"step_s": statistics.median(times), "bytes": max(sent),
                       "identical": all(torch.equal(c, copies[0]) for c in copies)}
    return out


def run(network: Any = "10GbE", world_size: int = 2, steps: int = 6, warmup: int = 3, model: str = "lesson10",
        per_rank: int = 128, gpu: str | None = "A100", hook: str | None = None, hook_state: str | None = None,
        timeout: float = 600.0) -> dict:
    """Measure every method in one launch on ``network``; returns bytes, step times and ratios."""
    from dpcourse.launch import launch
    from dpcourse.network import resolve

    if world_size < 2 or steps < 1 or warmup < 3 or per_rank < 1:
        raise ValueError(f"need world_size >= 2, steps >= 1, warmup >= 3 (PowerSGD's plain steps) and per_rank >= 1; "
                         f"got {world_size}, {steps}, {warmup}, {per_rank}.")
    link = resolve(network)
    if link is None:
        raise ValueError("--network is required: a preset (dpcourse.links()) or 'ideal' to count bytes only.")
    learner, namespace = load_hook(hook, hook_state) if hook else (None, {})
    dilation = None
    if gpu and gpu.lower() != "none" and link.bandwidth != float("inf"):
        from dpcourse.dilation import cluster_link

        m = _model(model)
        (x, y), = _batches(model, m, per_rank, 1, 1)
        link, dilation = cluster_link(link, m, x, y, gpu=gpu)
    methods = list(METHODS) + (["yours"] if learner else [])
    measured = launch(_worker, world_size, methods, learner, namespace, hook_state, model, per_rank, steps, warmup,
                      network=link, timeout=timeout, threads=1)[0]
    params = sum(p.numel() for p in _model(model).parameters())
    base = measured["none"]
    return {
        "link": str(link), "dilation": str(dilation) if dilation else None, "model": model, "parameters": params,
        "world_size": world_size, "per_rank": per_rank, "steps": steps, "hook": hook, "hook_state": hook_state,
        "methods": {m: {**v, "bytes_ratio": base["bytes"] / v["bytes"] if v["bytes"] else float("inf"),
                        "speedup_vs_default": base["step_s"] / v["step_s"]} for m, v in measured.items()},
    }


def report(result: dict) -> str:
    """The result as a table, one line per method; every ratio is against default DDP on the same link."""
    lines = [f"model {result['model']!r}: {result['parameters']:,} parameters; {result['world_size']} ranks x "
             f"{result['per_rank']} samples; median of {result['steps']} steps",
             f"link: {result['link']}"]
    if result["dilation"]:
        lines.append(f"dilation: {result['dilation']}")
    lines.append(f"{'method':22s} {'bytes/step/rank':>16s} {'fewer bytes':>12s} {'step (ms)':>10s} "
                 f"{'speedup vs default DDP':>23s}  ranks identical")
    for m, v in result["methods"].items():
        lines.append(f"{LABELS[m]:22s} {v['bytes']:16,} {v['bytes_ratio']:11.1f}x {1e3 * v['step_s']:10.1f} "
                     f"{v['speedup_vs_default']:22.2f}x  {'yes' if v['identical'] else 'NO'}")
    if not all(v["identical"] for v in result["methods"].values()):
        lines.append("warning: some method left the ranks with different parameters: its hook is wrong.")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    try:
        result = run(network=args.network, world_size=args.world_size, steps=args.steps, model=args.model,
                     per_rank=args.per_rank, gpu=args.gpu, hook=args.hook, hook_state=args.hook_state)
    except ValueError as exc:
        print(f"dpcourse bench compression: {exc}", file=sys.stderr)
        return 2
    return publish(result, report(result), getattr(args, "json", None))
