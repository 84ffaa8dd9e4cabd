# exercise: 10
# expect: bytes sent (counted by the process group): only values and indices
# base: 10_good.py
# Wrong: zeroes all but the top k and all-gathers the whole dense tensor: the right result, but more bytes than
# DDP's uncompressed all-reduce sends.
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
    sparse = torch.zeros_like(grad).index_copy_(0, indices, values)
    gathered = sparse.new_empty(world * sparse.numel())
    work = dist.all_gather_single(gathered, sparse, async_op=True)

    def average(_):
        return gathered.view(world, -1).sum(dim=0) / world

    return work.get_future().then(average)
>>>
