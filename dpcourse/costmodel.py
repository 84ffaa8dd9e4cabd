"""The alpha-beta cost model of an all-reduce, and the machine's memory bandwidth as a physical limit.

Sending a message of ``b`` bytes costs ``alpha + beta * b`` seconds: ``alpha`` is the fixed cost
of a message (latency), ``1 / beta`` the bandwidth. An algorithm is then a count of messages on its
critical path and of the bytes they carry:

* naive (to rank 0 and back): ``2 (N-1)`` messages of ``S`` bytes each, one after another;
* ring: ``2 (N-1)`` steps, each a message of ``S / N`` bytes (all ranks send at the same time).

Bandwidths follow the nccl-tests convention: *algorithm bandwidth* is ``S / time``; *bus bandwidth*
is that times ``2 (N-1) / N``, the share of the data each rank must send at the very least, so it
can be compared with the speed of a link whatever the number of ranks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

__all__ = ["ALGORITHMS", "AlphaBeta", "critical_path", "fit_alpha_beta", "algbw", "busbw", "memory_bandwidth"]

ALGORITHMS = ("naive", "ring")


def critical_path(algorithm: str, nbytes: float, world_size: int) -> tuple[float, float]:
    """``(messages, bytes)`` sent one after another by the busiest rank of ``algorithm``."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}.")
    if world_size == 1:
        return 0.0, 0.0
    steps = 2 * (world_size - 1)
    if algorithm == "naive":
        return float(steps), float(steps * nbytes)
    if algorithm == "ring":
        return float(steps), float(steps * nbytes / world_size)
    raise ValueError(f"unknown algorithm {algorithm!r}: use one of {ALGORITHMS}.")


@dataclass(frozen=True)
class AlphaBeta:
    """A fitted alpha-beta model: ``alpha`` seconds per message, ``beta`` seconds per byte."""

    alpha: float
    beta: float

    @property
    def bandwidth(self) -> float:
        """Link bandwidth ``1 / beta`` in bytes per second."""
        return 1.0 / self.beta if self.beta > 0 else float("inf")

    def predict(self, algorithm: str, nbytes: float, world_size: int) -> float:
        """Predicted seconds for one all-reduce of ``nbytes`` bytes on ``world_size`` ranks."""
        messages, moved = critical_path(algorithm, nbytes, world_size)
        return self.alpha * messages + self.beta * moved


def fit_alpha_beta(samples: Iterable[tuple[str, float, int, float]]) -> AlphaBeta:
    """Least-squares fit of alpha and beta to measured ``(algorithm, nbytes, world_size, seconds)``.

    Each sample's error is weighted by ``1 / seconds`` (relative error), so microsecond and
    second-long runs count alike. Both parameters are kept non-negative.
    """
    rows, target = [], []
    for algorithm, nbytes, world_size, seconds in samples:
        if seconds <= 0:
            raise ValueError(f"measured times must be positive, got {seconds!r}.")
        messages, moved = critical_path(algorithm, nbytes, world_size)
        rows.append([messages / seconds, moved / seconds])
        target.append(1.0)
    if len(rows) < 2:
        raise ValueError("fitting alpha and beta needs at least two measurements (two sizes).")
    a = np.asarray(rows, dtype=np.float64)
    b = np.asarray(target)
    (alpha, beta), *_ = np.linalg.lstsq(a, b, rcond=None)
    if alpha < 0 or beta < 0:  # refit the one parameter that makes sense on its own
        if alpha < 0:
            alpha, beta = 0.0, float(np.linalg.lstsq(a[:, 1:], b, rcond=None)[0][0])
        else:
            alpha, beta = float(np.linalg.lstsq(a[:, :1], b, rcond=None)[0][0]), 0.0
    return AlphaBeta(float(max(alpha, 0.0)), float(max(beta, 0.0)))


def algbw(nbytes: float, seconds: float) -> float:
    """Algorithm bandwidth in bytes per second: tensor size over time."""
    return nbytes / seconds


def busbw(nbytes: float, seconds: float, world_size: int) -> float:
    """Bus bandwidth in bytes per second: algorithm bandwidth times ``2 (N-1) / N``."""
    return algbw(nbytes, seconds) * (2 * (world_size - 1) / world_size if world_size > 1 else 0.0)


def memory_bandwidth(nbytes: int = 64 << 20, repeats: int = 5) -> float:
    """Bytes per second of a large in-memory copy (each byte read once and written once).

    No message between processes on one machine can go faster than memory can be copied: this
    is the physical ceiling for the all-reduce bandwidths measured on a CPU-only machine.
    """
    if nbytes < 1024:
        raise ValueError(f"measure memory bandwidth with at least 1KB, got {nbytes} bytes.")
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages once
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best
