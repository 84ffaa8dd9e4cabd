# exercise: 05
# expect: average_gradients: 2 ranks give the full-batch gradient; BucketedDDP: 2 ranks, one bucket, matches one process
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
