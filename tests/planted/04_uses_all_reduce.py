# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# Wrong: hands the work to torch's own all_reduce.
def ring_all_reduce(tensor):
    dist.all_reduce(tensor)
    return tensor
