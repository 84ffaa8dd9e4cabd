# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# The function has the wrong name.
def ring_allreduce(tensor):
    return tensor
