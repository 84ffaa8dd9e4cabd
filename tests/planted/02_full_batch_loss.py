# exercise: 02
# expect: the model sees one micro-batch at a time
# Wrong: the gradients are right, but the returned loss comes from a forward pass over the whole batch,
# which is exactly the memory that accumulation is meant to save.
def accumulate_gradients(model, loss_fn, x, y, micro_batches):
    if not isinstance(micro_batches, int) or not 1 <= micro_batches <= len(x):
        raise ValueError("micro_batches must be a whole number from 1 to len(x)")
    model.zero_grad()
    for xs, ys in zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches)):
        (loss_fn(model(xs), ys) * len(xs) / len(x)).backward()
    with torch.no_grad():
        return loss_fn(model(x), y).item()
