# exercise: 07
# expect: no_sync accumulation: same result, all-reduce only on the last micro-batch
# names: all-reduce on every micro-batch
# base: 07_good.py
# Wrong: the parameters come out right, but every micro-batch all-reduces its gradients (no no_sync).
<<<
            with ddp.no_sync() if not last else contextlib.nullcontext():
===
            with contextlib.nullcontext():
>>>
