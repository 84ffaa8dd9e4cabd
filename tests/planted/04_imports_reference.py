# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# Wrong: uses the course's reference implementation instead of its own.
# visible: no (check() runs what it is given; only the grader looks for the course's own code)
from dpcourse.allreduce import ring_all_reduce as _theirs


def ring_all_reduce(tensor):
    return _theirs(tensor)
