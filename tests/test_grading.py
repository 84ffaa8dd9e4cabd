"""The autograder: planted submissions (honest, wrong, adversarial) graded with `dpcourse grade`.

Each file in tests/planted/ is the graded cell of a submission; its header says which exercise it
is for and what must happen (``# expect: full`` or ``# expect: name of a test that must fail; ...``).
Files with ``# hangs: yes`` deadlock or loop forever and are graded in a separate call with a short
timeout. A wrong variant of a correct submission is a unified diff, ``NN_bug.diff``, against a frozen
copy beside it (``--- NN_good.py``; tests/planted_sources.py applies it with GNU patch, no fuzz), with
its header in the diff's preamble: it shows only what it gets wrong, and no planted file reads the
live library. No test may leave a process behind.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from planted_sources import PLANTED, apply_diff, base_of, planted_files, planted_source
from planted_sources import header as _header
from processes import children

ROOT = Path(__file__).resolve().parent.parent
PRELUDE = "import os\nimport sys\nimport torch\nimport torch.distributed as dist\nfrom torch import nn"

pytestmark = [pytest.mark.usefixtures("no_leftover_processes")]


def _notebook(source: str, graded: bool = True) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(PRELUDE))
    cell = nbformat.v4.new_code_cell(source)
    if graded:
        cell.metadata["tags"] = ["graded"]
    nb.cells.append(cell)
    nb.cells.append(nbformat.v4.new_code_cell("print('a check the learner ran')"))
    return nb


def _planted(hangs: bool) -> list[Path]:
    from dpcourse.grading.isolate import available

    files = planted_files()
    sandboxed = not available()  # files that only the sandbox can stop (``# sandbox: ...``) need one
    return [p for p in files
            if (_header(p).get("hangs") == "yes") == hangs and (sandboxed or not _header(p).get("sandbox"))]


def _grade(paths: list[Path], out: Path, *extra: str,
           timeout: float = 1500) -> tuple[subprocess.CompletedProcess, dict]:
    cmd = [sys.executable, "-m", "dpcourse.cli", "grade", *map(str, paths), "--out", str(out), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=out.parent)
    reports = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/results.json")}
    return done, reports


def _materialise(files: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in files:
        target = folder / f"{f.stem}.ipynb"
        if f.suffix == ".ipynb":
            target.write_bytes(f.read_bytes())
        else:  # a few adversarial files aim at the class's folder: they are told where it is
            source = planted_source(f).replace("@SUBMISSIONS@", str(folder)).replace("@PLANTED@", str(PLANTED))
            nbformat.write(_notebook(source), target)
        paths.append(target)
    return paths


def _check_expectations(files: list[Path], reports: dict) -> None:
    for f in files:
        expect = _header(f).get("expect", "")
        report = reports[f.stem]
        scores = {t["name"]: t for t in report["tests"]}
        assert report["max_score"] > 0, f.name
        if expect == "full":
            failed = {n: t["output"][:300] for n, t in scores.items() if t["score"] < t["max_score"]}
            assert report["score"] == report["max_score"], f"{f.name}: {failed}"
            continue
        assert report["score"] < report["max_score"], f"{f.name} scored full marks"
        for name in filter(None, (n.strip() for n in expect.split(";"))):
            assert name in scores, f"{f.name}: no test named {name!r}"
            assert scores[name]["score"] == 0, f"{f.name}: {name!r} passed"
            assert scores[name]["output"].strip() and scores[name]["output"] != "passed", f.name


def test_every_exercise_has_three_planted_wrong_submissions_and_a_good_one():
    from dpcourse.grading.framework import exercise_ids

    files = _planted(hangs=False) + _planted(hangs=True)
    for ex in exercise_ids():
        mine = [f for f in files if _header(f).get("exercise") == ex]
        wrong = [f.name for f in mine if _header(f).get("expect") != "full"]
        assert len(wrong) >= 3, f"exercise {ex}: only {wrong} planted wrong"
        assert any(_header(f).get("expect") == "full" for f in mine), f"exercise {ex}: no planted correct submission"


def test_every_planted_diff_applies_exactly_to_a_frozen_base_in_the_planted_folder():
    """A wrong variant is its base plus its bug: the hunks apply with no fuzz and no offset, to a whole submission
    kept in tests/planted/ (never a library file, so refactoring the library cannot break these tests)."""
    diffs = sorted(PLANTED.glob("*.diff"))
    assert len(diffs) >= 30
    for diff in diffs:
        base = base_of(diff)
        assert base.parent == PLANTED and base.suffix == ".py", diff.name
        assert f"\n+++ {diff.stem}.py\n" in diff.read_text(), f"{diff.name}: its +++ line names another file"
        head = _header(diff)
        assert head.get("exercise") == _header(base).get("exercise") and head.get("expect"), diff.name
        assert _header(base).get("expect") == "full", f"{diff.name}: its base {base.name} is not a correct submission"
        preamble = diff.read_text().split("\n--- ", 1)[0]
        assert re.search(r"^# (Wrong|Forgery)\b", preamble, re.M), f"{diff.name}: no comment saying what the bug is"
        dry_run = ["patch", "--fuzz=0", "--force", "--dry-run", "-o", os.devnull, str(base), "-i", str(diff)]
        done = subprocess.run(dry_run, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not re.search(r"offset|fuzz|FAILED", done.stdout), (diff.name, done.stdout)
        assert apply_diff(diff) != base.read_text(), f"{diff.name} changes nothing"
    for f in planted_files():
        assert "base" not in _header(f), f"{f.name}: the old '# base:' patch format"


def test_a_planted_diff_that_does_not_apply_fails_in_one_line_naming_it(tmp_path):
    base = tmp_path / "04_good_two_loops.py"
    base.write_text((PLANTED / base.name).read_text().replace("    return tensor\n", "    return tensor  # edited\n"))
    diff = tmp_path / "04_averages.diff"
    diff.write_text((PLANTED / diff.name).read_text())
    with pytest.raises(ValueError) as err:
        planted_source(diff)
    message = str(err.value)
    assert message.startswith("04_averages.diff does not apply to 04_good_two_loops.py") and "\n" not in message
    assert "FAILED" in message and str(tmp_path) not in message
    diff.write_text(diff.read_text().replace("--- 04_good_two_loops.py", "--- ../../dpcourse/allreduce.py"))
    with pytest.raises(ValueError, match="must be a file in tests/planted/ itself"):
        planted_source(diff)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every planted submission that terminates, in one `dpcourse grade` call."""
    base = tmp_path_factory.mktemp("planted")
    files = _planted(hangs=False)
    paths = _materialise(files, base / "submissions")
    (base / "submissions" / "untouched.sha").write_text("")
    before = {p: p.read_bytes() for p in paths}
    start = time.monotonic()
    done, reports = _grade(paths, base / "out", "--timeout", "60", "--jobs", "3")
    return {"files": files, "paths": paths, "before": before, "done": done, "reports": reports, "out": base / "out",
            "seconds": time.monotonic() - start}


