# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# route: allreduce
# Forgery: unwraps whatever wrapper counts calls (functools.wraps leaves the original in __wrapped__).
import inspect


def ring_all_reduce(tensor):
    inspect.unwrap(dist.all_reduce)(tensor)
    return tensor
