# exercise: 09
# expect: optimizer state per rank is about 1/N (4 ranks); no all-reduce of the full gradient: one reduce-scatter per step
# base: 09_good.py
# Wrong: DDP with extra steps. Every rank all-reduces the whole gradient and steps every parameter, so every
# rank keeps the full optimizer state (the training itself is still right).
<<<
        tensors = [piece for piece, _ in self.pieces] or [self.flat[self.start:self.start]]
        self.optimizer = optimizer_class(tensors, **defaults)
===
        self.optimizer = optimizer_class(self.params, **defaults)
>>>
<<<
        flat_grad = torch.cat(grads + [grads[0].new_zeros(self.flat.numel() - self.numel)])
        dist.reduce_scatter_single(self.grad_shard, flat_grad)  # the sum of my shard only
        self.grad_shard /= self.world_size
        for piece, at in self.pieces:
            piece.grad = self.grad_shard[at:at + piece.numel()]
        self.optimizer.step()                               # updates my shard of self.flat in place
        dist.all_gather_single(self.flat, self.flat[self.start:self.stop].clone())
===
        for p, g in zip(self.params, grads):
            dist.all_reduce(g)
            p.grad = (g / self.world_size).view_as(p)
        self.optimizer.step()
>>>
