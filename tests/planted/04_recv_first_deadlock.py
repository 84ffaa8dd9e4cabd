# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# names: deadlock from the order of blocking calls
# hangs: yes
# Wrong: every rank receives from its left before sending to its right: nobody sends, a deadlock.
def ring_all_reduce(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return tensor
    chunks = list(torch.tensor_split(tensor.view(-1), world))
    right, left = (rank + 1) % world, (rank - 1) % world
    for step in range(world - 1):
        s, r = (rank - step) % world, (rank - step - 1) % world
        incoming = torch.empty_like(chunks[r])
        dist.recv(incoming, src=left)
        dist.send(chunks[s].clone(), dst=right)
        chunks[r].add_(incoming)
    for step in range(world - 1):
        s, r = (rank + 1 - step) % world, (rank - step) % world
        dist.recv(chunks[r], src=left)
        dist.send(chunks[s].clone(), dst=right)
    return tensor
