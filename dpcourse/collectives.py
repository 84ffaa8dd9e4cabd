"""All-reduce written by hand from point-to-point messages: the naive way and the ring.

Both sum ``tensor`` over every rank of the default process group, in place, and return it. They
use nothing but ``send``/``recv``/``isend``/``irecv``, so every byte that moves is visible here.

* :func:`naive_all_reduce`: every rank sends its tensor to rank 0, rank 0 adds them up and sends
  the sum back to everyone. Rank 0 moves ``2 (N-1)`` full tensors, one after the other.
* :func:`ring_all_reduce`: the tensor is cut into ``N`` chunks. In ``N-1`` reduce-scatter steps
  each rank passes one chunk to its right neighbour and adds the chunk arriving from its left, so
  that each rank ends up owning the full sum of one chunk; in ``N-1`` all-gather steps the summed
  chunks travel once more round the ring. Every rank sends ``2 (N-1)/N`` of the tensor, whatever N.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["naive_all_reduce", "ring_all_reduce", "chunk_bounds", "SEGMENT_BYTES"]

SEGMENT_BYTES = 1 << 20  # largest single message of the ring; bigger chunks are pipelined in pieces


def _check(tensor: torch.Tensor, name: str) -> tuple[int, int]:
    """Validate the input; return ``(rank, world_size)``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} needs a torch.Tensor, got {type(tensor).__name__}: wrap it with torch.as_tensor(...).")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} sums numbers; {tensor.dtype} is not supported: convert to a float or int dtype.")
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{name} needs a process group: call it inside a worker started by "
                           "dpcourse.launch (or after dist.init_process_group).")
    return dist.get_rank(), dist.get_world_size()


def chunk_bounds(numel: int, parts: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of ``parts`` nearly equal slices of ``range(numel)``; some may be empty.

    >>> chunk_bounds(10, 4)
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    base, extra = divmod(numel, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


_BUFFERS: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _receive_buffer(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scratch tensor of at least ``numel`` elements, kept between calls.

    A fresh allocation of many megabytes costs a page fault per 4 KB page the first time it is
    written, on every call; reusing one buffer pays that once.
    """
    key = (dtype, device)
    buf = _BUFFERS.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype, device=device)
        _BUFFERS[key] = buf
    return buf


@torch.no_grad()  # sums of parameters or gradients are not part of any autograd graph
def naive_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place by gathering at rank 0 and sending the sum back."""
    rank, world = _check(tensor, "naive_all_reduce")
    if world == 1 or tensor.numel() == 0:
        return tensor
    flat = tensor.contiguous()  # send/recv need contiguous memory; a no-op when it already is
    if rank == 0:
        incoming = torch.empty_like(flat)
        for src in range(1, world):
            dist.recv(incoming, src=src)
            flat.add_(incoming)
        for dst in range(1, world):
            dist.send(flat, dst=dst)
    else:
        dist.send(flat, dst=0)
        dist.recv(flat, src=0)
    if flat.data_ptr() != tensor.data_ptr():
        tensor.copy_(flat)
    return tensor


@torch.no_grad()
def ring_all_reduce(tensor: torch.Tensor, trace: list | None = None, segment_bytes: int = SEGMENT_BYTES) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place with the ring algorithm (reduce-scatter, all-gather).

    Each step sends one chunk to the right neighbour while receiving one from the left
    (``irecv``/``isend`` posted together, so no rank waits for another to finish sending first).
    Chunks larger than ``segment_bytes`` travel as several messages, all posted at once, and each
    piece is added as soon as it has arrived while the next ones are still on their way.
    If ``trace`` is a list, a copy of this rank's tensor is appended after every step as
    ``(phase, step, tensor)``, which is what the course's step-by-step ring picture is drawn from.
    """
    rank, world = _check(tensor, "ring_all_reduce")
    if trace is not None:
        trace.append(("start", 0, tensor.detach().clone().cpu()))
    if world == 1 or tensor.numel() == 0:
        return tensor
    if segment_bytes < 1:
        raise ValueError(f"segment_bytes must be positive, got {segment_bytes}.")
    work = tensor.contiguous()
    flat = work.view(-1)
    bounds = chunk_bounds(flat.numel(), world)
    chunks = [flat[a:b] for a, b in bounds]
    buffer = _receive_buffer(max(b - a for a, b in bounds), flat.dtype, flat.device)
    per_segment = max(1, segment_bytes // flat.element_size())
    right, left = (rank + 1) % world, (rank - 1) % world

    pending_sends: list = []

    def exchange(send_index: int, recv_index: int, reduce: bool) -> None:
        """Send chunk ``send_index`` right; receive chunk ``recv_index`` from the left (adding it if ``reduce``).

        Only the receives are waited for here: a chunk that was sent is not written again in the
        same phase, so the sends may finish in the background until the end of the phase.
        """
        outgoing, target = chunks[send_index], chunks[recv_index]
        landing = buffer[: target.numel()] if reduce else target
        recvs = [(i, dist.irecv(landing[i:i + per_segment], src=left, tag=k))  # a landing place first
                 for k, i in enumerate(range(0, target.numel(), per_segment))]
        pending_sends.extend(dist.isend(outgoing[i:i + per_segment], dst=right, tag=k)
                             for k, i in enumerate(range(0, outgoing.numel(), per_segment)))
        for i, req in recvs:
            req.wait()
            if reduce:
                target[i:i + per_segment].add_(landing[i:i + per_segment])

    def finish_sends() -> None:
        for req in pending_sends:
            req.wait()
        pending_sends.clear()

    # reduce-scatter: after step s, chunk (rank - s - 1) here holds the sum of s + 2 ranks' pieces
    for step in range(world - 1):
        exchange((rank - step) % world, (rank - step - 1) % world, reduce=True)
        if trace is not None:
            trace.append(("reduce-scatter", step + 1, work.detach().clone().cpu()))
    finish_sends()  # the all-gather overwrites chunks that were sent above
    # now chunk (rank + 1) % world is complete here; pass the complete chunks round the ring
    for step in range(world - 1):
        exchange((rank + 1 - step) % world, (rank - step) % world, reduce=False)
        if trace is not None:
            trace.append(("all-gather", step + 1, work.detach().clone().cpu()))
    finish_sends()
    if work.data_ptr() != tensor.data_ptr():
        tensor.copy_(work)
    return tensor
