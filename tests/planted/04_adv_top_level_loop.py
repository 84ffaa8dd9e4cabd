# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# hangs: yes
# Adversarial: the cell itself never finishes running.
def ring_all_reduce(tensor):
    return tensor


while True:
    pass
