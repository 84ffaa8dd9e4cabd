# exercise: 09
# expect: SGD with momentum, 2 ranks, an even parameter count: matches one process; AdamW with weight decay, 2 ranks: matches one process
# base: 09_good.py
# Wrong: each rank steps its shard but never all-gathers, so the other ranks' updates never reach it.
<<<
        self.optimizer.step()                               # updates my shard of self.flat in place
        dist.all_gather_single(self.flat, self.flat[self.start:self.stop].clone())
===
        self.optimizer.step()                               # updates my shard of self.flat in place
>>>
