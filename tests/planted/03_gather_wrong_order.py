# exercise: 03
# expect: all_gather: 2 ranks; all_gather: 3 ranks
# names: items in the wrong order
# Wrong: puts its own tensor first, then the others: not in rank order.
def broadcast_by_hand(tensor, src=0):
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == src:
        for peer in range(world):
            if peer != src:
                dist.send(tensor, dst=peer)
    else:
        dist.recv(tensor, src=src)
    return tensor


def all_gather_by_hand(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    others = {p: torch.empty_like(tensor) for p in range(world) if p != rank}
    reqs = []
    for p, buf in others.items():
        reqs += [dist.irecv(buf, src=p), dist.isend(tensor, dst=p)]
    for r in reqs:
        r.wait()
    return [tensor.clone()] + [others[p] for p in sorted(others)]
