# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# names: missing reduce-scatter
# Wrong: skips the reduce-scatter phase and only passes chunks around: every chunk ends up a copy of one rank's.
def ring_all_reduce(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return tensor
    chunks = list(torch.tensor_split(tensor.view(-1), world))
    right, left = (rank + 1) % world, (rank - 1) % world
    for step in range(world - 1):
        s, r = (rank + 1 - step) % world, (rank - step) % world
        incoming = torch.empty_like(chunks[r])
        req = dist.isend(chunks[s].clone(), dst=right)
        dist.recv(incoming, src=left)
        req.wait()
        chunks[r].copy_(incoming)
    return tensor
