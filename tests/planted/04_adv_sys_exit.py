# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# Adversarial: ends the process politely, hoping an exit status of 0 counts as success.
import sys


def ring_all_reduce(tensor):
    sys.exit(0)


sys.exit(0)
