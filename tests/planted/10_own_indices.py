# exercise: 10
# expect: identical parameters on every rank after each step; one step: each rank's k largest entries, averaged over ranks
# base: 10_good.py
# Wrong: all-reduces the k values and puts the sum at this rank's own indices; the ranks picked different
# indices, so they add unrelated entries and every rank applies a different update.
<<<
    all_values = values.new_empty(world * k)
    all_indices = indices.new_empty(world * k)
    works = [dist.all_gather_single(all_values, values, async_op=True),
             dist.all_gather_single(all_indices, indices, async_op=True)]

    def average(_):
        dense = torch.zeros_like(grad)
        for r in range(world):
            dense.index_add_(0, all_indices[r * k:(r + 1) * k], all_values[r * k:(r + 1) * k])
        return dense / world

    return torch.futures.collect_all([w.get_future() for w in works]).then(average)
===
    work = dist.all_reduce(values, async_op=True)

    def average(fut):
        dense = torch.zeros_like(grad)
        dense[indices] = fut.value()[0] / world
        return dense

    return work.get_future().then(average)
>>>
