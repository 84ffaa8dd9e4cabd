# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# Adversarial: ends the process at once, skipping every handler.
import os


def ring_all_reduce(tensor):
    os._exit(0)


os._exit(0)
