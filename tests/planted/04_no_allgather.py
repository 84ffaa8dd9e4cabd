# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# names: missing all-gather
# Wrong: stops after the reduce-scatter phase; each rank holds only one summed chunk.
def ring_all_reduce(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return tensor
    chunks = list(torch.tensor_split(tensor.view(-1), world))
    right, left = (rank + 1) % world, (rank - 1) % world
    for step in range(world - 1):
        s, r = (rank - step) % world, (rank - step - 1) % world
        incoming = torch.empty_like(chunks[r])
        req = dist.isend(chunks[s].clone(), dst=right)
        dist.recv(incoming, src=left)
        req.wait()
        chunks[r].add_(incoming)
    return tensor
