# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# sandbox: signal
# Adversarial: stops its parent and every process it can number, hoping to take the grader down.
import signal

for pid in [os.getppid(), *range(2, 64)]:
    if pid not in (0, os.getpid()):  # 0 would be its own process group
        try:
            os.kill(pid, signal.SIGSTOP)
        except OSError:
            pass


def ring_all_reduce(tensor):
    return tensor
