# exercise: 02
# expect: 12 samples in 3 micro-batches
# names: micro-batch losses not scaled
# Wrong: sums the micro-batch mean losses, so gradients are k times too large.
def accumulate_gradients(model, loss_fn, x, y, micro_batches):
    model.zero_grad()
    total = 0.0
    for xs, ys in zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches)):
        loss = loss_fn(model(xs), ys)
        loss.backward()
        total += loss.item()
    return total / micro_batches
