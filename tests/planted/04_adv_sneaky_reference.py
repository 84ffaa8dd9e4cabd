# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# Adversarial: reaches the course's reference through importlib and a built-up module name.
import importlib

_name = "dpcourse." + "".join(["all", "red", "uce"])


def ring_all_reduce(tensor):
    return importlib.import_module(_name).ring_all_reduce(tensor)
