# exercise: 07
# expect: 2 ranks: same parameters as one process with the global batch; 3 ranks with accumulation (hidden)
# names: no sampler.set_epoch
# base: 07_good.py
# Wrong: never calls sampler.set_epoch, so every epoch deals out the same shuffle.
<<<
        sampler.set_epoch(epoch)
===
>>>
