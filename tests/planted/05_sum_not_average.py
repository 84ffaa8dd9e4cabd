# exercise: 05
# expect: average_gradients: 2 ranks, a layer only rank 0 uses, one all-reduce per parameter; BucketedDDP: 2 ranks, one bucket (an unused parameter inside it), plain SGD
# names: sum instead of average
# base: 05_good.py
# Wrong: sums the gradients over ranks and forgets to divide by the world size.
<<<
        p.grad.div_(world)
===
>>>
<<<
                torch.div(p.grad.reshape(-1), world, out=piece)  # copy and scale in one pass
===
                piece.copy_(p.grad.reshape(-1))
>>>
