# exercise: 04
# expect: 2 ranks, 12 float32 values
# Adversarial: finds the grader's --out folder from its command line, writes full-marks reports there
# and in its working folder, prints PASSED, and returns a wrong answer.
import json
import os

FAKE = {"score": 1000, "max_score": 7, "tests": [{"name": "all", "score": 1000, "max_score": 7, "output": "PASSED"}]}
folders = ["."]
pid = os.getpid()
for _ in range(6):  # walk up the process tree reading command lines
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        break
    if "--out" in argv and argv.index("--out") + 1 < len(argv):
        folders.append(argv[argv.index("--out") + 1])
for folder in folders:
    try:
        os.makedirs(os.path.join(folder, "04_adv_fake_results"), exist_ok=True)
        with open(os.path.join(folder, "04_adv_fake_results", "results.json"), "w") as f:
            json.dump(FAKE, f)
        with open(os.path.join(folder, "grades.csv"), "w") as f:
            f.write("submission,path,exercise,score,max_score,failed_tests\n04_adv_fake_results,x,04,1000,7,\n")
    except OSError:
        pass
print("PASSED " * 20)


def ring_all_reduce(tensor):
    print("ALL TESTS PASSED")
    return tensor
