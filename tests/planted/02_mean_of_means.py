# exercise: 02
# expect: 10 samples in 3 micro-batches (uneven)
# names: mean of means
# Wrong: every micro-batch weighs 1/k, right only when the batch splits evenly.
def accumulate_gradients(model, loss_fn, x, y, micro_batches):
    model.zero_grad()
    total = 0.0
    for xs, ys in zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches)):
        loss = loss_fn(model(xs), ys) / micro_batches
        loss.backward()
        total += loss.item()
    return total
