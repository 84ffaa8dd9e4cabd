# exercise: 05
# expect: full
# A frozen copy of the course's own implementation (dpcourse/ddp_by_hand.py at 384b53d), pasted as the
# learner's code: refactoring the library does not change what is graded here.
"""Data-parallel training written by hand: average gradients after backward, then overlap and buckets.

Two ways to keep every rank's model identical, from simplest to fastest:

* :func:`average_gradients` - after ``backward()``, one all-reduce per parameter, divided by the
  world size. Correct, and slow: many small collectives, none overlapping the backward pass.
* :class:`BucketedDDP` - a wrapper shaped like ``torch.nn.parallel.DistributedDataParallel``. Gradient
  hooks notice each gradient as it becomes ready, pack gradients into buckets of about
  ``bucket_mb`` megabytes and start an asynchronous all-reduce as soon as a bucket is full, while
  autograd is still computing the gradients of earlier layers.

    model = BucketedDDP(net, bucket_mb=25.0)       # broadcasts rank 0's parameters and buffers
    loss_fn(model(x), y).backward()                 # buckets are all-reduced while backward runs
    model.finish_gradient_synchronization()         # wait, write the averaged gradients back
    optimizer.step()

:class:`CollectiveCounter` counts the collectives a block of code calls, for lessons and tests.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["average_gradients", "flat_average_gradients", "broadcast_parameters", "BucketedDDP",
           "Bucket", "CollectiveCounter"]


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _require_group(what: str) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{what} needs a process group: call it inside a worker started by "
                           "dpcourse.launch (or after torch.distributed.init_process_group).")


def average_gradients(module: nn.Module) -> None:
    """Replace every ``.grad`` of ``module`` by its mean over all ranks: one all-reduce per parameter.

    Call it after ``backward()`` and before ``optimizer.step()``. Parameters without a gradient on
    this rank take part with zeros, so that every rank calls the same collectives in the same order.
    """
    _require_group("average_gradients")
    world = dist.get_world_size()
    for p in module.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)


def flat_average_gradients(module: nn.Module) -> None:
    """Like :func:`average_gradients`, with a single all-reduce of all gradients packed into one tensor."""
    _require_group("flat_average_gradients")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


def broadcast_parameters(module: nn.Module, src: int = 0) -> int:
    """Copy rank ``src``'s parameters and buffers to every rank; returns the number of broadcasts."""
    _require_group("broadcast_parameters")
    tensors = list(module.parameters()) + list(module.buffers())
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=src)
    return len(tensors)


@dataclass
class Bucket:
    """Parameters whose gradients travel together in one all-reduce."""

    index: int
    params: list[nn.Parameter]
    names: list[str]
    numel: int
    pending: int = 0                   # gradients of this step not ready yet
    work: Any = None                   # the asynchronous all-reduce, once started
    flat: torch.Tensor | None = None   # gradients / world (then their averages), then one 'had a grad' flag each
    times: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return self.numel * self.params[0].element_size()


