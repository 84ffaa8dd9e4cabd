"""Count, size and time the collectives a block of code calls, and what each sharding strategy must send.

:class:`CollectiveLog` wraps the ``torch.distributed`` collectives for the duration of a ``with``
block and records every call: its name, the size of the full tensor it works on, and when it started
and returned. Code that calls them through ``torch.distributed`` is seen (the course's DDP and ZeRO,
FSDP2's ``fully_shard``, ``ZeroRedundancyOptimizer``); PyTorch's ``DistributedDataParallel`` is not:
its reducer calls the process group from C++.

Bytes on the wire are counted the nccl-tests way: the least each rank must send with the ring
algorithms, for ``N`` ranks and a full tensor of ``S`` bytes:

* all-reduce: ``2 (N-1)/N * S`` (a reduce-scatter and an all-gather);
* reduce-scatter (S = the input) and all-gather (S = the output): ``(N-1)/N * S`` each;
* broadcast: ``(N-1)/N * S`` on average over the ranks (a pipelined ring).

:func:`step_traffic` lists the collectives one training step needs under DDP and ZeRO-1/2/3, and
:func:`predict_seconds` prices such a list with the alpha-beta model of lesson 04.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

__all__ = ["Call", "CollectiveLog", "wire_bytes", "step_traffic", "predict_seconds"]

_OPS = {  # the function's name -> (short name, index of the argument holding the full tensor)
    "all_reduce": ("all-reduce", 0), "broadcast": ("broadcast", 0),
    "reduce_scatter_single": ("reduce-scatter", 1), "reduce_scatter_tensor": ("reduce-scatter", 1),
    "all_gather_single": ("all-gather", 0), "all_gather_into_tensor": ("all-gather", 0),
}
_SHARE = {"all-reduce": 2.0, "reduce-scatter": 1.0, "all-gather": 1.0, "broadcast": 1.0}


def wire_bytes(op: str, nbytes: float, world_size: int) -> float:
    """Bytes each rank sends (at least, ring algorithms) for one ``op`` on a full tensor of ``nbytes``."""
    return _SHARE[op] * (world_size - 1) / world_size * nbytes


@dataclass
class Call:
    op: str          # "all-reduce", "reduce-scatter", "all-gather", "broadcast"
    nbytes: int      # bytes of the full tensor
    start: float     # time.perf_counter() when called
    end: float       # ... when it returned (for async_op=True: when it was issued)
    asynchronous: bool


class CollectiveLog:
    """Record every collective called inside the block (on this rank).

        with CollectiveLog() as log:
            train_step()
        log.counts()           # {"all-gather": 4, "reduce-scatter": 2}
        log.bytes_sent()       # bytes this rank sent (ring lower bound)
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __enter__(self) -> "CollectiveLog":
        self._originals = {name: getattr(dist, name) for name in _OPS if hasattr(dist, name)}
        for name, original in self._originals.items():
            setattr(dist, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._originals.items():
            setattr(dist, name, original)

    def _wrap(self, name: str, original: Any) -> Any:
        op, index = _OPS[name]
        signature = inspect.signature(original)
        which = list(signature.parameters)[index]  # the argument that holds the full tensor

        def logged(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs).arguments
            tensor = bound[which]
            start = time.perf_counter()
            result = original(*args, **kwargs)
            self.calls.append(Call(op, tensor.numel() * tensor.element_size(), start, time.perf_counter(),
                                   bool(bound.get("async_op"))))
            return result

        return logged

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.calls:
            out[c.op] = out.get(c.op, 0) + 1
        return out

    def bytes_sent(self, world_size: int | None = None) -> float:
        n = world_size or dist.get_world_size()
        return sum(wire_bytes(c.op, c.nbytes, n) for c in self.calls)


def step_traffic(stage: str, param_bytes: float, world_size: int, units: int = 1,
                 buckets: int = 1) -> list[tuple[str, float]]:
    """The collectives of one training step as ``(op, bytes of the full tensor)``.

    ``param_bytes`` is the size of all parameters (= of all gradients); FSDP shards ``units`` groups
    of parameters (one collective each), DDP sends ``buckets`` buckets.
    """
    if stage == "DDP":
        return [("all-reduce", param_bytes / buckets)] * buckets
    if stage == "ZeRO-1":
        return [("reduce-scatter", param_bytes), ("all-gather", param_bytes)]
    per = param_bytes / units
    if stage == "ZeRO-2":    # all-gather once in forward, reduce-scatter in backward
        return [("all-gather", per)] * units + [("reduce-scatter", per)] * units
    if stage == "ZeRO-3":    # all-gather in forward, again in backward, reduce-scatter in backward
        return [("all-gather", per)] * (2 * units) + [("reduce-scatter", per)] * units
    raise ValueError(f"unknown stage {stage!r}: use DDP, ZeRO-1, ZeRO-2 or ZeRO-3.")


def predict_seconds(traffic: list[tuple[str, float]], world_size: int, alpha: float, beta: float) -> float:
    """Alpha-beta time of ``traffic`` run one collective after another on a ring of ``world_size`` ranks.

    A ring reduce-scatter or all-gather is ``N-1`` steps (messages); an all-reduce is both, ``2 (N-1)``.
    """
    if world_size == 1:
        return 0.0
    return sum(_SHARE[op] * (world_size - 1) * alpha + beta * wire_bytes(op, nbytes, world_size)
               for op, nbytes in traffic)
