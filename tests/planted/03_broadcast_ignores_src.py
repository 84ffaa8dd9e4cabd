# exercise: 03
# expect: broadcast: 3 ranks from rank 2
# names: broadcast ignores src
# Wrong: always broadcasts from rank 0, whatever src says.
def broadcast_by_hand(tensor, src=0):
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        for peer in range(1, world):
            dist.send(tensor, dst=peer)
    else:
        dist.recv(tensor, src=0)
    return tensor


def all_gather_by_hand(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    out = [torch.empty_like(tensor) for _ in range(world)]
    out[rank].copy_(tensor)
    reqs = []
    for p in range(world):
        if p != rank:
            reqs += [dist.irecv(out[p], src=p), dist.isend(tensor, dst=p)]
    for r in reqs:
        r.wait()
    return out
