# exercise: 05
# expect: BucketedDDP: 2 ranks, one bucket (an unused parameter inside it), plain SGD; BucketedDDP: one bucket per parameter, in bucket order, SGD with momentum and weight decay
# base: 05_good.py
# Wrong: an extra all-reduce per step (a separate one for the 'has gradient' flags) - not one per bucket.
<<<
            b.times["start"] = time.perf_counter()
        b.work = dist.all_reduce(b.flat, async_op=True)
===
            b.times["start"] = time.perf_counter()
        dist.all_reduce(torch.zeros(1, dtype=b.flat.dtype))
        b.work = dist.all_reduce(b.flat, async_op=True)
>>>
