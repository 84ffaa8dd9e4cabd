"""All-reduce written by hand from point-to-point messages: the naive way and the ring.

Both sum ``tensor`` over every rank of the default process group, in place, and return it. They
use nothing but ``send``/``recv``/``isend``/``irecv``, so every byte that moves is visible here.

* :func:`naive_all_reduce`: every rank sends its tensor to rank 0, rank 0 adds them up and sends
  the sum back to everyone. Rank 0 moves ``2 (N-1)`` full tensors, one after the other.
* :func:`ring_all_reduce`: the tensor is cut into ``N`` chunks. In ``N-1`` reduce-scatter steps
  each rank passes one chunk to its right neighbour and adds the chunk arriving from its left, so
  that each rank ends up owning the full sum of one chunk; in ``N-1`` all-gather steps the summed
  chunks travel once more round the ring. Every rank sends ``2 (N-1)/N`` of the tensor, whatever N.

This is the textbook ring, one step after the other. The same messages, scheduled to keep pace
with gloo's own all_reduce, are :func:`dpcourse.allreduce_pipelined.pipelined_ring_all_reduce`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["naive_all_reduce", "ring_all_reduce", "chunk_bounds", "check_input"]


def check_input(tensor: torch.Tensor, name: str) -> tuple[int, int]:
    """Raise a one-line error for input an all-reduce cannot sum; return ``(rank, world_size)``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} needs a torch.Tensor, got {type(tensor).__name__}: "
                        "wrap it with torch.as_tensor(...).")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} sums numbers; {tensor.dtype} is not supported: convert to a float or int dtype.")
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{name} needs a process group: call it inside a worker started by "
                           "dpcourse.launch (or after dist.init_process_group).")
    return dist.get_rank(), dist.get_world_size()


def chunk_bounds(numel: int, parts: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of ``parts`` nearly equal slices of ``range(numel)``, the larger ones first
    (the slices ``torch.tensor_split`` makes); some may be empty.

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


@torch.no_grad()  # sums of parameters or gradients are not part of any autograd graph
def naive_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place by gathering at rank 0 and sending the sum back."""
    rank, world = check_input(tensor, "naive_all_reduce")
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
def ring_all_reduce(tensor: torch.Tensor, after_step=None) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place: ``N-1`` reduce-scatter steps, then ``N-1`` all-gather steps.

    Rank ``r`` sends only to ``r+1`` and receives only from ``r-1`` (mod ``N``), one chunk each way
    per step. ``after_step(phase, step, tensor)``, if given, is called after every step with this
    rank's tensor as it is then (the lesson's step-by-step picture is drawn that way).
    """
    rank, world = check_input(tensor, "ring_all_reduce")
    if world == 1 or tensor.numel() == 0:
        return tensor
    work = tensor.contiguous()  # the tensor itself unless it is not contiguous
    chunks = list(torch.tensor_split(work.view(-1), world))  # views: adding into a chunk changes `work`
    incoming = torch.empty_like(chunks[0])  # the first chunk is the largest
    right, left = (rank + 1) % world, (rank - 1) % world

    def exchange(send_chunk: torch.Tensor, recv_into: torch.Tensor) -> None:
        # Both posted before either is waited for: blocking sends all round could wait for ever.
        requests = [dist.irecv(recv_into, src=left)] if recv_into.numel() else []
        if send_chunk.numel():  # fewer elements than ranks: empty chunks are not sent
            requests.append(dist.isend(send_chunk, dst=right))
        for req in requests:
            req.wait()

    for step in range(world - 1):  # reduce-scatter: the arriving chunk is added to ours
        send_i, recv_i = (rank - step) % world, (rank - step - 1) % world
        arrived = incoming[: chunks[recv_i].numel()]
        exchange(chunks[send_i], arrived)
        chunks[recv_i].add_(arrived)
        if after_step is not None:
            after_step("reduce-scatter", step + 1, work)
    for step in range(world - 1):  # all-gather: rank r now owns the full sum of chunk r+1; pass it on
        send_i, recv_i = (rank + 1 - step) % world, (rank - step) % world
        exchange(chunks[send_i], chunks[recv_i])
        if after_step is not None:
            after_step("all-gather", step + 1, work)
    if work.data_ptr() != tensor.data_ptr():
        tensor.copy_(work)
    return tensor
