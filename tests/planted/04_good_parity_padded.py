# exercise: 04
# expect: full
# Correct, in an unusual style: zero-padded equal chunks, blocking send/recv ordered by rank parity
# (even ranks send first, odd ranks receive first), the sum kept in a padded buffer and copied back.
def ring_all_reduce(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return tensor
    n = tensor.numel()
    size = -(-n // world)
    buf = torch.zeros(size * world, dtype=tensor.dtype)
    buf[:n] = tensor.reshape(-1)
    chunk = lambda i: buf[(i % world) * size:(i % world + 1) * size]  # noqa: E731
    right, left = (rank + 1) % world, (rank - 1) % world

    def exchange(out, into):
        if rank % 2 == 0:
            dist.send(out.clone(), right)
            dist.recv(into, left)
        else:
            dist.recv(into, left)
            dist.send(out.clone(), right)

    incoming = torch.empty(size, dtype=tensor.dtype)
    for step in range(world - 1):
        exchange(chunk(rank - step), incoming)
        chunk(rank - step - 1).add_(incoming)
    for step in range(world - 1):
        exchange(chunk(rank + 1 - step), incoming)
        chunk(rank - step).copy_(incoming)
    tensor.view(-1).copy_(buf[:n])
    return tensor
