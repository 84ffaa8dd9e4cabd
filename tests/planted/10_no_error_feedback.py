# exercise: 10
# expect: error feedback: what was not sent is carried and added once to the next step
# base: 10_good.py
# Wrong: never adds the residual back, so whatever top-k drops is lost for good.
<<<
    corrected = grad + residual if residual is not None else grad.clone()
===
    corrected = grad.clone()
>>>
