# exercise: 11
# hangs: yes
# expect: uneven inputs: the fix trains like one process, on every rank, without hanging
# base: 11_good.py
# Wrong: a "fix" that only hides the hang. Without Join the ranks with more data wait forever in
# an all-reduce that the short rank never joins; a try/except around the loop catches nothing,
# because a waiting rank raises no exception (only the process group's timeout, much later, would).
<<<
    with Join([ddp]):  # a rank out of data shadows the others' all-reduces until everyone is done
        for epoch in range(config["epochs"]):
===
    try:
        for epoch in range(config["epochs"]):
>>>
<<<
                loss.backward()
                opt.step()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_5(config):
===
                loss.backward()
                opt.step()
    except RuntimeError:
        pass
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_5(config):
>>>
