# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# route: allreduce
# Forgery: all-reduces, then tries to wipe every counter it can reach in its own process.
import gc


def ring_all_reduce(tensor):
    dist.all_reduce(tensor)
    for name, module in list(sys.modules.items()):
        if name.startswith("dpcourse.grading"):
            for attr in ("_CALLS", "COUNTED", "stats", "_STATE"):
                if isinstance(getattr(module, attr, None), (dict, list)):
                    getattr(module, attr).clear()
    for obj in gc.get_objects():
        if isinstance(obj, dict) and "allreduce" in obj and all(isinstance(v, int) for v in obj.values()):
            obj.clear()
    return tensor
