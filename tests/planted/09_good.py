# exercise: 09
# expect: full
# The solution's graded cell (tools/nbsrc/solutions/09_zero.py) without its markers, as a learner would hand it in.
import math


class ZeroOptimizer:
    """ZeRO-1 around ``optimizer_class``: this rank keeps optimizer state for its shard of the parameters only."""

    def __init__(self, params, optimizer_class, **defaults):
        self.params = [p for p in params if p.requires_grad]
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.numel = sum(p.numel() for p in self.params)
        size = math.ceil(self.numel / self.world_size)      # equal shards: the last one is padded
        self.start, self.stop = self.rank * size, (self.rank + 1) * size
        first = self.params[0]
        self.flat = torch.zeros(size * self.world_size, dtype=first.dtype, device=first.device)
        self.grad_shard = torch.zeros(size, dtype=first.dtype, device=first.device)
        self.pieces = []                                    # (view of my shard, where it starts in the shard)
        offset = 0
        for p in self.params:
            n = p.numel()
            self.flat[offset:offset + n].copy_(p.detach().flatten())
            p.data = self.flat[offset:offset + n].view_as(p)   # the parameter now lives in the flat buffer
            lo, hi = max(offset, self.start), min(offset + n, self.stop)
            if lo < hi:                                     # this parameter overlaps my shard
                self.pieces.append((self.flat[lo:hi], lo - self.start))
            offset += n
        tensors = [piece for piece, _ in self.pieces] or [self.flat[self.start:self.start]]
        self.optimizer = optimizer_class(tensors, **defaults)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        """Reduce-scatter the gradients, step this rank's shard, all-gather the parameters."""
        grads = [p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
                 for p in self.params]
        flat_grad = torch.cat(grads + [grads[0].new_zeros(self.flat.numel() - self.numel)])
        dist.reduce_scatter_single(self.grad_shard, flat_grad)  # the sum of my shard only
        self.grad_shard /= self.world_size
        for piece, at in self.pieces:
            piece.grad = self.grad_shard[at:at + piece.numel()]
        self.optimizer.step()                               # updates my shard of self.flat in place
        dist.all_gather_single(self.flat, self.flat[self.start:self.stop].clone())

    def state_dict(self):
        """What load_state_dict needs to continue this rank's training exactly (the model saves its own)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)
