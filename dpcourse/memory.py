"""Where the memory of training goes: parameters, gradients, optimizer state, activations.

Each figure is counted from the tensors themselves (``numel * element_size``), per rank: for a sharded
tensor (an FSDP ``DTensor``) only the local shard counts, because that is what this rank holds.

* :func:`parameter_bytes`, :func:`gradient_bytes`, :func:`state_bytes` - what lives between steps;
* :class:`SavedActivations` - the tensors autograd keeps from forward for backward (the activations),
  measured with ``torch.autograd.graph.saved_tensors_hooks``;
* :func:`zero_bytes_per_rank` - the textbook accounting for mixed-precision Adam (2 + 2 + 12 bytes per
  parameter) under DDP and the three ZeRO stages, to set the measurements against.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

__all__ = ["tensor_bytes", "parameter_bytes", "gradient_bytes", "state_bytes", "SavedActivations",
           "zero_bytes_per_rank", "resident_bytes", "STAGES"]

STAGES = ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3")


def tensor_bytes(t: torch.Tensor | None) -> int:
    """Bytes this rank holds for ``t``: its local shard if it is a DTensor, 0 for None."""
    if t is None:
        return 0
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def parameter_bytes(model: nn.Module) -> int:
    return sum(tensor_bytes(p) for p in model.parameters())


def gradient_bytes(model: nn.Module) -> int:
    return sum(tensor_bytes(p.grad) for p in model.parameters())


def state_bytes(optimizer: Any) -> int:
    """Optimizer state on this rank (``ZeroOptimizer`` counts its own, master copy included)."""
    if hasattr(optimizer, "state_bytes"):
        return optimizer.state_bytes()
    inner = getattr(optimizer, "optim", optimizer)  # torch's ZeroRedundancyOptimizer wraps one
    return sum(tensor_bytes(t) for s in inner.state.values() for t in s.values() if torch.is_tensor(t))


class SavedActivations:
    """Count the bytes autograd saves for backward inside the block, parameters excluded.

        with SavedActivations(model) as saved:
            loss = loss_fn(model(x), y)
        saved.bytes      # what the forward pass keeps alive until backward
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self._params = {p.data_ptr() for p in model.parameters()} if model is not None else set()
        self._seen: set[tuple[int, int]] = set()
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.data_ptr() not in self._params and key not in self._seen:  # count each storage once
            self._seen.add(key)
            self.bytes += key[1]
        return t

    def __enter__(self) -> "SavedActivations":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)


def resident_bytes() -> int | None:
    """This process's resident memory (RSS) in bytes, as the operating system counts it; None where unknown."""
    try:  # Linux
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:  # elsewhere, if psutil happens to be installed
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 (no way to read it here: say so instead)
        return None


def zero_bytes_per_rank(numel: int, world_size: int, stage: str, param: int = 2, grad: int = 2,
                        state: int = 12) -> dict[str, float]:
    """Bytes per rank of parameters, gradients and optimizer state under ``stage`` (one of :data:`STAGES`).

    Defaults: mixed-precision Adam, bf16 parameters and gradients (2 + 2 bytes) and fp32 master weights
    with two fp32 moments (4 + 4 + 4 = 12 bytes) per parameter. ZeRO-1 shards the state, ZeRO-2 also
    the gradients, ZeRO-3 also the parameters.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}.")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}.")
    level = STAGES.index(stage)
    return {"parameters": numel * param / (world_size if level >= 3 else 1),
            "gradients": numel * grad / (world_size if level >= 2 else 1),
            "optimizer state": numel * state / (world_size if level >= 1 else 1)}
