"""ZeRO stage 1 written by hand: every rank keeps the optimizer state of its shard only.

DDP keeps a full copy of the optimizer state on every rank: for Adam that is two extra tensors the
size of the model, most of the memory of training. ZeRO-1 splits that work:

1. the parameters live in one flat buffer, cut into ``N`` equal shards (padded at the end, so any
   parameter count works); rank ``r`` owns shard ``r``;
2. after ``backward()``, a **reduce-scatter** of the flat gradient leaves each rank with the sum
   of *its* shard of the gradient only (half the traffic of an all-reduce);
3. each rank steps the wrapped optimizer on its shard, with that shard's optimizer state;
4. an **all-gather** of the updated shards gives every rank the full new parameters.

Reduce-scatter + all-gather move the same bytes as DDP's all-reduce (which *is* a reduce-scatter
followed by an all-gather): ZeRO-1 saves memory for free in communication.

    opt = ZeroOptimizer(model.parameters(), torch.optim.AdamW, lr=1e-3, weight_decay=0.1)
    loss_fn(model(x), y).backward()
    opt.step()          # reduce-scatter, step this rank's shard, all-gather
    opt.zero_grad()

A shard boundary may fall inside a parameter. The shard is therefore cut at parameter boundaries
into *pieces*, one per parameter it overlaps, and the wrapped optimizer sees each piece as its own
tensor, in its parameter's group: per-group options (say, no weight decay on biases) reach exactly
the right elements. Any elementwise optimizer (SGD, Adam, AdamW, RMSprop, ...) then takes exactly
the step the unsharded one takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["ZeroOptimizer", "optimizer_state_bytes", "shard_bounds"]


def shard_bounds(numel: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s shard of a flat buffer of ``numel`` elements.

    Every shard has ``ceil(numel / world_size)`` elements; the last ones may run into the padding
    past ``numel`` (reduce-scatter and all-gather need equal shards).
    """
    size = -(-numel // world_size)
    return rank * size, (rank + 1) * size


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer keeps between steps (momentum, Adam's moments, step counts)."""
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if torch.is_tensor(t))


class ZeroOptimizer:
    """ZeRO-1 around any ``torch.optim`` optimizer class: state for this rank's shard only.

    ``params`` is what a torch optimizer takes (tensors, or dicts of parameter groups with their own
    options); ``defaults`` go to ``optimizer_class``. All ranks must hold the same parameters at
    construction (rank 0's are broadcast, once). ``master_dtype=torch.float32`` with a bfloat16 model
    keeps an fp32 master copy of the shard (mixed precision: the optimizer steps in fp32, the model
    computes in bf16). A parameter whose ``.grad`` is None counts as a zero gradient.
    ``reduce_scatter(output, input)`` replaces ``torch.distributed.reduce_scatter_single`` (lesson 09
    plugs in a ring written by hand).
    """

    def __init__(self, params: Iterable[Any], optimizer_class: type, *, master_dtype: torch.dtype | None = None,
                 group: Any = None, reduce_scatter: Callable | None = None, **defaults: Any) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("ZeroOptimizer needs a process group: create it inside a worker started by "
                               "dpcourse.launch (or after torch.distributed.init_process_group).")
        groups = [dict(g) for g in params] if _are_groups(params) else [{"params": list(params)}]
        for g in groups:
            g["params"] = [p for p in g["params"] if p.requires_grad]
        self.params = [p for g in groups for p in g["params"]]
        if not self.params:
            raise ValueError("ZeroOptimizer got no parameters that require gradients.")
        if len({(p.dtype, p.device) for p in self.params}) > 1:
            raise ValueError("ZeroOptimizer needs every parameter in one dtype on one device: convert the model "
                             "first (model.float() / model.to(device)).")
        self.group = group
        self.reduce_scatter = reduce_scatter or (lambda out, inp: dist.reduce_scatter_single(out, inp, group=group))
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.numel = sum(p.numel() for p in self.params)
        self.start, self.stop = shard_bounds(self.numel, self.world_size, self.rank)

        # 1. One flat buffer; each parameter becomes a view into it, so the all-gather updates them all.
        first = self.params[0]
        self.flat = torch.zeros((self.stop - self.start) * self.world_size, dtype=first.dtype, device=first.device)
        self.offsets, offset = [], 0
        for p in self.params:
            self.flat[offset:offset + p.numel()].copy_(p.detach().flatten())
            p.data = self.flat[offset:offset + p.numel()].view_as(p)
            self.offsets.append(offset)
            offset += p.numel()
        dist.broadcast(self.flat, src=dist.get_global_rank(group, 0) if group else 0, group=group)

        # 2. This rank's shard, in the optimizer's dtype: a view (no copy) unless a master dtype differs.
        mine = self.flat[self.start:self.stop]
        self.master_is_copy = master_dtype not in (None, mine.dtype)
        self.master = mine.to(master_dtype) if self.master_is_copy else mine
        self.grad_shard = torch.zeros_like(self.master)

        # 3. The shard cut at parameter boundaries: one piece per parameter it overlaps, in that parameter's group.
        self.pieces: list[tuple[torch.Tensor, torch.Tensor]] = []   # (piece of master, piece of grad_shard)
        inner_groups, index = [], 0
        for g in groups:
            pieces = []
            for p in g["params"]:
                lo, hi = max(self.offsets[index], self.start), min(self.offsets[index] + p.numel(), self.stop)
                index += 1
                if lo < hi:
                    piece = self.master[lo - self.start:hi - self.start]
                    self.pieces.append((piece, self.grad_shard[lo - self.start:hi - self.start]))
                    pieces.append(piece)
            inner_groups.append({**g, "params": pieces})
        if not self.pieces:  # a rank whose whole shard is padding (tiny model, many ranks)
            inner_groups[0]["params"] = [self.master[:0]]
        self.optimizer = optimizer_class(inner_groups, **defaults)

    @property
    def param_groups(self) -> list[dict]:
        """The wrapped optimizer's groups (change ``lr`` here, as with any optimizer)."""
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """Reduce-scatter the gradients, step this rank's shard, all-gather the parameters."""
        grads = [p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
                 for p in self.params]
        padding = self.flat.numel() - self.numel
        flat_grad = torch.cat(grads + [grads[0].new_zeros(padding)])
        my_grad = flat_grad.new_empty(self.stop - self.start)
        self.reduce_scatter(my_grad, flat_grad)  # the sum over ranks of my shard only
        self.grad_shard.copy_(my_grad).div_(self.world_size)  # mean, like DDP; cast to the master dtype
        for piece, grad in self.pieces:
            piece.grad = grad
        self.optimizer.step()
        mine = self.master.to(self.flat.dtype)  # a copy: the all-gather's input may not alias its output
        dist.all_gather_single(self.flat, mine, group=self.group)

    def state_bytes(self) -> int:
        """Bytes of optimizer state on this rank: the wrapped optimizer's, plus a separate master copy."""
        master = self.master.numel() * self.master.element_size() if self.master_is_copy else 0
        return optimizer_state_bytes(self.optimizer) + master

    def state_dict(self) -> dict:
        """This rank's shard of the state (save one per rank); the model's parameters are saved separately."""
        return {"optimizer": self.optimizer.state_dict(), "master": self.master.clone(),
                "world_size": self.world_size, "rank": self.rank, "numel": self.numel}

    def load_state_dict(self, state: dict) -> None:
        """Load what :meth:`state_dict` returned on this rank, at the same world size and rank."""
        saved = (state.get("world_size"), state.get("rank"), state.get("numel"))
        if saved != (self.world_size, self.rank, self.numel):
            raise ValueError(f"this state is rank {saved[1]} of {saved[0]} for {saved[2]} parameters; here it is "
                             f"rank {self.rank} of {self.world_size} for {self.numel}: a ZeRO shard only "
                             "loads where it was saved (use torch.distributed.checkpoint to resume on another "
                             "number of ranks).")
        self.optimizer.load_state_dict(state["optimizer"])
        self.master.copy_(state["master"])
        self.flat[self.start:self.stop].copy_(self.master)


def _are_groups(params: Any) -> bool:
    if isinstance(params, torch.Tensor):
        raise TypeError("ZeroOptimizer takes an iterable of tensors (model.parameters()), not one tensor.")
    if not isinstance(params, (list, tuple)):
        return False  # a generator of tensors
    return bool(params) and all(isinstance(g, dict) for g in params)
