# exercise: 02
# expect: gradients left over from before are cleared
# names: gradients not zeroed first
# Wrong: never zeroes the gradients, so whatever was in .grad leaks into the result.
def accumulate_gradients(model, loss_fn, x, y, micro_batches):
    n = len(x)
    total = 0.0
    for xs, ys in zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches)):
        loss = loss_fn(model(xs), ys) * (len(xs) / n)
        loss.backward()
        total += loss.item()
    return total
