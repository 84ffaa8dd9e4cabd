# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# Adversarial: tries to allocate far more memory than any test needs, as soon as the cell runs.
import torch

hog = torch.ones(8 * 1024**3, dtype=torch.uint8)  # 8 GiB


def ring_all_reduce(tensor):
    return tensor
