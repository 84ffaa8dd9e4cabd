"""``nn.DataParallel`` taken apart: replicate, scatter, parallel_apply, gather, one phase at a time.

With two or more GPUs, :func:`forward_step_by_step` calls ``torch.nn.parallel``'s own primitives,
the ones ``nn.DataParallel.forward`` calls. Those primitives need GPUs (on a CPU they raise), so
without GPUs it runs plain-PyTorch stand-ins that do the same thing on CPU "devices": a deep copy
per replica, ``chunk`` along the batch, one Python thread per replica, ``cat`` of the outputs. The
returned :class:`Trace` says which kind ran and how long each phase took.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

__all__ = ["Trace", "forward_step_by_step", "threaded_apply", "gpu0_extra_bytes_estimate", "cuda_devices"]


@dataclass
class Trace:
    """What one step-by-step forward did: which primitives, and the seconds each phase took."""

    primitives: str                      # "torch.nn.parallel" or "CPU stand-ins"
    devices: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    chunk_sizes: list[int] = field(default_factory=list)


def cuda_devices() -> list[int]:
    """Indices of the visible CUDA devices (empty without CUDA)."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def threaded_apply(modules: Sequence[nn.Module], inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``modules[i](inputs[i])`` for every ``i``, each in its own Python thread (as ``parallel_apply`` does)."""
    if len(modules) != len(inputs):
        raise ValueError(f"need one input per module, got {len(modules)} modules and {len(inputs)} inputs.")
    outputs: list = [None] * len(modules)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            outputs[i] = modules[i](inputs[i])
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(modules))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return outputs


def forward_step_by_step(module: nn.Module, x: torch.Tensor, replicas: int | None = None) -> tuple[torch.Tensor, Trace]:
    """One DataParallel forward pass, phase by phase; returns ``(output on the first device, trace)``.

    With >= 2 GPUs ``module`` must sit on ``cuda:0`` and ``replicas`` (default: all GPUs) GPUs are
    used. Without GPUs, ``replicas`` (default 2) CPU copies stand in for the devices.
    """
    gpus = cuda_devices()
    n = replicas or (len(gpus) if len(gpus) >= 2 else 2)
    if n < 1:
        raise ValueError(f"replicas must be at least 1, got {n}.")
    if len(gpus) >= 2:
        if n > len(gpus):
            raise ValueError(f"replicas={n} but only {len(gpus)} GPUs are visible.")
        from torch.nn.parallel import gather, parallel_apply, replicate, scatter

        ids = gpus[:n]
        trace = Trace("torch.nn.parallel", [f"cuda:{i}" for i in ids])
        steps = [
            ("scatter", lambda _: scatter(x, ids)),
            ("replicate", lambda _: replicate(module, ids)),
        ]
    else:
        trace = Trace("CPU stand-ins", ["cpu"] * n)
        steps = [
            ("scatter", lambda _: x.chunk(n)),
            ("replicate", lambda _: [module] + [copy.deepcopy(module) for _ in range(n - 1)]),
        ]
    t = time.perf_counter()
    chunks = steps[0][1](None)
    _sync()
    trace.seconds["scatter"] = time.perf_counter() - t
    trace.chunk_sizes = [len(c) for c in chunks]
    t = time.perf_counter()
    copies = steps[1][1](None)[:len(chunks)]  # a batch smaller than n makes fewer chunks
    _sync()
    trace.seconds["replicate"] = time.perf_counter() - t
    t = time.perf_counter()
    if trace.primitives == "torch.nn.parallel":
        outputs = parallel_apply(copies, [(c,) for c in chunks])
    else:
        outputs = threaded_apply(copies, list(chunks))
    _sync()
    trace.seconds["parallel_apply"] = time.perf_counter() - t
    t = time.perf_counter()
    out = gather(outputs, 0) if trace.primitives == "torch.nn.parallel" else torch.cat(outputs)
    _sync()
    trace.seconds["gather"] = time.perf_counter() - t
    return out, trace


def gpu0_extra_bytes_estimate(model: nn.Module, batch: torch.Tensor, output_features: int,
                              optimizer_states: int = 1) -> dict[str, int]:
    """An ESTIMATE (not a measurement) of what GPU 0 holds under DataParallel that other GPUs do not.

    GPU 0 keeps the master copy's gradients (replica gradients are summed into it), the optimizer
    state (``optimizer_states`` tensors per parameter, 1 for SGD with momentum, 2 for Adam), the
    whole input batch before scatter and the whole gathered output. Activations are left out: each
    GPU holds those for its own chunk.
    """
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    parts = {
        "gradients of the master copy": params,
        "optimizer state": optimizer_states * params,
        "whole input batch": batch.numel() * batch.element_size(),
        "gathered outputs": batch.shape[0] * output_features * batch.element_size(),
    }
    parts["total"] = sum(parts.values())
    return parts
