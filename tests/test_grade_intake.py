"""The grader reads submissions as they really arrive: named by a platform, in a folder per student,
broken, without their graded cell, or hanging; and says in every report what it found and why.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from planted_sources import PLANTED, planted_source

from dpcourse.grading.extract import exercise_from_name, exercise_from_text, read_submission
from dpcourse.grading.framework import exercise_ids, get_suite
from dpcourse.grading.grade import Report, collect, own_frames, report_keys, stated_limit, table

ROOT = Path(__file__).resolve().parent.parent
KNOWN = tuple(exercise_ids())


@pytest.mark.parametrize("name, exercise", [
    ("04_allreduce.ipynb", "04"),
    ("grace_04_allreduce.ipynb", "04"),             # a prefix
    ("04_allreduce-grace.ipynb", "04"),             # a suffix
    ("grace_12345_67890_04_allreduce.ipynb", "04"),  # Canvas: name, user id, file id, then the upload's name
    ("04_allreduce (1).ipynb", "04"),               # a browser's second download
    ("2026_02_accumulation.ipynb", "02"),                # a year is not an exercise
    ("grace_03_attempt_02.ipynb", "03"),                 # of two ids, the one written NN_name
    ("Alice Smith_123456_assignsubmission_file_/02_x.ipynb", "02"),  # Moodle: a folder per student
    ("04_allreduce/attempt.ipynb", "04"),           # a folder per exercise: its name tells
    ("ring.ipynb", None),
    ("99_not_an_exercise.ipynb", None),
])
def test_the_exercise_in_a_name_whatever_a_platform_added(name, exercise):
    assert exercise_from_name(Path("class") / name, KNOWN) == exercise


def test_a_broken_notebook_still_tells_its_exercise_from_its_text():
    cut = '{"cells": [{"cell_type": "code", "source": "check(\\"04\\", ring_all_reduce)'
    assert exercise_from_text(cut, KNOWN) == ("04", "check() call")
    meta = '{"metadata": {"dpcourse": {"exercise": "05", "released": "sha256:0"}}, "cells": [ {'
    assert exercise_from_text(meta, KNOWN) == ("05", "metadata")
    names = '{"cells": [{"source": "def ring_all_reduce(t):\\n    return t"'
    assert exercise_from_text(names, KNOWN, lambda ex: get_suite(ex).names) == ("04", "names")
    assert exercise_from_text("{", KNOWN) == (None, "")


def _nb(path: Path, *sources: str, metadata: dict | None = None, graded: bool = True) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(metadata or {})
    for source in sources:
        cell = nbformat.v4.new_code_cell(source)
        if graded and "def " in source:
            cell.metadata["tags"] = ["graded"]
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _read(path: Path):
    return read_submission(path, lambda ex: get_suite(ex).names, lambda ex: get_suite(ex).reference_modules,
                           guess=None, known=KNOWN)


def test_the_notebook_itself_beats_its_file_name(tmp_path):
    code = "def ring_all_reduce(t):\n    return t"
    sub = _read(_nb(tmp_path / "02_wrongly_named.ipynb", code, metadata={"dpcourse": {"exercise": "04"}}))
    assert (sub.exercise, sub.found_by) == ("04", "metadata")
    sub = _read(_nb(tmp_path / "02_wrongly_named_too.ipynb", code, 'check("04", ring_all_reduce)'))
    assert (sub.exercise, sub.found_by) == ("04", "check() call")
    sub = _read(_nb(tmp_path / "grace_04_x.ipynb", code))
    assert (sub.exercise, sub.found_by) == ("04", "file name")


def test_keys_keep_each_students_folder(tmp_path):
    same = [tmp_path / "class" / who / "04_allreduce.ipynb" for who in ("alice", "bob")]
    assert report_keys([(p, None) for p in same]) == ["alice_04_allreduce", "bob_04_allreduce"]
    # a folder argument: the student's folder stays even when no names clash
    mixed = [tmp_path / "class" / "alice" / "04_ring.ipynb", tmp_path / "class" / "bob" / "05_ddp.ipynb"]
    assert report_keys([(p, tmp_path / "class") for p in mixed]) == ["alice_04_ring", "bob_05_ddp"]
    moodle = tmp_path / "class" / "Grace Hopper_123456_assignsubmission_file_" / "ring.ipynb"
    assert report_keys([(moodle, tmp_path / "class")]) == ["Grace Hopper_123456_ring"]
    # files given one by one from one folder: their names are enough
    flat = [tmp_path / "s" / "a.ipynb", tmp_path / "s" / "b.ipynb"]
    assert report_keys([(p, None) for p in flat]) == ["a", "b"]
    # deeper clashes take more folders; the same file twice gets a number
    deep = [tmp_path / "x" / "alice" / "n.ipynb", tmp_path / "y" / "alice" / "n.ipynb"]
    assert report_keys([(p, None) for p in deep]) == ["x_alice_n", "y_alice_n"]
    assert report_keys([(flat[0], None), (flat[0], None)]) == ["a", "a_2"]


def test_folders_are_searched_for_notebooks(tmp_path, capsys):
    for rel in ("alice/04_ring.ipynb", "bob/sub/04_ring.ipynb", "bob/.ipynb_checkpoints/04_ring-checkpoint.ipynb",
                "bob/notes.txt", "__MACOSX/alice/._04_ring.ipynb"):
        (tmp_path / "class" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "class" / rel).write_text("{}")
    (tmp_path / "empty").mkdir()
    found = collect([tmp_path / "class", tmp_path / "empty", tmp_path / "one.ipynb"])
    assert [(p.relative_to(tmp_path).as_posix(), b) for p, b in found] == [
        ("class/alice/04_ring.ipynb", tmp_path / "class"), ("class/bob/sub/04_ring.ipynb", tmp_path / "class"),
        ("one.ipynb", None)]
    assert "no .ipynb notebook in" in capsys.readouterr().err


def test_the_table_wraps_a_message_and_never_cuts_it():
    from dpcourse.grading.verdict import Verdict

    suite = get_suite("04")
    message = ("grace_04.ipynb is not a valid notebook (not JSON: Expecting ',' delimiter at line 1): re-download it "
               "from Jupyter (File > Download) and submit it again.")
    r = Report(Path("grace_04.ipynb"), "grace_04", "04", suite, [Verdict(t, False, message) for t in suite.tests],
               problem=message)
    text = table([r], width=80)
    assert " ".join(text.split()).endswith(" ".join(message.split()))
    assert all(len(line) <= 80 for line in text.splitlines())


def test_a_launch_deadline_is_reported_as_the_limit_that_was_set():
    message = "timed out after 14 s: rank(s) [0, 1] still running. Often a deadlock."
    assert stated_limit(message, 20) == ("timed out at the test's time limit of 20 s: rank(s) [0, 1] "
                                         "still running. Often a deadlock.")


def test_only_the_learners_frames_are_left_in_a_traceback():
    tb = ("rank 1 raised IndexError: list index out of range\nTraceback (most recent call last):\n"
          '  File "/x/dpcourse/grading/suites/ex04.py", line 21, in _worker\n    ret = fn(t)\n          ^^^^^\n'
          '  File "<cell 2>", line 9, in ring_all_reduce\n    [][world]\nIndexError: list index out of range')
    assert own_frames(tb).splitlines() == [
        "rank 1 raised IndexError: list index out of range", "Traceback (most recent call last):",
        '  File "<cell 2>", line 9, in ring_all_reduce', "    [][world]", "IndexError: list index out of range"]


def test_check_result_shows_nothing_more_in_a_notebook():
    from IPython.core.formatters import DisplayFormatter

    from dpcourse.grading.check import CheckResult

    result = CheckResult("04", 3, 4, ["x"])
    assert DisplayFormatter().format(result) == ({}, {})  # the summary was printed already
    assert repr(result) == "CheckResult(exercise='04', passed=3, total=4)"


# --------------------------------------------------------------------------- a class, as platforms deliver it

PRELUDE = "import torch\nimport torch.distributed as dist"


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    base = tmp_path_factory.mktemp("intake")
    good, hang = planted_source(PLANTED / "04_good.py"), planted_source(PLANTED / "04_recv_first_deadlock.diff")
    marker = "    base, extra = divmod(flat.numel(), world)\n"
    assert marker in good
    crash = good.replace(marker, marker + "    chunk_sizes = [base] * (world - 1)\n    chunk_sizes[world]\n")
    cls = base / "class"
    _nb(cls / "alice" / "04_allreduce.ipynb", PRELUDE, good)
    _nb(cls / "bob" / "04_allreduce.ipynb", PRELUDE, crash)
    _nb(base / "hangs" / "carol" / "04_allreduce.ipynb", PRELUDE, hang)  # graded apart, with a short limit
    _nb(cls / "dave" / "04_allreduce.ipynb", PRELUDE, "x = 1  # the graded cell was deleted",
        'check("04", ring_all_reduce)', graded=False)
    (cls / "erin").mkdir()
    (cls / "erin" / "grace_02_minibatch_math.ipynb").write_text('{"cells": [ {"cell_type": "code", ')
    (cls / "frank").mkdir()
    (cls / "frank" / "02_minibatch_math-frank.ipynb").write_text("not json at all")
    _nb(cls / "gina" / "gina_12345_67890_02_ring.ipynb", PRELUDE, good, metadata={"dpcourse": {"exercise": "04"}})
    result = {"reports": {}, "rows": {}}
    for folder, limit in ((cls, "60"), (base / "hangs", "6")):  # a generous limit where nothing hangs
        out = base / f"out-{folder.name}"
        cmd = [sys.executable, "-m", "dpcourse.cli", "grade", str(folder), "--out", str(out), "--timeout", limit,
               "--jobs", "3"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=base)
        assert done.returncode == 0, done.stderr[-3000:]
        result["reports"].update({p.parent.name: json.loads(p.read_text()) for p in out.glob("*/results.json")})
        result["rows"].update({r["submission"]: r for r in csv.DictReader(open(out / "grades.csv"))})
        result.setdefault("done", done)  # the class's run
    return result


pytestmark_class = pytest.mark.usefixtures("no_leftover_processes")


@pytestmark_class
def test_every_student_is_graded_under_their_own_name(graded_class):
    done, reports = graded_class["done"], graded_class["reports"]
    assert done.returncode == 0, done.stderr[-3000:]
    students = ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
    assert len(reports) == len(students)
    assert {k.split("_")[0] for k in reports} == set(students)
    assert reports["alice_04_allreduce"]["score"] == reports["alice_04_allreduce"]["max_score"] > 0
    for key in reports:
        assert key in done.stdout or key.startswith("carol"), key  # the table names each one (carol: her own run)


@pytestmark_class
def test_unreadable_files_score_zero_out_of_their_exercises_points(graded_class):
    reports, rows = graded_class["reports"], graded_class["rows"]
    points = get_suite("02").max_score
    for key in ("erin_grace_02_minibatch_math", "frank_02_minibatch_math-frank"):
        r = reports[key]
        assert (r["score"], r["max_score"]) == (0, points), key
        assert "not a valid notebook" in r["output"] and "submit it again" in r["output"]
        assert rows[key]["exercise"] == "02" and "not a valid notebook" in rows[key]["problem"]
        assert "submit it again" in graded_class["done"].stdout  # the table's message is whole


@pytestmark_class
def test_the_notebook_says_which_exercise_it_is(graded_class):
    r = graded_class["reports"]["gina_gina_12345_67890_02_ring"]
    assert r["max_score"] == get_suite("04").max_score and r["score"] == r["max_score"]
    assert "graded as exercise 04 (from the notebook's metadata)" in r["output"] and "suggests 02" in r["output"]
    assert graded_class["rows"]["gina_gina_12345_67890_02_ring"]["exercise"] == "04"


@pytestmark_class
def test_a_deleted_graded_cell_says_how_to_get_it_back(graded_class):
    r = graded_class["reports"]["dave_04_allreduce"]
    assert r["score"] == 0 and r["max_score"] == get_suite("04").max_score
    assert "exercises/04_allreduce.ipynb" in r["output"] and "tagged 'graded'" in r["output"]
    assert "copy" in graded_class["rows"]["dave_04_allreduce"]["problem"]


@pytestmark_class
def test_a_crash_shows_the_learners_frames_and_no_unrelated_hint(graded_class):
    r = graded_class["reports"]["bob_04_allreduce"]
    failed = [t for t in r["tests"] if t["score"] < t["max_score"]]
    assert failed
    for t in failed:
        assert "IndexError" in t["output"] and "<cell 2>" in t["output"], t["output"]
        assert "dpcourse/grading" not in t["output"] and "Hint:" not in t["output"], t["output"]


@pytestmark_class
def test_a_deadlock_reports_the_limit_that_was_set(graded_class):
    r = graded_class["reports"]["carol_04_allreduce"]
    failed = [t["output"] for t in r["tests"] if t["score"] < t["max_score"]]
    assert failed
    for text in failed:
        seconds = re.findall(r"(?:after|limit of) (\d+(?:\.\d+)?) s", text)
        assert seconds and all(float(s) == 6 for s in seconds), text
        assert "Hint:" not in text


def test_no_stored_notebook_shows_a_bare_check_result():
    notebooks = [*ROOT.glob("lessons/*.ipynb"), *ROOT.glob("solutions/*.ipynb"), *ROOT.glob("exercises/*.ipynb")]
    for path in sorted(notebooks):
        for cell in json.loads(path.read_text())["cells"]:
            for output in cell.get("outputs", []):
                text = "".join(output.get("data", {}).get("text/plain", ""))
                assert not text.startswith("CheckResult("), (
                    f"{path.name}: re-run it (check() now displays nothing more)")
