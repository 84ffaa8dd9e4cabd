"""Grade a class of 30 submissions of exercise 04 (the ring all-reduce) with one `dpcourse grade` call.

    python benchmarks/grade_class.py [--timeout 20] [--jobs 2] [--keep DIR]

The class is built from our own submissions: most are correct (three different correct styles),
some are wrong in the ways learners are (remainder dropped, no all-gather phase, an average
instead of a sum, not in place, torch's all_reduce instead of a ring) and one deadlocks. The script
prints the wall time of the grading, the scores, and whether each submission scored as it should.
Goal (issue 7): at most 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
PLANTED = ROOT / "tests" / "planted"
PRELUDE = "import torch\nimport torch.distributed as dist"
CORRECT = ["04_good.py", "<solution>", "<reference>"]
WRONG = ["04_no_remainder.diff", "04_no_allgather.diff", "04_averages.diff", "04_not_in_place.diff",
         "04_uses_all_reduce.py", "04_recv_first_deadlock.diff"]  # a .diff: a wrong variant of a planted good one


def _solution_code() -> str | None:
    path = ROOT / "solutions" / "04_allreduce.ipynb"
    if not path.exists():
        return None
    nb = nbformat.read(path, as_version=4)
    graded = [c.source for c in nb.cells if "graded" in c.metadata.get("tags", [])]
    markers = ("### BEGIN SOLUTION", "### END SOLUTION")
    return "\n\n".join("\n".join(line for line in s.splitlines() if line.strip() not in markers) for s in graded)


def _reference_code() -> str:
    """The course's own ring, pasted into the notebook the way a learner would write it."""
    text = (ROOT / "dpcourse" / "allreduce.py").read_text()
    return text.split("import torch.distributed as dist\n", 1)[1]


def _source(name: str) -> str:
    if name == "<solution>":
        return _solution_code() or (PLANTED / "04_good.py").read_text()
    if name == "<reference>":
        return _reference_code()
    sys.path.insert(0, str(ROOT / "tests"))
    from planted_sources import planted_source

    return planted_source(PLANTED / name)


def build_class(folder: Path, size: int = 30) -> dict[str, bool]:
    """Write ``size`` submissions into ``folder``; return {name: should score full marks}."""
    expected = {}
    wrong = list(WRONG)
    for i in range(size):
        ok = i % 4 != 3 or not wrong  # about one in four is wrong, the deadlock among them
        name = wrong.pop(0) if not ok else CORRECT[i % len(CORRECT)]
        nb = nbformat.v4.new_notebook()
        nb.metadata["dpcourse"] = {"exercise": "04"}
        nb.cells.append(nbformat.v4.new_code_cell(PRELUDE))
        cell = nbformat.v4.new_code_cell(f"# learner {i:02d}\n" + _source(name))
        cell.metadata["tags"] = ["graded"]
        nb.cells.append(cell)
        nb.cells.append(nbformat.v4.new_code_cell("from dpcourse.grading import check\ncheck('04', ring_all_reduce)"))
        key = f"learner{i:02d}"
        nbformat.write(nb, folder / f"{key}.ipynb")
        expected[key] = ok
    return expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per test (a deadlock costs this much)")
    parser.add_argument("--jobs", type=int, default=3, help="tests at once (deadlocked ones wait without using CPU)")
    parser.add_argument("--keep", type=Path, help="keep the class and the reports in this folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        (base / "class").mkdir(parents=True, exist_ok=True)
        expected = build_class(base / "class", args.size)
        paths = sorted((base / "class").glob("*.ipynb"))
        cmd = [sys.executable, "-m", "dpcourse.cli", "grade", *map(str, paths), "--out", str(base / "out"),
               "--timeout", str(args.timeout), "--jobs", str(args.jobs)]
        start = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # the progress bar goes to our stderr
        seconds = time.perf_counter() - start
        print(done.stdout)
        wrong = []
        for key, ok in expected.items():
            report = json.loads((base / "out" / key / "results.json").read_text())
            full = report["score"] == report["max_score"]
            if full != ok:
                wrong.append(key)
        print(f"graded {len(paths)} submissions of exercise 04 in {seconds:.1f} s "
              f"({seconds / len(paths):.1f} s per submission; --timeout {args.timeout:g} --jobs {args.jobs}); "
              f"goal: at most 300 s on 2 cores: {'met' if seconds <= 300 else 'NOT met'}")
        print(f"{sum(expected.values())} correct submissions, {len(expected) - sum(expected.values())} wrong; "
              f"scored as expected: {len(expected) - len(wrong)}/{len(expected)}"
              + (f" (unexpected: {', '.join(wrong)})" if wrong else ""))
        return 0 if done.returncode == 0 and not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
