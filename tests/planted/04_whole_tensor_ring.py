# exercise: 04
# expect: 3 ranks, 10 values (not divisible by 3); 4 ranks, 64 float64 values: at most a ring's bytes
# Wrong (an old tutorial's ring): passes the whole tensor around the ring N-1 times. The sum is right, but each
# rank sends (N-1) x the tensor instead of 2(N-1)/N x.
def ring_all_reduce(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    right, left = (rank + 1) % world, (rank - 1) % world
    send_buf = tensor.clone()
    recv_buf = torch.empty_like(tensor)
    accum = tensor.clone()
    for _ in range(world - 1):
        req = dist.isend(send_buf, right)
        dist.recv(recv_buf, left)
        req.wait()
        accum += recv_buf
        send_buf = recv_buf.clone()
    tensor.copy_(accum)
    return tensor
