# exercise: 05
# expect: average_gradients: 2 ranks, a layer only rank 0 uses, one all-reduce per parameter
# names: one flat all-reduce
# base: 05_good.py
# Wrong for this task: one flat all-reduce of every gradient, where the task asks for one per parameter.
<<<
    _require_group("average_gradients")
    world = dist.get_world_size()
    for p in module.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)
===
    flat_average_gradients(module)
>>>
