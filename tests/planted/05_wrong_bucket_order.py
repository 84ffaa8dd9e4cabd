# exercise: 05
# expect: BucketedDDP: one bucket per parameter, in bucket order, SGD with momentum and weight decay
# names: wrong bucket order
# base: 05_good.py
# Wrong: starts each bucket as soon as it is full, not strictly in bucket order; a rank that did not use a layer
# sends that bucket last, so the ranks' all-reduces no longer line up.
<<<
            self._launch_ready()

===
            self._launch(b)  # as soon as it is full, whatever the bucket order

>>>
<<<
        for b in self.buckets:  # whatever did not fill during backward is sent now, in bucket order
            b.pending = 0
        self._launch_ready()
===
        for b in self.buckets:  # whatever did not fill during backward is sent now
            if b.work is None:
                self._launch(b)
>>>
