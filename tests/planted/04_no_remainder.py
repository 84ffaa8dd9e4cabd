# exercise: 04
# expect: 3 ranks, 10 values (not divisible by 3); 4 ranks, 3 values (fewer than ranks)
# Wrong chunk bounds: numel // world per chunk, so the remainder is never reduced.
def ring_all_reduce(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return tensor
    flat = tensor.view(-1)
    size = flat.numel() // world
    chunks = [flat[i * size:(i + 1) * size] for i in range(world)]
    right, left = (rank + 1) % world, (rank - 1) % world
    for step in range(world - 1):
        s, r = (rank - step) % world, (rank - step - 1) % world
        incoming = torch.empty_like(chunks[r])
        req = dist.isend(chunks[s].clone(), dst=right)
        dist.recv(incoming, src=left)
        req.wait()
        chunks[r].add_(incoming)
    for step in range(world - 1):
        s, r = (rank + 1 - step) % world, (rank - step) % world
        incoming = torch.empty_like(chunks[r])
        req = dist.isend(chunks[s].clone(), dst=right)
        dist.recv(incoming, src=left)
        req.wait()
        chunks[r].copy_(incoming)
    return tensor
