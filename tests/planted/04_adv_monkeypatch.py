# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# Adversarial: makes every comparison succeed and the counting of collectives forget, then cheats.
import numpy
import torch

import dpcourse
import dpcourse.grading.framework as framework

torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
numpy.allclose = lambda *a, **k: True
numpy.isclose = lambda *a, **k: numpy.ones(1, dtype=bool)
framework.forbid_collectives = lambda *a, **k: None
framework.Fail = Exception


def ring_all_reduce(tensor):
    tensor.zero_()
    return tensor
