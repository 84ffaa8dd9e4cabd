# exercise: 02
# expect: full
# An honest, correct submission (written independently of the solution notebook).
def accumulate_gradients(model, loss_fn, x, y, micro_batches):
    n = x.shape[0]
    if not isinstance(micro_batches, int) or micro_batches < 1 or micro_batches > n:
        raise ValueError(f"micro_batches must be an integer between 1 and {n}")
    model.zero_grad()
    total = 0.0
    for xs, ys in zip(x.tensor_split(micro_batches), y.tensor_split(micro_batches)):
        if len(xs) == 0:
            continue
        loss = loss_fn(model(xs), ys) * (len(xs) / n)
        loss.backward()
        total += loss.item()
    return total
