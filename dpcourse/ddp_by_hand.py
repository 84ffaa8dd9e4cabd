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

Timelines and collective counts hook onto it from outside: :mod:`dpcourse.ddp_instrumented`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["average_gradients", "flat_average_gradients", "broadcast_parameters", "BucketedDDP", "Bucket",
           "fill_buckets"]


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

    @property
    def nbytes(self) -> int:
        return self.numel * self.params[0].element_size()


def fill_buckets(named: list[tuple[str, nn.Parameter]], bucket_mb: float | None,
                 first_bucket_mb: float = 1.0) -> list[Bucket]:
    """Group ``named`` parameters, in the given order, into buckets of about ``bucket_mb`` MB.

    A bucket closes once it holds at least its cap; the first one's cap is ``first_bucket_mb``, so
    that communication starts early in backward. A bucket holds one dtype on one device.
    """
    cap = float("inf") if bucket_mb is None else bucket_mb * 2**20
    first_cap = min(cap, first_bucket_mb * 2**20) if bucket_mb is not None else cap
    buckets: list[Bucket] = []
    for name, p in named:
        last = buckets[-1] if buckets else None
        limit = first_cap if len(buckets) == 1 else cap
        if (last is not None and last.nbytes < limit and last.params[0].dtype == p.dtype
                and last.params[0].device == p.device):
            last.params.append(p)
            last.names.append(name)
            last.numel += p.numel()
        else:
            buckets.append(Bucket(len(buckets), [p], [name], p.numel()))
    return buckets


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
    ``broadcast=False`` skips the initial broadcast (replicas known to be equal).

    One step: the hook :meth:`gradient_ready` counts a bucket down; :meth:`bucket_ready` then starts
    every ready bucket in order (:meth:`start_all_reduce`); :meth:`finish_gradient_synchronization`
    starts what is left, waits, and :meth:`write_back_averages`.
    """

    def __init__(self, module: nn.Module, bucket_mb: float | None = 25.0, *, first_bucket_mb: float = 1.0,
                 broadcast: bool = True):
        super().__init__()
        _require_group("BucketedDDP")
        if bucket_mb is not None and (isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float))
                                      or bucket_mb < 0):
            raise ValueError(f"bucket_mb must be a size in megabytes (>= 0) or None for one bucket, got {bucket_mb!r}.")
        self.module = module
        self.bucket_mb = bucket_mb
        self._sync = True
        self._next = 0  # index of the next bucket to all-reduce
        if broadcast:
            broadcast_parameters(module)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]  # shared ones appear once
        self.buckets: list[Bucket] = fill_buckets(list(reversed(named)), bucket_mb, first_bucket_mb)
        self._bucket_of: dict[int, Bucket] = {id(p): b for b in self.buckets for p in b.params}
        self._handles = [p.register_post_accumulate_grad_hook(self.gradient_ready)
                         for b in self.buckets for p in b.params]
        self._reset()

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
            b.pending, b.work = len(b.params), None

    def gradient_ready(self, p: torch.Tensor) -> None:
        """The hook, called inside backward once ``p.grad`` is final: count its bucket down."""
        if not self._sync:
            return
        b = self._bucket_of[id(p)]
        if b.work is not None:
            raise RuntimeError("a gradient arrived for a bucket that was already sent: call "
                               "finish_gradient_synchronization() after every backward() (or use no_sync()).")
        b.pending -= 1
        if b.pending == 0:
            self.bucket_ready(b)

    def bucket_ready(self, b: Bucket) -> None:
        """Every gradient of ``b`` is in: start it, and the ready buckets after it, in bucket order."""
        self.start_ready_buckets()

    def start_ready_buckets(self) -> None:
        """Start buckets from the next unsent one on, up to the first that is not complete."""
        while self._next < len(self.buckets) and self.buckets[self._next].pending <= 0:
            self.start_all_reduce(self.buckets[self._next])
            self._next += 1

    def start_all_reduce(self, b: Bucket) -> None:
        """Pack ``b``'s gradients (divided by the world size) and flags; start their asynchronous all-reduce."""
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
        b.work = dist.all_reduce(b.flat, async_op=True)

    def finish_gradient_synchronization(self) -> None:
        """Wait for every bucket's all-reduce and write the averaged gradients back.

        Call it after ``backward()`` and before ``optimizer.step()``. Buckets that did not fill during
        backward (some parameter was unused) are sent now. Inside ``no_sync()`` it does nothing.
        """
        if not self._sync:
            return
        for b in self.buckets:  # whatever did not fill during backward is sent now, in bucket order
            b.pending = 0
        self.start_ready_buckets()
        for b in self.buckets:
            b.work.wait()
            self.write_back_averages(b)
        self._reset()

    @staticmethod
    def write_back_averages(b: Bucket) -> None:
        """Copy ``b``'s averaged gradients into ``.grad``; one no rank had stays ``None``."""
        assert b.flat is not None
        flags, offset = b.flat[-len(b.params):].tolist(), 0
        for p, has_grad in zip(b.params, flags):
            averaged = b.flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            if has_grad == 0:  # no rank produced a gradient: leave it as the optimizer expects
                continue
            if p.grad is None:
                p.grad = averaged.clone()
            else:
                p.grad.copy_(averaged)

    def remove_hooks(self) -> None:
        """Detach the gradient hooks from the wrapped module (so it can be wrapped again)."""
        for h in self._handles:
            h.remove()
        self._handles = []
