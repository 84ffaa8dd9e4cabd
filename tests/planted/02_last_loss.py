# exercise: 02
# expect: 12 samples in 3 micro-batches
# names: returns the last micro-batch's loss
# Wrong: the gradients are right but it returns the last micro-batch's loss.
def accumulate_gradients(model, loss_fn, x, y, micro_batches):
    model.zero_grad()
    n = len(x)
    for xs, ys in zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches)):
        loss = loss_fn(model(xs), ys)
        (loss * len(xs) / n).backward()
    return loss.item()
