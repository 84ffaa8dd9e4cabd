# exercise: 05
# expect: BucketedDDP: no_sync accumulates without communicating
# names: sync inside no_sync
# base: 05_good.py
# Wrong: no_sync() does not stop communication: gradients are all-reduced on every backward.
<<<
        previous, self._sync = self._sync, False
===
        previous = self._sync
>>>
