# exercise: 03
# expect: full
def broadcast_by_hand(tensor, src=0):
    rank, world = dist.get_rank(), dist.get_world_size()
    if not 0 <= src < world:
        raise ValueError(f"src must be a rank from 0 to {world - 1}, got {src}")
    if rank == src:
        for peer in range(world):
            if peer != src:
                dist.send(tensor, dst=peer)
    else:
        dist.recv(tensor, src=src)
    return tensor


def all_gather_by_hand(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    out = [torch.empty_like(tensor) for _ in range(world)]
    out[rank].copy_(tensor)
    reqs = [dist.isend(tensor, dst=p) for p in range(world) if p != rank]
    for p in range(world):
        if p != rank:
            dist.recv(out[p], src=p)
    for r in reqs:
        r.wait()
    return out
