# exercise: 05
# expect: average_gradients: 2 ranks give the full-batch gradient; BucketedDDP: 2 ranks, one bucket, matches one process
# base: 05_good.py
# Wrong: sums the gradients over ranks and forgets to divide by the world size.
<<<
        p.grad.div_(world)
===
>>>
<<<
        b.flat.div_(world)
===
>>>
