# exercise: 04
# expect: full
def ring_all_reduce(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return tensor
    flat = tensor.view(-1)
    base, extra = divmod(flat.numel(), world)
    bounds, start = [], 0
    for i in range(world):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    chunks = [flat[a:b] for a, b in bounds]
    right, left = (rank + 1) % world, (rank - 1) % world
    for phase in ("reduce", "gather"):
        for step in range(world - 1):
            if phase == "reduce":
                send_i, recv_i = (rank - step) % world, (rank - step - 1) % world
            else:
                send_i, recv_i = (rank + 1 - step) % world, (rank - step) % world
            incoming = torch.empty_like(chunks[recv_i])
            req = dist.isend(chunks[send_i].clone(), dst=right)
            dist.recv(incoming, src=left)
            req.wait()
            if phase == "reduce":
                chunks[recv_i].add_(incoming)
            else:
                chunks[recv_i].copy_(incoming)
    return tensor
