# exercise: 05
# expect: BucketedDDP: 2 ranks, one bucket (an unused parameter inside it), plain SGD; BucketedDDP: one bucket per parameter, in bucket order, SGD with momentum and weight decay
# names: zeroed unused gradient
# base: 05_good.py
# Wrong: a parameter no rank used gets a zero gradient instead of staying None (weight decay then moves it).
<<<
                if has_grad == 0:  # no rank produced a gradient: leave it as the optimizer expects
                    continue
===
>>>
