# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# Adversarial: prints about 30 MB, then returns a wrong answer.
import sys

for _ in range(3000):
    sys.stdout.write("PASSED " * 1500 + "\n")


def ring_all_reduce(tensor):
    print("x" * 5_000_000)
    tensor.fill_(-1.0)
    return tensor
