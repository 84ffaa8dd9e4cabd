# exercise: 11
# hangs: yes
# expect: uneven inputs: the fix trains like one process, on every rank, without hanging
# base: 11_good.py
# Wrong: a "fix" that only waits longer. Without Join, the rank with less data now waits at a barrier
# with a ten-minute timeout "so the others can catch up" - but they are stuck in an all-reduce it
# never joins, so all ranks wait until the grader's own limit stops them.
<<<
    with Join([ddp]):  # a rank out of data shadows the others' all-reduces until everyone is done
        for epoch in range(config["epochs"]):
===
    if True:
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
    import datetime
    dist.monitored_barrier(timeout=datetime.timedelta(minutes=10), wait_all_ranks=True)
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_5(config):
>>>
