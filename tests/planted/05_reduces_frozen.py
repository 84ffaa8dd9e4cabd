# exercise: 05
# expect: average_gradients: 2 ranks, a layer only rank 0 uses, one all-reduce per parameter
# names: all-reduces frozen parameters
# base: 05_good.py
# Wrong (seen in a course assignment): all-reduces every parameter, frozen ones too: dist.all_reduce(None) raises.
<<<
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
===
        dist.all_reduce(p.grad)
>>>
