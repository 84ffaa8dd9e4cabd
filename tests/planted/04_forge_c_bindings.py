# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# route: torch._C
# Forgery: torch's functional collectives, which go straight to the C++ ops under torch._C.
import torch.distributed._functional_collectives as funcol


def ring_all_reduce(tensor):
    tensor.copy_(funcol.wait_tensor(funcol.all_reduce(tensor, "sum", dist.group.WORLD)))
    return tensor
