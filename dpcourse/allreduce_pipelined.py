"""The ring all-reduce, scheduled to keep pace with gloo's own ``all_reduce``.

:func:`pipelined_ring_all_reduce` sends exactly the chunks that the textbook
:func:`dpcourse.allreduce.ring_all_reduce` sends, in the same ring order, and computes the same
sums. What it changes is *when* messages are posted and how big they are:

1. *Ask before the data comes.* gloo transmits a message only once the receiver has posted its
   ``irecv``, so a late receive costs a round trip. Every receive of the call is posted before
   the first send.
2. *Forward at once.* The chunk received at step ``j`` is the one sent at step ``j + 1``, so each
   piece is sent on the moment it has been added, not at the start of the next step.
3. *Pipeline big chunks.* A chunk bigger than ``segment_bytes`` travels as several messages; each
   piece is added and forwarded while the rest of the chunk is still arriving.
4. *One connection per direction.* With two ranks the left and the right neighbour are the same
   process (see :func:`_closing_link`).

Reduce-scatter pieces land in a scratch buffer kept between calls; all-gather pieces land straight
in ``tensor``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from dpcourse.allreduce import check_input, chunk_bounds

__all__ = ["pipelined_ring_all_reduce", "SEGMENT_BYTES"]

SEGMENT_BYTES = 4 << 20  # largest single message; bigger chunks are pipelined in pieces

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


_CLOSING_LINK: list = [None, None]  # [default process group, the group carrying rank 1 -> rank 0]


def _closing_link(world: int):
    """The process group for the message from the last rank to rank 0, or None for the default one.

    With two ranks, the right and the left neighbour are the same process, and on gloo both
    directions would share one connection, whose lock lets only one side post or move a message at
    a time, so the two directions would take turns instead of overlapping. So, with two ranks on
    gloo, the link that closes the ring (rank 1 -> rank 0) gets a connection of its own, made once
    (every rank makes it in its first call, as all ranks call an all-reduce together).
    """
    if world != 2 or dist.get_backend() != "gloo":
        return None
    if _CLOSING_LINK[0] is not dist.group.WORLD:
        _CLOSING_LINK[:] = [dist.group.WORLD, dist.new_group(backend="gloo")]
    return _CLOSING_LINK[1]


@torch.no_grad()
def pipelined_ring_all_reduce(tensor: torch.Tensor, segment_bytes: int = SEGMENT_BYTES) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place: the ring, with early receives and pipelined pieces.

    The ``2 (N-1)`` steps form one chain: at step ``j`` a rank receives chunk ``rank-j-1`` from its
    left neighbour (adding it to its own during the first ``N-1`` steps, keeping it as it is during
    the last ``N-1``) and passes on chunk ``rank-j``, which it received at step ``j-1``. Message
    (step ``j``, piece ``k``) carries tag ``j * pieces + k``, so pieces in flight never mix.
    """
    rank, world = check_input(tensor, "pipelined_ring_all_reduce")
    if world == 1 or tensor.numel() == 0:
        return tensor
    if segment_bytes < 1:
        raise ValueError(f"segment_bytes must be positive, got {segment_bytes}.")
    work = tensor.contiguous()
    flat = work.view(-1)
    chunks = [flat[a:b] for a, b in chunk_bounds(flat.numel(), world)]
    per = max(1, segment_bytes // flat.element_size())
    pieces = [[(i, min(i + per, c.numel())) for i in range(0, c.numel(), per)] for c in chunks]
    tags = max(len(p) for p in pieces)
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

    # Every receive is posted before the first send. An all-gather piece lands in `tensor` itself,
    # which is safe: it can only arrive after this rank has sent what it holds there.
    receives = [[dist.irecv(landing(j)[a:b], src=left, tag=j * tags + k, group=from_left)
                 for k, (a, b) in enumerate(pieces[(rank - j - 1) % world])] for j in range(steps)]
    sends = [dist.isend(chunks[rank][a:b], dst=right, tag=k, group=to_right)
             for k, (a, b) in enumerate(pieces[rank])]
    for j in range(steps):
        c = (rank - j - 1) % world
        for k, (a, b) in enumerate(pieces[c]):
            receives[j][k].wait()
            if j < reduce_steps:
                chunks[c][a:b].add_(landing(j)[a:b])
            if j + 1 < steps:  # pass the piece on at once: the next step sends this very chunk
                sends.append(dist.isend(chunks[c][a:b], dst=right, tag=(j + 1) * tags + k, group=to_right))
    for req in sends:
        req.wait()
    if work.data_ptr() != tensor.data_ptr():
        tensor.copy_(work)
    return tensor
