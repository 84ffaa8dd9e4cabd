# exercise: 11
# expect: data order: the fix trains like one process, on every rank, without hanging; averaging: the fix trains like one process, on every rank, without hanging; hang: the fix trains like one process, on every rank, without hanging
# base: 11_good.py
# Wrong: the diagnoses are right, the fixes are not: set_epoch is still missing in fixed_1, the head
# is still averaged twice in fixed_2, and fixed_5 keeps the log's all-reduce on rank 2 alone (which
# gloo answers by aborting the process when the sizes differ).
<<<
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))
            opt.step()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_2(config):
===
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))
            opt.step()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_2(config):
>>>
<<<
            average_gradients(list(model.parameters()))  # the head too: averaged once, like the rest
===
            average_gradients(list(model[:2].parameters()))
            for p in model[2:].parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
                p.grad /= world
>>>
<<<
            if (step + 1) % 4 == 0:  # every rank joins the all-reduce; one of them prints
                mean = loss.detach().reshape(1).clone()
                dist.all_reduce(mean)
                if rank == 2:
                    print(f"step {step}: mean loss {mean.item() / world:.4f}")
===
            if rank == 2 and (step + 1) % 4 == 0:
                try:
                    mean = loss.detach().reshape(1).clone()
                    dist.all_reduce(mean)
                    print(f"step {step}: mean loss {mean.item() / world:.4f}")
                except RuntimeError:
                    pass
>>>
