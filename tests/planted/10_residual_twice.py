# exercise: 10
# expect: error feedback: what was not sent is carried and added once to the next step
# base: 10_good.py
# Wrong: adds the residual into the bucket in place, and then again when forming the corrected gradient.
<<<
    corrected = grad + residual if residual is not None else grad.clone()
===
    if residual is not None:
        grad += residual
    corrected = grad + residual if residual is not None else grad.clone()
>>>
