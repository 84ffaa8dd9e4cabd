# exercise: 05
# expect: average_gradients: 2 ranks, a layer only rank 0 uses, one all-reduce per parameter
# names: skips parameters whose .grad is None
# base: 05_good.py
# Wrong (seen in a public tutorial): average_gradients skips parameters whose .grad is None. With a layer only
# some ranks use, the ranks then call different all-reduces and abort (or mix up gradients).
<<<
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)
===
        if p.grad is None:
            continue
        dist.all_reduce(p.grad)
        p.grad.div_(world)
>>>
