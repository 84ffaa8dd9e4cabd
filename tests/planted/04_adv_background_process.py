# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# Adversarial: leaves processes behind (a detached sleeper and a forked child that escapes its group).
import os
import subprocess


def ring_all_reduce(tensor):
    subprocess.Popen(["sleep", "600"], start_new_session=True)
    if os.fork() == 0:
        os.setpgid(0, 0)
        import time
        time.sleep(600)
        os._exit(0)
    return tensor * 0
