# exercise: 03
# expect: broadcast: 2 ranks from rank 0 (default src); all_gather: 2 ranks
# Wrong: calls torch's own collectives instead of writing them with send/recv.
def broadcast_by_hand(tensor, src=0):
    dist.broadcast(tensor, src=src)
    return tensor


def all_gather_by_hand(tensor):
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor)
    return out
