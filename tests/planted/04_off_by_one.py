# exercise: 04
# expect: 3 ranks, 10 values (not divisible by 3)
# names: off-by-one chunk index
# Wrong: the all-gather phase starts one chunk ahead (r + 2 - s instead of r + 1 - s): it passes on chunks that
# are only partly summed, over the finished ones.
def ring_all_reduce(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return tensor
    chunks = list(torch.tensor_split(tensor.view(-1), world))
    right, left = (rank + 1) % world, (rank - 1) % world
    for phase in ("reduce", "gather"):
        for step in range(world - 1):
            if phase == "reduce":
                s, r = (rank - step) % world, (rank - step - 1) % world
            else:
                s, r = (rank + 2 - step) % world, (rank + 1 - step) % world
            incoming = torch.empty_like(chunks[r])
            req = dist.isend(chunks[s].clone(), dst=right)
            dist.recv(incoming, src=left)
            req.wait()
            if phase == "reduce":
                chunks[r].add_(incoming)
            else:
                chunks[r].copy_(incoming)
    return tensor
