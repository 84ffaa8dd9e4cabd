# exercise: 11
# expect: divergence: the fix trains like one process, on every rank, without hanging
# base: 11_good.py
# Wrong: the replicas still drift (the unfrozen layer's weight is never averaged), but rank 0's weights are
# broadcast after every step, so the divergence detector goes quiet. The ranks agree - on rank 0's
# model, trained on a third of each batch - and one process on the global batch disagrees.
<<<
            average_gradients([p for p in model.parameters() if p.requires_grad])  # every trained layer, every step
            opt.step()
            step += 1
===
            average_gradients([p for p in model.parameters() if p.requires_grad and p is not frozen[0]])
            opt.step()
            broadcast_parameters(model)
            step += 1
>>>
