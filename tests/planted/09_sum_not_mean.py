# exercise: 09
# expect: SGD with momentum, 2 ranks, an even parameter count: matches one process
# base: 09_good.py
# Wrong: the reduce-scattered gradient is the sum over ranks, never divided by the world size.
<<<
        self.grad_shard /= self.world_size
===
>>>
