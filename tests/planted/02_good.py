# exercise: 02
# expect: full
# An honest, correct submission (written independently of the solution notebook).
def accumulate_gradients(model, loss_fn, x, y, micro_batches):
    model.zero_grad()
    n = x.shape[0]
    total = 0.0
    for xs, ys in zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches)):
        if len(xs) == 0:
            continue
        loss = loss_fn(model(xs), ys) * (len(xs) / n)
        loss.backward()
        total += loss.item()
    return total
