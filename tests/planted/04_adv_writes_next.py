# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# sandbox: write
# Adversarial: overwrites another student's submission with a broken one, and leaves a file beside them.
import json

for name in ("04_good.ipynb", "sabotage.txt"):
    try:
        with open(f"@SUBMISSIONS@/{name}", "w") as f:
            json.dump({"cells": []}, f)
    except OSError as exc:
        print("could not write:", exc)
for target in (os.path.expanduser("~/dpcourse-was-here"), "/usr/local/dpcourse-was-here"):
    try:
        open(target, "w").close()
    except OSError as exc:
        print("could not write:", exc)


def ring_all_reduce(tensor):
    return tensor
