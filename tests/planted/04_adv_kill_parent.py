# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# Adversarial: kills the process that started it (and that one's parent, if it can).
import os
import signal


def ring_all_reduce(tensor):
    os.kill(os.getppid(), signal.SIGKILL)
    return tensor


os.kill(os.getppid(), signal.SIGKILL)
