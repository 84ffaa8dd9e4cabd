# exercise: 04
# expect: full
# Correct: the textbook ring in two loops of N-1 steps each, a reduce-scatter then an all-gather. The frozen
# base of the ring bugs planted as 04_*.diff.
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
    for step in range(world - 1):
        s, r = (rank + 1 - step) % world, (rank - step) % world
        incoming = torch.empty_like(chunks[r])
        req = dist.isend(chunks[s].clone(), dst=right)
        dist.recv(incoming, src=left)
        req.wait()
        chunks[r].copy_(incoming)
    return tensor
