# exercise: 04
# expect: 2 ranks, 12 float32 values; 1 rank: the tensor is its own sum
# sandbox: read
# Adversarial: copies another student's solution out of the class's submission folder (the test fills in where
# it is; a student on a shared grading machine could guess it), and uses it.
import json

STOLEN = None
try:
    with open("@SUBMISSIONS@/04_good.ipynb") as f:
        cells = json.load(f)["cells"]
    STOLEN = "".join(cells[1]["source"])
except Exception as exc:  # noqa: BLE001
    print("could not copy:", exc)

if STOLEN:
    exec(STOLEN)
else:
    def ring_all_reduce(tensor):
        return tensor
