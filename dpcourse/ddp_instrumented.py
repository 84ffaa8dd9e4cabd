"""Instruments for the DDP of lesson 05, hooked on from outside the algorithm.

* :class:`TimedBucketedDDP` is :class:`dpcourse.ddp_by_hand.BucketedDDP` plus a clock: for every
  synchronised step it records, per bucket, when its last gradient was ``ready``, when its
  all-reduce ``start``-ed and when it ``end``-ed. It overrides three of BucketedDDP's steps, calls
  the originals, and changes nothing they do.
* :class:`CollectiveCounter` counts the collectives a block of code calls.

    ddp = TimedBucketedDDP(model, bucket_mb=1.0)
    loss_fn(ddp(x), y).backward()
    ddp.finish_gradient_synchronization()
    ddp.timeline[-1]   # [{"bucket": 0, "bytes": ..., "params": ..., "ready": t, "start": t, "end": t}, ...]
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import torch.distributed as dist

from dpcourse.ddp_by_hand import Bucket, BucketedDDP

__all__ = ["TimedBucketedDDP", "CollectiveCounter"]


class TimedBucketedDDP(BucketedDDP):
    """:class:`BucketedDDP` that keeps a timeline: :attr:`timeline` gets one list per synchronised
    step, one entry per bucket, with the ``clock()`` times (``time.perf_counter`` unless given)."""

    def __init__(self, module, bucket_mb: float | None = 25.0, *, clock: Callable[[], float] = time.perf_counter,
                 **options: Any):
        self.clock = clock
        self.timeline: list[list[dict]] = []
        self._times: dict[int, dict[str, float]] = {}  # this step's, by bucket index
        super().__init__(module, bucket_mb, **options)

    def bucket_ready(self, b: Bucket) -> None:
        self._times.setdefault(b.index, {})["ready"] = self.clock()
        super().bucket_ready(b)

    def start_all_reduce(self, b: Bucket) -> None:
        times = self._times.setdefault(b.index, {})
        times.setdefault("ready", self.clock())  # not filled during backward: ready when finish sends it
        times["start"] = self.clock()
        super().start_all_reduce(b)
        b.work.get_future().then(lambda _fut: times.__setitem__("end", self.clock()))

    def finish_gradient_synchronization(self) -> None:
        synchronising = self._sync
        super().finish_gradient_synchronization()
        if not synchronising:  # inside no_sync(): no step to record
            return
        self.timeline.append([{"bucket": b.index, "bytes": b.nbytes, "params": len(b.params),
                               **self._settled(self._times.get(b.index, {}))} for b in self.buckets])
        self._times = {}

    def _settled(self, times: dict[str, float]) -> dict[str, float]:
        """The completion callback may run a moment after ``wait()`` returns: give it that moment."""
        deadline = time.perf_counter() + 0.05
        while "end" not in times and time.perf_counter() < deadline:
            time.sleep(0.0005)
        times.setdefault("end", self.clock())
        return times


class CollectiveCounter(contextlib.ContextDecorator):
    """Count calls of ``torch.distributed.all_reduce`` and ``broadcast`` made inside a ``with`` block.

        with CollectiveCounter() as counts:
            average_gradients(model)
        counts["all_reduce"]   # one per parameter
    """

    NAMES = ("all_reduce", "broadcast")

    def __enter__(self) -> dict[str, int]:
        self.counts = {name: 0 for name in self.NAMES}
        self._originals = {name: getattr(dist, name) for name in self.NAMES}
        for name, original in self._originals.items():
            def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                self.counts[_name] += 1
                return _original(*args, **kwargs)
            setattr(dist, name, counted)
        return self.counts

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._originals.items():
            setattr(dist, name, original)
