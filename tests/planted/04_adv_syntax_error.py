# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# A syntax error in the graded cell.
def ring_all_reduce(tensor)
    return tensor