class BucketedDDP(nn.Module):
    """Data-parallel wrapper: gradients are averaged in buckets that are all-reduced during backward.

    ``bucket_mb`` is the bucket size in megabytes (``None``: one bucket for everything; a tiny value:
    one bucket per parameter). Like PyTorch's DDP, the first bucket is kept small (at most
    ``first_bucket_mb``) so that communication starts as early as possible in backward. Buckets are
    filled in reverse registration order, the order in which a model that runs its layers in
    registration order produces gradients, and are all-reduced strictly in bucket order so that
    every rank issues the same collectives in the same sequence.

    Parameters that do not require gradients are broadcast at construction and never reduced; a
    parameter shared by two layers is reduced once; a parameter that got no gradient on some rank
    takes part with zeros, and if no rank produced a gradient for it, its ``.grad`` stays ``None``
    (each value travels with a flag in the same all-reduce, so no extra collective is needed).
    With ``record_timeline=True`` each synchronised step appends, per bucket, the ``perf_counter``
    times when it became ``ready``, when its all-reduce ``start``-ed and when it ``end``-ed, to
    :attr:`timeline`. ``broadcast=False`` skips the initial broadcast (replicas known to be equal).
    """

    def __init__(self, module: nn.Module, bucket_mb: float | None = 25.0, *, first_bucket_mb: float = 1.0,
                 record_timeline: bool = False, broadcast: bool = True):
        super().__init__()
        _require_group("BucketedDDP")
        if bucket_mb is not None and (isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float))
                                      or bucket_mb < 0):
            raise ValueError(f"bucket_mb must be a size in megabytes (>= 0) or None for one bucket, got {bucket_mb!r}.")
        self.module = module
        self.bucket_mb = bucket_mb
        self.record_timeline = record_timeline
        self.timeline: list[list[dict]] = []
        self._sync = True
        self._next = 0  # index of the next bucket to all-reduce
        if broadcast:
            broadcast_parameters(module)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]  # shared ones appear once
        self.buckets: list[Bucket] = self._make_buckets(list(reversed(named)), bucket_mb, first_bucket_mb)
        self._where: dict[int, Bucket] = {id(p): b for b in self.buckets for p in b.params}
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad_ready)
                         for b in self.buckets for p in b.params]
        self._reset()

    @staticmethod
    def _make_buckets(named: list[tuple[str, nn.Parameter]], bucket_mb: float | None,
                      first_bucket_mb: float) -> list[Bucket]:
        cap = float("inf") if bucket_mb is None else bucket_mb * 2**20
        first_cap = min(cap, first_bucket_mb * 2**20) if bucket_mb is not None else cap
        buckets: list[Bucket] = []
        for name, p in named:
            last = buckets[-1] if buckets else None
            limit = first_cap if len(buckets) == 1 else cap
            fits = (last is not None and last.nbytes < limit and last.params[0].dtype == p.dtype
                    and last.params[0].device == p.device)
            if fits:
                last.params.append(p)
                last.names.append(name)
                last.numel += p.numel()
            else:
                buckets.append(Bucket(len(buckets), [p], [name], p.numel()))
        return buckets

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate gradients locally and communicate nothing; the next
        synchronised backward (and ``finish_gradient_synchronization``) averages the sum."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous

    def _reset(self) -> None:
        self._next = 0
        for b in self.buckets:
            b.pending, b.work, b.times = len(b.params), None, {}

    def _on_grad_ready(self, p: torch.Tensor) -> None:
        if not self._sync:
            return
        b = self._where[id(p)]
        if b.work is not None:
            raise RuntimeError("a gradient arrived for a bucket that was already sent: call "
                               "finish_gradient_synchronization() after every backward() (or use no_sync()).")
        b.pending -= 1
        if b.pending == 0:
            if self.record_timeline:
                b.times["ready"] = time.perf_counter()
            self._launch_ready()

    def _launch_ready(self) -> None:
        while self._next < len(self.buckets) and self.buckets[self._next].pending <= 0:
            self._launch(self.buckets[self._next])
            self._next += 1

    def _launch(self, b: Bucket) -> None:
        world = dist.get_world_size()
        if b.flat is None:  # one buffer per bucket, reused every step: gradients / world, then flags
            b.flat = torch.empty(b.numel + len(b.params), dtype=b.params[0].dtype, device=b.params[0].device)
        offset = 0
        for i, p in enumerate(b.params):
            piece = b.flat[offset:offset + p.numel()]
            if p.grad is None:
                piece.zero_()
            else:
                torch.div(p.grad.reshape(-1), world, out=piece)  # copy and scale in one pass
            b.flat[b.numel + i] = float(p.grad is not None)
            offset += p.numel()
        if self.record_timeline:
            b.times.setdefault("ready", time.perf_counter())
            b.times["start"] = time.perf_counter()
        b.work = dist.all_reduce(b.flat, async_op=True)
        if self.record_timeline:
            times = b.times
            b.work.get_future().then(lambda _fut: times.__setitem__("end", time.perf_counter()))

    def finish_gradient_synchronization(self) -> None:
        """Wait for every bucket's all-reduce and write the averaged gradients back.

        Call it after ``backward()`` and before ``optimizer.step()``. Buckets that did not fill during
        backward (some parameter was unused) are sent now. Inside ``no_sync()`` it does nothing.
        """
        if not self._sync:
            return
        for b in self.buckets:  # whatever did not fill during backward is sent now, in bucket order
            b.pending = 0
        self._launch_ready()
        step: list[dict] = []
        for b in self.buckets:
            b.work.wait()
            assert b.flat is not None
            n_params = len(b.params)
            flags, offset = b.flat[-n_params:], 0
            for p, has_grad in zip(b.params, flags.tolist()):
                averaged = b.flat[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
                if has_grad == 0:  # no rank produced a gradient: leave it as the optimizer expects
                    continue
                if p.grad is None:
                    p.grad = averaged.clone()
                else:
                    p.grad.copy_(averaged)
            if self.record_timeline:
                step.append({"bucket": b.index, "bytes": b.nbytes, "params": len(b.params), "times": b.times})
        if self.record_timeline:
            self.timeline.append([self._settle(entry) for entry in step])
        self._reset()

    @staticmethod
    def _settle(entry: dict) -> dict:
        """The completion callback may run a moment after ``wait()`` returns: give it that moment."""
        times, deadline = entry.pop("times"), time.perf_counter() + 0.05
        while "end" not in times and time.perf_counter() < deadline:
            time.sleep(0.0005)
        times.setdefault("end", time.perf_counter())
        return {**entry, **times}

    def remove_hooks(self) -> None:
        """Detach the gradient hooks from the wrapped module (so it can be wrapped again)."""
        for h in self._handles:
            h.remove()
        self._handles = []


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
