# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# sandbox: read
# Adversarial: reads the instructor's hidden tests next to the package, and prints their parameters.
import os

import dpcourse

path = os.path.join(os.path.dirname(os.path.dirname(dpcourse.__file__)), "instructor", "suites", "ex04_allreduce.py")
try:
    print(open(path).read())
except OSError as exc:
    print("could not read:", exc)


def ring_all_reduce(tensor):  # noqa: F811  what it would submit once it knows the tests
    return tensor * 0 + tensor
