"""The doctor: what this machine offers for the course, and what to expect from it."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field


@dataclass
class Report:
    """Facts about the machine, gathered by :func:`doctor`."""

    python: str
    torch: str
    cpu_cores: int
    gpus: list[str] = field(default_factory=list)
    backends: dict[str, bool] = field(default_factory=dict)
    world_sizes: list[int] = field(default_factory=list)
    expectations: list[str] = field(default_factory=list)

    @property
    def default_backend(self) -> str:
        return "nccl" if self.gpus and self.backends.get("nccl") else "gloo"

    def __str__(self) -> str:
        gpu_text = ", ".join(f"{i}: {name}" for i, name in enumerate(self.gpus)) if self.gpus else "none"
        backends = ", ".join(f"{b} {'yes' if ok else 'no'}" for b, ok in self.backends.items())
        lines = [
            "dpcourse doctor",
            f"  python       {self.python}",
            f"  torch        {self.torch}",
            f"  CPU cores    {self.cpu_cores}",
            f"  GPUs         {gpu_text}",
            f"  backends     {backends}",
            f"  default      {self.default_backend} (what dpcourse.launch picks for 2 workers)",
            f"  world sizes  {', '.join(map(str, self.world_sizes))} (what the lessons launch)",
            "What to expect:",
        ]
        lines += [f"  - {text}" for text in self.expectations]
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the report as text
        p.text(str(self))


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def doctor() -> Report:
    """Look at this machine and say what the course will use and what to expect from it."""
    import torch
    import torch.distributed as dist

    cores = _usable_cores()
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    backends = {
        "gloo": dist.is_available() and dist.is_gloo_available(),
        "nccl": dist.is_available() and dist.is_nccl_available(),
        "mpi": dist.is_available() and dist.is_mpi_available(),
    }
    sizes = sorted({1, 2, 4} | ({len(gpus)} if len(gpus) > 1 else set()))
    expect: list[str] = []
    if not gpus:
        expect.append(f"CPU only: workers are processes (\"virtual nodes\") sharing {cores} core(s) over gloo.")
        if cores <= 2:
            expect.append("Speedups will be modest: 2 workers on 2 cores at best approach 2x over one "
                          "1-thread process, and 4 workers are oversubscribed (slower, still correct).")
        else:
            expect.append(f"Up to {cores} workers can each have a core of their own.")
        expect.append("GPU cells (NCCL, DataParallel across GPUs, AMP) will say they are skipped.")
    elif len(gpus) == 1:
        expect.append("One GPU: NCCL runs with world size 1; multi-rank lessons use gloo processes "
                      "(they may share the GPU). DataParallel has nothing to split across.")
    else:
        expect.append(f"{len(gpus)} GPUs: NCCL between GPUs; expect near-linear speedup for compute-heavy models.")
    if not backends["gloo"]:
        expect.append("No gloo backend: this torch build cannot run the CPU lessons; install a standard build.")
    return Report(python=platform.python_version(), torch=torch.__version__, cpu_cores=cores, gpus=gpus,
                  backends=backends, world_sizes=sizes, expectations=expect)
