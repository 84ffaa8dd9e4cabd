# exercise: 02
# expect: micro_batches outside 1..N raises ValueError
# Wrong: exact for good input, but micro_batches=0 divides by zero and a too-large value runs on
# empty pieces instead of saying what is allowed.
def accumulate_gradients(model, loss_fn, x, y, micro_batches):
    model.zero_grad()
    total = 0.0
    size = -(-len(x) // micro_batches)
    for start in range(0, len(x), size):
        xs, ys = x[start:start + size], y[start:start + size]
        loss = loss_fn(model(xs), ys) * (len(xs) / len(x))
        loss.backward()
        total += loss.item()
    return total
