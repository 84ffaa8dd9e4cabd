"""Time dilation: slow a simulated link down as much as this CPU is slower than the GPU it stands for.

A cluster's behaviour depends on one ratio: how long a training step computes against how long its
gradients are on the wire. A laptop core computes a step hundreds or thousands of times slower than
a GPU, so on a cluster's real link its communication would look free. Dilating the link by the same
factor restores the ratio:

    d = dilation_for(model, x, y, gpu="T4")        # measured here, against the GPU's FLOP rate
    link = links()["10GbE"].dilated(d.factor)      # the cluster "T4 GPUs on 10 GbE", slowed down
    dpcourse.launch(train, 2, network=link)

``d.factor = (seconds per step here) / (seconds per step on the GPU)``, where the GPU's time is the
step's floating-point operations (counted by ``torch.utils.flop_counter``) divided by the GPU's
nominal peak rate times the share of it real training reaches (``mfu``, model FLOP utilisation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

__all__ = ["GPU", "gpus", "step_flops", "step_seconds", "Dilation", "dilation_for", "cluster_link"]

if TYPE_CHECKING:
    from dpcourse.network import Link


@dataclass(frozen=True)
class GPU:
    """A GPU's nominal dense peak rates in FLOP/s, with where the figures come from."""

    name: str
    fp32: float
    bf16: float
    source: str

    def rate(self, dtype: str) -> float:
        return {"fp32": self.fp32, "bf16": self.bf16, "fp16": self.bf16}[dtype]


# Dense (not "with sparsity") peak rates from the vendors' datasheets.
_GPUS = {
    "H100": GPU("NVIDIA H100 SXM", 67e12, 989e12,
                "NVIDIA H100 Tensor Core GPU datasheet: FP32 67 TFLOPS, BF16 Tensor Core 989 TFLOPS dense "
                "(1,979 with sparsity)."),
    "H200": GPU("NVIDIA H200 SXM", 67e12, 989e12,
                "NVIDIA H200 datasheet: the H100's compute (FP32 67, BF16 989 TFLOPS dense), more and faster memory."),
    "A100": GPU("NVIDIA A100 SXM", 19.5e12, 312e12,
                "NVIDIA A100 datasheet: FP32 19.5 TFLOPS, BF16 Tensor Core 312 TFLOPS dense (624 with sparsity)."),
    "T4": GPU("NVIDIA T4", 8.1e12, 65e12,
              "NVIDIA T4 datasheet: FP32 8.1 TFLOPS, mixed-precision FP16 65 TFLOPS."),
}


def gpus() -> dict[str, GPU]:
    """The GPUs a dilation can stand for, by name."""
    return dict(_GPUS)


def _gpu(gpu: "GPU | str") -> GPU:
    if isinstance(gpu, GPU):
        return gpu
    if gpu in _GPUS:
        return _GPUS[gpu]
    raise ValueError(f"unknown GPU {gpu!r}: use one of {', '.join(_GPUS)} or a dpcourse.dilation.GPU(...).")


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()


def step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Floating-point operations of one forward and backward pass on ``(x, y)``, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        _step(model, x, y)
    return int(counter.get_total_flops())


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 5, threads: int = 1) -> float:
    """Median seconds of one forward and backward pass here, with ``threads`` intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _step(model, x, y)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            _step(model, x, y)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return sorted(times)[len(times) // 2]


@dataclass(frozen=True)
class Dilation:
    """How much slower this machine computes a step than the GPU it stands for."""

    factor: float
    here_s: float
    gpu_s: float
    flops: int
    gpu: GPU
    dtype: str
    mfu: float

    def __str__(self) -> str:
        return (f"one step ({self.flops / 1e9:.3g} GFLOP) takes {self.here_s * 1e3:.3g} ms here and "
                f"{self.gpu_s * 1e6:.3g} us on an {self.gpu.name} at {self.mfu:.0%} of its "
                f"{self.gpu.rate(self.dtype) / 1e12:.4g} TFLOP/s {self.dtype} peak: dilation x{self.factor:,.0f}")


def dilation_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gpu: "GPU | str" = "T4",
                 dtype: str = "fp32", mfu: float = 0.4, threads: int = 1, repeats: int = 5) -> Dilation:
    """Measure a training step of ``model`` here and set it against ``gpu``'s nominal rate.

    ``mfu`` is the share of the peak rate real training reaches (0.3-0.5 is typical for large models).
    Pass ``threads`` equal to the threads each rank will use, so that "here" is a rank's speed.
    """
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu is a share of the GPU's peak rate, between 0 and 1; got {mfu!r}.")
    card = _gpu(gpu)
    if dtype not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"dtype must be 'fp32', 'bf16' or 'fp16', got {dtype!r}.")
    flops = step_flops(model, x, y)
    here = step_seconds(model, x, y, repeats=repeats, threads=threads)
    there = flops / (card.rate(dtype) * mfu)
    return Dilation(here / there, here, there, flops, card, dtype, mfu)


def cluster_link(link: "Link | str", model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 gpu: "GPU | str" = "A100", **kwargs) -> tuple["Link", Dilation]:
    """``link`` dilated for ``model`` on ``gpu``: the cluster "``gpu`` GPUs on ``link``", run here.

    Returns the dilated link and the :class:`Dilation` it came from (print both: every output says
    which link and which dilation a run used).
    """
    from dpcourse.network import resolve

    base = resolve(link)
    d = dilation_for(model, x, y, gpu=gpu, **kwargs)
    named = replace(base, name=f"{base.name} between {d.gpu.name} GPUs")
    return named.dilated(d.factor), d
