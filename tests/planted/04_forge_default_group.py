# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# route: allreduce
# Forgery: calls the default process group's own allreduce, below torch.distributed's Python functions.
def ring_all_reduce(tensor):
    dist.distributed_c10d._get_default_group().allreduce([tensor]).wait()
    return tensor
