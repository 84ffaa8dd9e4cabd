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

SEGMENT_BYTES = 4 << 20  # largest single message of the ring; bigger chunks are pipelined in pieces


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


_CLOSING_LINK: list = [None, None]  # [default process group, the group carrying rank 1 -> rank 0]


def _closing_link(world: int):
    """The process group for the message from the last rank to rank 0, or None for the default one.

    With two ranks, the right and the left neighbour are the same process, and on gloo both directions
    would share one connection, whose lock lets only one side post or move a message at a time, so the
    two directions would take turns instead of overlapping. So, with two ranks on gloo, the link
    that closes the ring (rank 1 -> rank 0) gets a connection of its own, made once (every rank makes
    it in its first call, as all ranks call an all-reduce together).
    """
    if world != 2 or dist.get_backend() != "gloo":
        return None
    if _CLOSING_LINK[0] is not dist.group.WORLD:
        _CLOSING_LINK[:] = [dist.group.WORLD, dist.new_group(backend="gloo")]
    return _CLOSING_LINK[1]


@torch.no_grad()
def ring_all_reduce(tensor: torch.Tensor, trace: list | None = None,
                    segment_bytes: int = SEGMENT_BYTES) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place with the ring algorithm (reduce-scatter, all-gather).

    The ``2 (N-1)`` steps form one chain: at step ``j`` a rank receives chunk ``rank-j-1`` from its
    left neighbour (adding it to its own during the first ``N-1`` steps, the reduce-scatter; keeping it
    as it is during the last ``N-1``, the all-gather) and passes on chunk ``rank-j``, which it received
    at step ``j-1``. Four things make this as fast as gloo's own all_reduce:

    * receives are posted before the data can arrive (gloo sends a message only once the receiver has
      asked for it, so a late receive costs a round trip);
    * chunks bigger than ``segment_bytes`` travel as several messages, and each piece is forwarded as
      soon as it has been added, while the rest of the chunk is still on its way (a pipeline);
    * reduce-scatter pieces land in a scratch buffer (``N-1`` chunks, kept between calls); all-gather
      pieces land straight in ``tensor``;
    * with two ranks on gloo, the two directions travel over two connections (see ``_closing_link``).

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
    chunks = [flat[a:b] for a, b in chunk_bounds(flat.numel(), world)]
    per = max(1, segment_bytes // flat.element_size())
    pieces = [[(i, min(i + per, c.numel())) for i in range(0, c.numel(), per)] for c in chunks]
    tags = max(len(p) for p in pieces)  # message (step j, piece k) has tag j * tags + k
    right, left = (rank + 1) % world, (rank - 1) % world
    closing = _closing_link(world)
    to_right = closing if rank == world - 1 else None  # None: the default group
    from_left = closing if rank == 0 else None
    steps, reduce_steps = 2 * (world - 1), world - 1
    biggest = chunks[0].numel()  # chunk_bounds puts any extra elements in the first chunks
    scratch = _receive_buffer(reduce_steps * biggest, flat.dtype, flat.device)
    scratch = scratch[: reduce_steps * biggest].view(reduce_steps, biggest)

    def landing(j: int) -> torch.Tensor:
        return scratch[j] if j < reduce_steps else chunks[(rank - j - 1) % world]

    def post_receives(j: int) -> list:
        c = (rank - j - 1) % world
        return [dist.irecv(landing(j)[a:b], src=left, tag=j * tags + k, group=from_left)
                for k, (a, b) in enumerate(pieces[c])]

    # Every receive is asked for before the first send. An all-gather piece lands in `tensor` itself,
    # which is safe: it can only arrive after this rank has sent what it holds there. With a trace, the
    # all-gather receives are posted step by step, so that each snapshot shows only the steps done.
    receives = {j: post_receives(j) for j in range(reduce_steps if trace is not None else steps)}
    sends = [dist.isend(chunks[rank][a:b], dst=right, tag=k, group=to_right) for k, (a, b) in enumerate(pieces[rank])]
    for j in range(steps):
        c = (rank - j - 1) % world
        if j not in receives:
            receives[j] = post_receives(j)
        for k, (a, b) in enumerate(pieces[c]):
            receives[j][k].wait()
            if j < reduce_steps:
                chunks[c][a:b].add_(landing(j)[a:b])
            if j + 1 < steps:  # pass the piece on at once: the next step sends this very chunk
                sends.append(dist.isend(chunks[c][a:b], dst=right, tag=(j + 1) * tags + k, group=to_right))
        if trace is not None:
            phase, step = ("reduce-scatter", j + 1) if j < reduce_steps else ("all-gather", j - reduce_steps + 1)
            trace.append((phase, step, work.detach().clone().cpu()))
    for req in sends:
        req.wait()
    if work.data_ptr() != tensor.data_ptr():
        tensor.copy_(work)
    return tensor
