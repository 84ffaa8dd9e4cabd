"""Gradient compression as DDP communication hooks: move fewer bytes per step.

A *communication hook* replaces what DDP does with a bucket of gradients. Register one with
``ddp.register_comm_hook(state, hook)``; DDP then calls ``hook(state, bucket)`` once per bucket per
step, from inside ``backward()``, as soon as the bucket's gradients are ready:

* ``bucket.buffer()`` is one flat tensor holding *this rank's* gradients of the bucket's parameters
  (not divided by anything yet); ``bucket.index()`` says which bucket it is (0 is filled first);
* the hook returns a ``torch.futures.Future`` whose value is the tensor DDP copies back into the
  parameters' ``.grad``: the **average over all ranks**, however the hook computed it.

Every hook below is written to be read in one sitting:

* :func:`allreduce_hook` does exactly what DDP does without a hook (the identity);
* :func:`bf16_hook` / :func:`fp16_hook` cast to 16 bits, all-reduce, cast back: half the bytes;
* :func:`power_iteration` is one step of PowerSGD's low-rank approximation (torch's
  ``powerSGD_hook`` applies it per gradient matrix, with error feedback);
* :func:`topk_hook` sends only the ``k`` largest entries of each bucket, with their indices, over
  **all-gather**, and keeps what it did not send for the next step (error feedback).

And the byte arithmetic to compare them: :func:`allreduce_bytes`, :func:`topk_bytes`,
:func:`powersgd_bytes` (what each rank puts on the wire per step, for a ring), and
:class:`sent_bytes`, which reads it back from the simulated link (``dpcourse.network``).
"""

# No `from __future__ import annotations` here: DDP checks a hook's annotations at registration and
# refuses a string where it expects dist.GradBucket.
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

__all__ = ["timed_step", "allreduce_hook", "bf16_hook", "fp16_hook", "torch_bf16_hook", "torch_fp16_hook",
           "power_iteration", "orthonormalize", "powersgd_state", "TopKState", "topk_hook",
           "allreduce_bytes", "allgather_bytes", "topk_bytes", "powersgd_bytes", "bucket_shapes",
           "sent_bytes", "METHODS", "register"]

Hook = Callable[[Any, "dist.GradBucket"], "torch.futures.Future[torch.Tensor]"]


def _group(process_group: Any) -> Any:
    return process_group if process_group is not None else dist.group.WORLD


# --------------------------------------------------------------------------- the identity

def allreduce_hook(process_group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """What DDP does without a hook: scale by ``1 / N`` and all-reduce (sum), in place.

    DDP scales each gradient by ``1 / N`` as it copies it into the bucket; multiplying by the same
    float (rather than dividing by ``N``) gives bit-identical results for any ``N``: ``g / 3`` and
    ``g * (1 / 3)`` can differ in the last bit.
    """
    group = _group(process_group)
    tensor = bucket.buffer().mul_(1.0 / dist.get_world_size(group))
    work = dist.all_reduce(tensor, group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])  # all_reduce's future holds a list


# --------------------------------------------------------------------------- casting to 16 bits

