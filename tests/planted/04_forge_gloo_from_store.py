# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# route: a process group of its own
# Forgery: builds a ProcessGroupGloo by hand from the default store and all-reduces on it.
import datetime


def ring_all_reduce(tensor):
    store = dist.PrefixStore("mine", dist.distributed_c10d._get_default_store())
    pg = dist.ProcessGroupGloo(store, dist.get_rank(), dist.get_world_size(), datetime.timedelta(seconds=5))
    pg.allreduce([tensor]).wait()
    return tensor
