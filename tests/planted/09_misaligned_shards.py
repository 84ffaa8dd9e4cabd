# exercise: 09
# expect: a parameter count that does not divide by the world size (4 ranks: shards end inside parameters)
# base: 09_good.py
# Wrong: the pieces are cut from shards of numel // world_size elements, while the reduce-scatter hands out
# shards of ceil(numel / world_size): when the count does not divide, the pieces no longer line up with
# the parameter elements their gradients belong to (and the last elements belong to no rank).
<<<
            lo, hi = max(offset, self.start), min(offset + n, self.stop)
===
            floor = self.numel // self.world_size
            lo, hi = max(offset, self.rank * floor), min(offset + n, (self.rank + 1) * floor)
>>>
<<<
                self.pieces.append((self.flat[lo:hi], lo - self.start))
===
                self.pieces.append((self.flat[lo:hi], lo - self.rank * floor))
>>>
