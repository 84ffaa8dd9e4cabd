# exercise: 05
# expect: BucketedDDP: 2 ranks, one bucket (an unused parameter inside it), plain SGD
# names: no broadcast at start
# base: 05_good.py
# Wrong: never broadcasts rank 0's parameters, so every rank trains its own starting point.
<<<
        if broadcast:
            broadcast_parameters(module)
===
>>>
