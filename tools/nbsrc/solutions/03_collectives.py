# %% [markdown]
# # Exercise 03 — Collectives from point-to-point messages
#
# Lesson 03 used PyTorch's collectives. Every one of them is, underneath, a pattern of sends and
# receives. In this exercise you write two of them yourself, using only point-to-point operations,
# and the workers started by `dpcourse.launch` run them.
#
# ## Your tasks
#
# **1. `broadcast_by_hand(tensor, src=0)`** — after the call, every rank's `tensor` holds the
# values rank `src` had. In place: write into the tensor you were given and return it.
#
# * Use only `dist.send` / `dist.recv` (no `dist.broadcast` or other collectives).
# * `src` may be any rank; if it is not a rank of the group (`0 ≤ src < world size`), raise
#   `ValueError` saying which values are allowed.
# * Any shape and dtype; with a world size of 1 there is nothing to do.
#
# **2. `all_gather_by_hand(tensor)`** — return a list of `world_size` tensors, entry `r` holding rank
# `r`'s tensor, on every rank. All ranks pass tensors of the same shape and dtype.
#
# * Use only `send`/`recv`/`isend`/`irecv`.
# * The entry for the calling rank is a *copy* of its own tensor (changing it later must not change
#   the input).
# * It must not hang, for any world size.
#
# **Tools.** `dist.get_rank()`, `dist.get_world_size()`. A receiver must allocate its buffer
# first: `torch.empty_like(tensor)`. `send`/`recv` need contiguous memory (`tensor.contiguous()`
# is the tensor itself when it already is). `dist.isend` / `dist.irecv` start a transfer and
# return a request; its `wait()` blocks until the transfer is done.
#
# **Hints for the all-gather** (click to open; try each one before the next):
#
# <details><summary>Hint 1</summary>
#
# Suppose every rank first receives the other ranks' tensors, in rank order, with blocking
# `dist.recv` calls, and sends its own tensor afterwards. On 2 ranks: what is rank 0 waiting for
# in its first call, and what is rank 1 doing at that moment?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# A blocking `recv` only returns when its sender has called `send`. Either choose an order of
# blocking calls in which every `recv` has a matching `send` already under way, or avoid choosing
# an order at all: can you *start* every transfer first, and only then wait?
#
# </details>
#
# <details><summary>Hint 3 (the answer)</summary>
#
# Allocate `world_size` buffers, copy your own tensor into yours, then for every other rank post
# `dist.irecv(buffers[other], src=other)` and `dist.isend(mine, dst=other)`, keep the requests,
# and `wait()` on all of them at the end.
#
# </details>

# %%
import torch
import torch.distributed as dist

import dpcourse

# %% tags=["graded"]
def broadcast_by_hand(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Copy rank ``src``'s ``tensor`` into every rank's ``tensor`` (in place) with send/recv only."""
    ### BEGIN SOLUTION
    rank, world = dist.get_rank(), dist.get_world_size()
    if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < world:
        raise ValueError(f"src must be a rank from 0 to {world - 1}, got {src!r}.")
    if world == 1:
        return tensor
    buffer = tensor.contiguous()  # the same tensor when it already is contiguous
    if rank == src:
        for dst in range(world):
            if dst != src:
                dist.send(buffer, dst=dst)
    else:
        dist.recv(buffer, src=src)
        if buffer.data_ptr() != tensor.data_ptr():
            tensor.copy_(buffer)
    return tensor
    ### END SOLUTION

# %% [markdown]
# Try it on 3 ranks, broadcasting from rank 1. Each rank starts from its own values, so a rank that
# kept its own values, or received someone else's, shows at once.

# %%
def try_broadcast(src):
    x = torch.arange(4.0, device=dpcourse.device()) + 100 * dist.get_rank()
    out = broadcast_by_hand(x, src=src)
    assert out is x, "return the tensor you were given"
    return x.tolist()


# %%
# NBVAL_CHECK_OUTPUT
got = dpcourse.launch(try_broadcast, 3, 1)
print(got)
assert got == [[100.0, 101.0, 102.0, 103.0]] * 3

# %% tags=["graded"]
def all_gather_by_hand(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor``, in rank order, on every rank (send/recv/isend/irecv only)."""
    ### BEGIN SOLUTION
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = tensor.contiguous()
    gathered = [torch.empty_like(mine) for _ in range(world)]
    gathered[rank].copy_(mine)
    requests = []
    for other in range(world):  # post every receive and every send, then wait: no rank blocks another
        if other != rank:
            requests.append(dist.irecv(gathered[other], src=other))
            requests.append(dist.isend(mine, dst=other))
    for req in requests:
        req.wait()
    return gathered
    ### END SOLUTION

# %%
def try_all_gather():
    r = dist.get_rank()
    x = torch.tensor([10.0 * r, 10.0 * r + 1], device=dpcourse.device())
    out = all_gather_by_hand(x)
    assert out[r].data_ptr() != x.data_ptr(), "your own entry must be a copy, not the input itself"
    return [t.tolist() for t in out]


# %%
# NBVAL_CHECK_OUTPUT
got = dpcourse.launch(try_all_gather, 4)
print(got[0])
assert all(g == got[0] for g in got), "every rank must receive the same list"
assert got[0] == [[0.0, 1.0], [10.0, 11.0], [20.0, 21.0], [30.0, 31.0]]

# %% [markdown]
# ## Check your functions
#
# The visible tests run your functions at several world sizes, shapes and sources, each in child
# processes with a time limit (a deadlock is reported, not waited for), and print a hint when
# something is wrong.

# %%
from dpcourse.grading import check
check("03", broadcast_by_hand, all_gather_by_hand)

# %% [markdown]
# ## Going further
#
# Your broadcast sends `N − 1` messages from one rank, one after the other. A *tree* does better:
# in round 1 the source sends to one rank; in round 2 both of them send to one more each; after
# `⌈log₂ N⌉` rounds everyone has the data. Try writing it: rank `r` (counted relative to `src`)
# receives in the round given by its highest set bit, then sends on in every later round.
