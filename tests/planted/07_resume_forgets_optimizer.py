# exercise: 07
# expect: resuming continues the run exactly
# names: optimizer state not restored
# base: 07_good.py
# Wrong: resuming restores the model and the epoch but not the optimizer's momentum buffers.
<<<
        opt.load_state_dict(state["optimizer"])
===
>>>
