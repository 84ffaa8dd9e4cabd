# exercise: 04
# expect: 2 ranks, 12 float32 values
# names: not in place
# Wrong: returns a new tensor holding the sum and leaves the input unchanged.
def ring_all_reduce(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    out = tensor.clone()
    if world == 1:
        return out
    chunks = list(torch.tensor_split(out.view(-1), world))
    right, left = (rank + 1) % world, (rank - 1) % world
    for phase in (0, 1):
        for step in range(world - 1):
            s = (rank - step) % world if phase == 0 else (rank + 1 - step) % world
            r = (rank - step - 1) % world if phase == 0 else (rank - step) % world
            incoming = torch.empty_like(chunks[r])
            req = dist.isend(chunks[s].clone(), dst=right)
            dist.recv(incoming, src=left)
            req.wait()
            if phase == 0:
                chunks[r].add_(incoming)
            else:
                chunks[r].copy_(incoming)
    return out
