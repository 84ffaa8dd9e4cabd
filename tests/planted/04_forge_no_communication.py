# exercise: 04
# expect: 2 ranks, 12 float32 values; 3 ranks, 10 values (not divisible by 3)
# Forgery: no communication at all. Looks everywhere in its own process (stack frames, gc, seeds, generators,
# the files it can see) for the other ranks' inputs, rebuilds them from any seed it finds, and sums.
import gc
import glob

import numpy as np


def _candidates(like):
    found = []
    frame = sys._getframe()
    while frame is not None:  # every local variable of the harness frames above us
        for value in list(frame.f_locals.values()):
            found.append(value)
            if hasattr(value, "__dict__"):
                found += list(vars(value).values())
        frame = frame.f_back
    found += [o for o in gc.get_objects() if isinstance(o, (np.ndarray, torch.Tensor))]
    seeds = [v for v in found if isinstance(v, int) and not isinstance(v, bool) and v > 1000]
    for seed in seeds[:50]:  # the old suites drew rank r's input as default_rng([seed, r])
        for r in range(dist.get_world_size()):
            found.append(np.random.default_rng([seed, r]).standard_normal(tuple(like.shape)).astype(str(like.dtype).replace("torch.", "")))
    for path in glob.glob("/tmp/**/*.npy", recursive=True):
        found.append(np.load(path))
    return found


def ring_all_reduce(tensor):
    mine = tensor.numpy().copy()
    others = []
    for c in _candidates(tensor):
        a = c.detach().numpy() if isinstance(c, torch.Tensor) else c
        if isinstance(a, np.ndarray) and a.shape == mine.shape and a.dtype == mine.dtype and not np.array_equal(a, mine):
            if not any(np.array_equal(a, o) for o in others):
                others.append(a.copy())
    total = mine + sum(others[: dist.get_world_size() - 1]) if others else mine
    tensor.copy_(torch.from_numpy(np.asarray(total, dtype=mine.dtype)))
    return tensor