def _cast_hook(dtype: torch.dtype, process_group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    group = _group(process_group)
    buffer = bucket.buffer()
    small = buffer.to(dtype).div_(dist.get_world_size(group))  # cast first: half the bytes on the wire

    def decompress(fut: torch.futures.Future) -> torch.Tensor:
        buffer.copy_(fut.value()[0])  # back to float32, in place: no second full-size buffer
        return buffer

    return dist.all_reduce(small, group=group, async_op=True).get_future().then(decompress)


def bf16_hook(process_group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """All-reduce the bucket in bfloat16: float32's 8 exponent bits, 7 mantissa bits (about 2-3 digits)."""
    return _cast_hook(torch.bfloat16, process_group, bucket)


def fp16_hook(process_group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """All-reduce the bucket in float16: 10 mantissa bits but 5 exponent bits (underflows below ~6e-8)."""
    return _cast_hook(torch.float16, process_group, bucket)


def torch_bf16_hook(process_group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """PyTorch's own ``bf16_compress_hook``, under another name.

    ``register_comm_hook`` refuses a hook *named* ``bf16_compress_hook`` unless NCCL is available,
    even on a gloo group that all-reduces bfloat16 fine; calling it from this wrapper runs the very
    same code on CPU.
    """
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook

    return bf16_compress_hook(process_group, bucket)


def torch_fp16_hook(process_group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """PyTorch's own ``fp16_compress_hook``."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import fp16_compress_hook

    return fp16_compress_hook(process_group, bucket)


# --------------------------------------------------------------------------- low rank (PowerSGD)

def orthonormalize(matrix: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning ``matrix``'s columns (reduced QR; Gram-Schmidt does the same)."""
    return torch.linalg.qr(matrix).Q


def power_iteration(matrix: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of PowerSGD's compression of an ``n x m`` gradient ``matrix`` to rank ``r``.

    ``q`` is ``m x r`` (random at first, last step's ``q`` afterwards: "warm start"). Returns
    ``(p, q)`` with ``p`` ``n x r`` orthonormal and ``q`` ``m x r``; ``p @ q.T`` approximates
    ``matrix``. On several ranks, ``p`` and ``q`` are what travels: each is all-reduced right after it
    is computed (``p`` before orthonormalizing, ``q`` and then averaged), ``(n + m) r`` numbers instead of
    ``n m``. Because all-reduce sums and both products are linear in ``matrix``, the ranks end up
    with the same approximation of the *average* gradient.
    """
    p = orthonormalize(matrix @ q)   # the directions in which this matrix stretches q the most
    q = matrix.T @ p                 # the best coefficients for those directions (least squares)
    return p, q


def powersgd_state(rank: int, process_group: Any = None, error_feedback: bool = True, start_iter: int = 2,
                   warm_start: bool = True, seed: int = 0) -> Any:
    """A ``PowerSGDState`` for torch's ``powerSGD_hook`` with the course's settings.

    ``start_iter`` steps of plain all-reduce come first (PyTorch requires at least 2 with error
    feedback or warm start); matrices that rank ``rank`` would not shrink at least 2x are all-reduced
    uncompressed (torch's ``min_compression_rate``), in one batch with the biases.
    """
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import PowerSGDState

    return PowerSGDState(process_group=process_group, matrix_approximation_rank=rank,
                         start_powerSGD_iter=start_iter, min_compression_rate=2,
                         use_error_feedback=error_feedback, warm_start=warm_start, random_seed=seed)


# --------------------------------------------------------------------------- top-k over all-gather

@dataclass
class TopKState:
    """What :func:`topk_hook` keeps between steps: the share of entries to send and, per bucket,
    the residual (the part of the corrected gradient that was not sent)."""

    fraction: float
    error_feedback: bool = True
    process_group: Any = None
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], the share of entries to send; got {self.fraction!r}.")

    def k_for(self, numel: int) -> int:
        """How many entries a bucket of ``numel`` sends: at least one."""
        return max(1, int(numel * self.fraction))


def topk_hook(state: TopKState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Send the ``k`` entries of largest magnitude (values and int32 indices); keep the rest for later.

    Why all-gather and not all-reduce: each rank picks *its own* ``k`` indices. All-reduce adds
    tensors position by position, so the values at rank 0's indices would be added to the values at
    rank 1's different indices: nonsense. All-gather brings every rank's (values, indices), and each
    rank adds them into a dense tensor in the same order, so every rank gets the same result.
    """
    group = _group(state.process_group)
    world = dist.get_world_size(group)
    grad = bucket.buffer()
    residual = state.residuals.get(bucket.index())
    if residual is not None and residual.shape != grad.shape:
        residual = None  # DDP rebuilt its buckets after the first step: bucket i now holds other gradients
    corrected = grad + residual if state.error_feedback and residual is not None else grad.clone()
    k = state.k_for(corrected.numel())
    indices = corrected.abs().topk(k, sorted=False).indices
    values = corrected[indices]
    if state.error_feedback:  # what we do not send now is added to next step's gradient
        state.residuals[bucket.index()] = corrected.index_fill_(0, indices, 0.0)

    all_values = values.new_empty(world * k)
    all_indices = torch.empty(world * k, dtype=torch.int32, device=values.device)
    works = [dist.all_gather_single(all_values, values, group=group, async_op=True),
             dist.all_gather_single(all_indices, indices.to(torch.int32), group=group, async_op=True)]

    def decompress(_: torch.futures.Future) -> torch.Tensor:
        grad.zero_()
        for r in range(world):  # rank by rank, in the same order everywhere: identical sums on every rank
            piece = slice(r * k, (r + 1) * k)
            grad.index_add_(0, all_indices[piece], all_values[piece])  # one rank's indices never repeat
        return grad.mul_(1.0 / world)

    return torch.futures.collect_all([w.get_future() for w in works]).then(decompress)


# --------------------------------------------------------------------------- counting bytes

def allreduce_bytes(numel: int, world: int, element_size: int = 4) -> float:
    """Bytes each rank sends in a ring all-reduce of ``numel`` elements: ``2 (N-1) / N`` of the tensor."""
    return 2 * (world - 1) / world * numel * element_size if world > 1 else 0.0


def allgather_bytes(numel_per_rank: int, world: int, element_size: int = 4) -> float:
    """Bytes each rank sends in a ring all-gather of ``numel_per_rank`` elements from every rank."""
    return (world - 1) * numel_per_rank * element_size if world > 1 else 0.0


def topk_bytes(numel: int, fraction: float, world: int, value_size: int = 4, index_size: int = 4) -> float:
    """Bytes each rank sends for one bucket under :func:`topk_hook`: ``k`` values and ``k`` indices.

    Compare with :func:`allreduce_bytes`: with 2 ranks top-k with int32 indices pays only if it keeps
    less than half the entries, with int64 indices less than a third. With ``N`` ranks all-gather's
    ``(N-1) k`` grows with ``N`` while all-reduce's ``2 (N-1)/N n`` does not: top-k pays less and less.
    """
    k = max(1, int(numel * fraction))
    return allgather_bytes(k, world, value_size) + allgather_bytes(k, world, index_size)


def bucket_shapes(model: torch.nn.Module) -> list[torch.Size]:
    """Shapes of the parameters that DDP reduces (those that require a gradient)."""
    return [p.shape for p in model.parameters() if p.requires_grad]


def powersgd_bytes(shapes: list[torch.Size], rank: int, world: int, min_compression_rate: float = 2.0) -> float:
    """Bytes each rank sends per step under torch's ``powerSGD_hook`` (after its first plain steps).

    A parameter viewed as an ``n x m`` matrix sends ``p`` (``n x r``) and ``q`` (``m x r``) when that is
    at least ``min_compression_rate`` times smaller than ``n m``; otherwise (biases, small layers) it
    is all-reduced as it is. Assumes one bucket; with several, each bucket counts separately.
    """
    compressed = uncompressed = 0
    for shape in shapes:
        n = shape[0] if len(shape) else 1
        m = math.prod(shape[1:]) if len(shape) > 1 else 1
        r = min(n, m, rank)
        if len(shape) > 1 and n * m >= min_compression_rate * (n + m) * r:
            compressed += (n + m) * r
        else:
            uncompressed += n * m
    return allreduce_bytes(compressed, world) + allreduce_bytes(uncompressed, world)


class sent_bytes:  # noqa: N801 (used like a function: ``with sent_bytes() as sent``)
    """Bytes this rank put on the simulated link inside the ``with`` block, per operation.

        with sent_bytes() as sent:
            train_one_step()
        sent.total, sent.by_op   # e.g. 96100, {"allreduce": 96100}
        sent.calls               # operations started, e.g. {"allreduce": 2}

    Counted by ``dpcourse.network`` at the process-group level, so it sees whatever a hook sends,
    however it sends it. Needs a launch with ``network=`` (``"ideal"`` counts without delay).
    """

    def __enter__(self) -> "sent_bytes":
        from dpcourse import network

        start = network.stats()
        self._start, self._ops = start["bytes"], start["ops"]
        self.total, self.by_op, self.calls = 0, {}, {}
        return self

    def __exit__(self, *exc: Any) -> None:
        from dpcourse import network

        stats = network.stats()
        end, ops = stats["bytes"], stats["ops"]
        self.by_op = {op: end[op] - self._start.get(op, 0) for op in end if end[op] != self._start.get(op, 0)}
        self.calls = {op: ops[op] - self._ops.get(op, 0) for op in ops if ops[op] != self._ops.get(op, 0)}
        self.total = sum(self.by_op.values())


def timed_step(ddp: torch.nn.parallel.DistributedDataParallel, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> tuple[float, sent_bytes]:
    """One cross-entropy training step of ``ddp``, started by all ranks together (a barrier first):
    its seconds, and what this rank sent (a :class:`sent_bytes`) while it ran."""
    dist.barrier()
    start = time.perf_counter()
    opt.zero_grad()
    with sent_bytes() as sent:
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
    opt.step()
    return time.perf_counter() - start, sent


# --------------------------------------------------------------------------- by name

METHODS = ("none", "allreduce", "bf16", "fp16", "torch-bf16", "torch-fp16", "powersgd-1", "powersgd-2",
           "powersgd-4", "topk-0.01", "topk-0.1")


def register(ddp: torch.nn.parallel.DistributedDataParallel, method: str, error_feedback: bool = True) -> Any:
    """Register a compression method on ``ddp`` by name; return the hook's state (or None).

    ``none`` leaves DDP's built-in all-reduce; ``powersgd-R`` is torch's PowerSGD at rank ``R``;
    ``topk-F`` is :func:`topk_hook` sending the fraction ``F`` of each bucket.
    """
    simple = {"allreduce": allreduce_hook, "bf16": bf16_hook, "fp16": fp16_hook,
              "torch-bf16": torch_bf16_hook, "torch-fp16": torch_fp16_hook}
    if method == "none":
        return None
    if method in simple:
        ddp.register_comm_hook(None, simple[method])
        return None
    kind, _, value = method.partition("-")
    try:
        number = float(value)
    except ValueError:
        number = None
    if kind == "powersgd" and number is not None and number >= 1 and number == int(number):
        from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import powerSGD_hook

        state = powersgd_state(int(number), error_feedback=error_feedback)
        ddp.register_comm_hook(state, powerSGD_hook)
        return state
    if kind == "topk" and number is not None and 0 < number <= 1:
        state = TopKState(number, error_feedback=error_feedback)
        ddp.register_comm_hook(state, topk_hook)
        return state
    raise ValueError(f"unknown compression method {method!r}: use one of none, allreduce, bf16, fp16, torch-bf16, "
                     "torch-fp16, powersgd-R (R a whole rank >= 1) or topk-F (F a fraction in (0, 1]).")