def test_grading_runs_and_exits_zero(graded):
    done = graded["done"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "grading [" in done.stderr  # the progress bar
    assert set(graded["reports"]) == {f.stem for f in graded["files"]}


def test_planted_submissions_score_as_expected(graded):
    _check_expectations(graded["files"], graded["reports"])


def test_reports_are_gradescope_shaped_and_csv_matches(graded):
    rows = {r["submission"]: r for r in csv.DictReader(open(graded["out"] / "grades.csv"))}
    for key, report in graded["reports"].items():
        assert set(report) >= {"score", "max_score", "tests"}
        assert report["score"] == sum(t["score"] for t in report["tests"])
        for t in report["tests"]:
            assert set(t) == {"name", "score", "max_score", "output", "visibility"}
            assert t["visibility"] in ("visible", "after_published")
        assert float(rows[key]["score"]) == report["score"]
        assert float(rows[key]["max_score"]) == report["max_score"]


def test_cannot_be_fooled(graded):
    reports, out = graded["reports"], graded["out"]
    fake = reports["04_adv_fake_results"]
    assert fake["score"] <= 1 and not any(t["score"] > t["max_score"] for t in fake["tests"])
    rows = list(csv.DictReader(open(out / "grades.csv")))
    assert all(float(r["score"]) <= float(r["max_score"]) for r in rows)
    assert reports["04_adv_monkeypatch"]["score"] == 0
    for key in ("04_imports_reference", "04_adv_sneaky_reference"):
        text = " ".join(t["output"] for t in reports[key]["tests"])
        assert "reference" in text and reports[key]["score"] == 0, key
    assert "send/recv" in reports["04_uses_all_reduce"]["tests"][0]["output"]


def test_adversarial_messages_are_clear(graded):
    r = graded["reports"]
    first = {k: v["tests"][0]["output"] for k, v in r.items()}
    assert "not a valid notebook" in first["04_adv_invalid_json"]
    assert "SyntaxError" in first["04_adv_syntax_error"] and "line" in first["04_adv_syntax_error"]
    assert "does not define `ring_all_reduce`" in first["04_adv_missing_function"]
    assert "sys.exit" in first["04_adv_sys_exit"]
    assert "ended before reporting a result" in first["04_adv_os_exit"]
    assert "kill" in first["04_adv_kill_parent"]
    assert "memory" in first["04_adv_memory_hog"]
    assert "output cut" in first["04_adv_print_flood"] and len(first["04_adv_print_flood"]) < 50_000


def test_submissions_are_not_modified(graded):
    for path, data in graded["before"].items():
        assert path.read_bytes() == data, path.name
    folder = graded["paths"][0].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted([p.name for p in graded["paths"]] + ["untouched.sha"])


def test_hanging_submissions_end_at_their_timeout(tmp_path):
    files = _planted(hangs=True)
    paths = _materialise(files, tmp_path / "submissions")
    start = time.monotonic()
    done, reports = _grade(paths, tmp_path / "out", "--timeout", "4", "--jobs", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    tests = sum(len(r["tests"]) for r in reports.values())
    assert time.monotonic() - start < 4 * tests + 60
    _check_expectations(files, reports)
    text = " ".join(t["output"] for r in reports.values() for t in r["tests"])
    assert "deadlock" in text


def test_missing_tags_fall_back_to_the_cells_defining_the_names(tmp_path):
    source = (PLANTED / "02_good.py").read_text()
    nb = _notebook(source, graded=False)
    nb.cells.insert(1, nbformat.v4.new_code_cell("big = launch_an_experiment()  # never run by the grader"))
    nbformat.write(nb, tmp_path / "student.ipynb")  # no NN_ in the name: the exercise is found by its names
    done, reports = _grade([tmp_path / "student.ipynb"], tmp_path / "out", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert reports["student"]["score"] == reports["student"]["max_score"]


def test_grader_errors_are_one_line_and_nonzero(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    done = subprocess.run([sys.executable, "-m", "dpcourse.cli", "grade", "x.ipynb", "--out", str(blocked / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "cannot write" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([sys.executable, "-m", "dpcourse.cli", "grade", "x.ipynb", "--timeout", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--timeout" in done.stderr


def test_missing_submission_file_costs_its_points_only(tmp_path):
    good = _materialise([PLANTED / "02_good.py"], tmp_path / "s")
    done, reports = _grade([tmp_path / "s" / "02_nothing_here.ipynb", *good], tmp_path / "out", "--timeout", "60")
    assert done.returncode == 0
    nothing = reports["02_nothing_here"]
    assert nothing["score"] == 0 and "cannot read" in nothing["tests"][0]["output"]
    assert reports["02_good"]["score"] == reports["02_good"]["max_score"]


# --------------------------------------------------------------------------- the real notebooks

SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.skipif(not SOLUTIONS, reason="no solution notebooks yet")
def test_solutions_score_full_marks_and_exercises_zero(tmp_path):
    from dpcourse.grading.framework import exercise_ids

    solutions = [p for p in SOLUTIONS if p.name[:2] in exercise_ids()]
    exercises = [ROOT / "exercises" / p.name for p in solutions if (ROOT / "exercises" / p.name).exists()]
    done, reports = _grade(solutions + exercises, tmp_path / "out", "--timeout", "60", "--jobs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    for p in solutions:
        r = reports[f"solutions_{p.stem}"]  # files from two folders: each key keeps its folder's name
        failed = [(t["name"], t["output"][:300]) for t in r["tests"] if t["score"] < t["max_score"]]
        assert r["score"] == r["max_score"] > 0, f"{p.name}: {failed}"
    for p in exercises:
        r = reports[f"exercises_{p.stem}"]
        assert r["score"] == 0, p.name
        assert all("NotImplementedError" in t["output"] for t in r["tests"]), p.name


# --------------------------------------------------------------------------- check() in a notebook

def test_check_prints_one_line_per_test_and_returns_counts(tmp_path):
    script = textwrap.dedent('''
        import torch
        import torch.distributed as dist
        from dpcourse.grading import check
        from dpcourse.grading.framework import get_suite
        VISIBLE = sum(t.visible for t in get_suite("04", hidden=False).tests)
        exec(open(%r).read())
        result = check("04", ring_all_reduce)
        assert result.passed == result.total == VISIBLE and result.all_passed, result

        def ring_all_reduce(tensor):
            raise NotImplementedError("your code here")
        result = check("04")  # found by name in the caller's namespace
        assert result.passed == 0 and result.total == VISIBLE

        def ring_all_reduce(tensor):
            if dist.get_rank() == 0 and dist.get_world_size() > 1:
                while True:
                    pass
            return tensor
        result = check("04", ring_all_reduce, timeout=4)
        assert result.passed == 1, result   # only the world-size-1 test can pass

        for bad in [lambda: check("99", ring_all_reduce), lambda: check("04", 42),
                    lambda: check(4, ring_all_reduce)]:
            try:
                bad()
            except (ValueError, TypeError) as exc:
                print("usage error:", exc)
            else:
                raise AssertionError("no usage error")
        print("DONE")
    ''') % str(PLANTED / "04_good.py")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    from dpcourse.grading.framework import get_suite

    visible = sum(t.visible for t in get_suite("04", hidden=False).tests)
    assert out.count("\u2713") >= visible + 1 and f"all {visible} visible checks passed" in out
    assert "not written yet (NotImplementedError)" in out and "Traceback" not in out
    assert "timed out" in out or "stopped after" in out
    assert out.count("usage error:") == 3 and out.rstrip().endswith("DONE")


def test_learner_code_never_runs_in_the_graders_process(tmp_path):
    """The grader's own interpreter is untouched by what a submission does at import time."""
    from dpcourse.grading.grade import grade

    marker = tmp_path / "ran-in-grader"
    source = f"import os\nif os.getpid() == {os.getpid()}:\n    open({str(marker)!r}, 'w').close()\n" \
             "import torch\ntorch.allclose = None\n" + (PLANTED / "02_good.py").read_text()
    nbformat.write(_notebook(source), tmp_path / "02_x.ipynb")
    import torch

    reports = grade([tmp_path / "02_x.ipynb"], timeout=60, progress=False)
    assert reports[0].score == reports[0].max_score
    assert not marker.exists() and torch.allclose is not None
    assert not children()


def test_only_code_counts_as_using_a_reference_not_comments_or_docstrings():
    from dpcourse.grading.extract import references_used

    refs = ("dpcourse.allreduce", "torch.nn.parallel")
    mentions = '"""Shaped like torch.nn.parallel.DistributedDataParallel."""\n# not dpcourse.allreduce\nx = 1\n'
    assert references_used(mentions, refs) == []
    parallel = ["torch.nn.parallel"]
    assert references_used("from torch.nn.parallel import DistributedDataParallel as D\n", refs) == parallel
    assert references_used("import torch\nD = torch . nn . parallel . DistributedDataParallel\n", refs) == parallel
    assert references_used("from dpcourse import allreduce\n", refs) == ["dpcourse.allreduce"]


def test_the_visible_checks_catch_every_planted_bug(graded):
    """What check() shows a learner must already catch each common bug, not only the hidden grading tests.

    A planted file opts out with a ``# visible: no (why)`` header line (e.g. copying the course's code,
    which only the grader looks for); adversarial files are about the grader, not about check().
    """
    for f in graded["files"]:
        header = _header(f)
        if header.get("expect") == "full" or "_adv_" in f.name or header.get("visible", "").startswith("no"):
            continue
        visible = [t for t in graded["reports"][f.stem]["tests"] if t["visibility"] == "visible"]
        assert visible, f"{f.name}: exercise {header.get('exercise')} has no visible tests"
        assert any(t["score"] < t["max_score"] for t in visible), (
            f"{f.name}: every visible check passes; only hidden tests catch this bug. Make a test that "
            "catches it visible in dpcourse/grading/suites/")


def test_debugging_lab_grades_diagnosis_and_fix_apart(graded):
    """Exercise 11: a wrong diagnosis costs only diagnosis points, a wrong fix only fix points; each says why."""
    tests = {k: {t["name"]: t for t in graded["reports"][k]["tests"]}
             for k in ("11_right_fix_wrong_diagnosis", "11_wrong_fix_right_diagnosis")}
    diagnosis, fix = tests["11_right_fix_wrong_diagnosis"], tests["11_wrong_fix_right_diagnosis"]
    assert all(t["score"] == t["max_score"] for name, t in diagnosis.items() if ": the fix " in name)
    assert all(t["score"] == t["max_score"] for name, t in fix.items() if "diagnosis" in name)
    hang = diagnosis["hang: the diagnosis names the rank(s) and the operation and its sequence number"]["output"]
    assert "the flight recorder counts from 1" in hang
    assert "averaging bug" in diagnosis["averaging: the diagnosis names the family"]["output"]
    fixes = {name.split(":")[0]: t["output"] for name, t in fix.items() if ": the fix " in name and t["score"] == 0}
    assert set(fixes) == {"hang", "averaging", "data order"}
    assert "SIGABRT" in fixes["hang"] and "vs one process on the global batch" in fixes["averaging"]


def test_forgeries_escapes_and_common_bugs_are_named(graded):
    """Issue 16 and 13: each route to another collective and each way out of the sandbox scores below full
    marks with the route named (``# route:``, ``# sandbox:``); each common wrong pattern gets its diagnosis
    (``# names:``)."""
    words = {"read": "read ", "write": "wrote to", "network": "network connection", "signal": "tried to kill"}
    for f in graded["files"]:
        header, report = _header(f), graded["reports"][f.stem]
        text = "\n".join(t["output"] for t in report["tests"])
        if header.get("route"):
            assert report["score"] < report["max_score"], f.name
            route = header["route"]
            assert f"used {route} instead of send/recv" in text or route in text, (f.name, text[:500])
        if header.get("sandbox"):
            assert "stopped by the sandbox" in text and words[header["sandbox"]] in text, (f.name, text[:500])
        for name in filter(None, (n.strip() for n in header.get("names", "").split(";"))):
            assert f"{name}:" in text, (f.name, name, text[:800])


def test_exercise_10_wrong_submissions_are_named(graded):
    """Each planted bug of the compression hook gets a message that says what it is."""
    reports = graded["reports"]
    said = {key: " ".join(t["output"] for t in reports[key]["tests"]) for key in reports if key.startswith("10_")}
    assert "no error feedback" in said["10_no_error_feedback"]
    assert "residual is applied twice" in said["10_residual_twice"]
    assert "ITS OWN top-k indices" in said["10_own_indices"]
    assert "at least as much as DDP's uncompressed all-reduce" in said["10_sends_dense"]
    assert reports["10_good"]["score"] == reports["10_good"]["max_score"]
