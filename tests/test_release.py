"""`dpcourse release`: exercises generated from solutions, never drifting, never overwriting a learner's work."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dpcourse.grading.release import (
    BACKUPS,
    PLACEHOLDER,
    ReleaseError,
    cells_hash,
    main,
    release_notebook,
    strip_solutions,
)

ROOT = Path(__file__).resolve().parent.parent


def _args(solutions: Path, exercises: Path, check: bool = False, force: bool = False) -> argparse.Namespace:
    return argparse.Namespace(solutions=solutions, exercises=exercises, check=check, force=force)


def _solution(folder: Path, name: str, *sources: str, tags=("graded",)) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.cells.append(nbformat.v4.new_markdown_cell("# An exercise\n### BEGIN SOLUTION in prose stays"))
    for source in sources:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = list(tags)
        cell.execution_count = 7
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="the answer is 42\n")]
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
        nb.cells.append(cell)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


SOURCE = """def f(x, y):
    \"\"\"Given to the learner.\"\"\"
    total = 0
    for i in range(x):
        ### BEGIN SOLUTION
        total += i * y
        ### END SOLUTION
    ### BEGIN SOLUTION
    return total
    ### END SOLUTION
"""


def test_regions_become_raise_at_their_indentation_and_the_rest_stays():
    text, regions = strip_solutions(SOURCE, "nb, cell 1")
    assert regions == 2
    assert text.splitlines() == [
        "def f(x, y):", '    """Given to the learner."""', "    total = 0", "    for i in range(x):",
        "        " + PLACEHOLDER, "    " + PLACEHOLDER]
    compile(text, "exercise", "exec")
    assert "total += i * y" not in text and "return total" not in text


@pytest.mark.parametrize("source, words", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "no matching"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "without a"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "inside the region"),
])
def test_unbalanced_markers_are_a_one_line_error_naming_notebook_and_cell(tmp_path, source, words, capsys):
    _solution(tmp_path / "solutions", "04_thing.ipynb", "x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION", source)
    assert main(_args(tmp_path / "solutions", tmp_path / "exercises")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "04_thing.ipynb, cell 3" in err and words in err


def test_a_solution_without_regions_is_an_error(tmp_path):
    path = _solution(tmp_path, "02_x.ipynb", "x = 1", tags=())
    with pytest.raises(ReleaseError, match="02_x.ipynb: no '### BEGIN SOLUTION'"):
        release_notebook(path)
    path = _solution(tmp_path, "03_x.ipynb", "x = 1", "y = 2\n### BEGIN SOLUTION\ny = 3\n### END SOLUTION")
    with pytest.raises(ReleaseError, match=r"03_x.ipynb, cell 2 .*tagged 'graded' but has no"):
        release_notebook(path)


def test_outputs_counts_and_widget_state_are_cleared(tmp_path):
    _solution(tmp_path / "solutions", "05_y.ipynb", SOURCE,
              "print('setup')\n### BEGIN SOLUTION\nz = 1\n### END SOLUTION")
    assert main(_args(tmp_path / "solutions", tmp_path / "exercises")) == 0
    nb = nbformat.read(tmp_path / "exercises" / "05_y.ipynb", as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata and nb.metadata["dpcourse"]["exercise"] == "05"
    assert nb.metadata["dpcourse"]["released"] == cells_hash(nb)  # what release wrote, recorded in the file
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None and "execution" not in c.metadata for c in code)
    assert all(c.metadata["tags"] == ["graded"] for c in code)
    assert nb.cells[0].source.endswith("in prose stays")  # markdown is left alone
    solution = nbformat.read(tmp_path / "solutions" / "05_y.ipynb", as_version=4)
    assert solution.cells[1].outputs, "the solution itself must not change"


def test_check_reports_drift_and_release_fixes_it(tmp_path, capsys):
    sol, ex = tmp_path / "solutions", tmp_path / "exercises"
    _solution(sol, "02_a.ipynb", SOURCE)
    assert main(_args(sol, ex, check=True)) == 1 and "missing" in capsys.readouterr().out
    assert main(_args(sol, ex)) == 0
    assert main(_args(sol, ex, check=True)) == 0
    _solution(sol, "02_a.ipynb", SOURCE.replace("total = 0", "total = 1"))
    assert main(_args(sol, ex, check=True)) == 1
    out = capsys.readouterr().out
    assert "solution changed since the last release" in out and "nobody has edited it" in out
    assert main(_args(sol, ex)) == 0 and "wrote" in capsys.readouterr().out  # nobody's work in it: no copy needed
    assert not (ex / BACKUPS).exists()
    assert main(_args(sol, ex, check=True)) == 0


def test_writes_only_into_the_exercises_folder(tmp_path, capsys):
    sol, ex = tmp_path / "solutions", tmp_path / "exercises"
    _solution(sol, "02_a.ipynb", SOURCE)
    ex.mkdir()
    (ex / "my_notes.ipynb").write_text("a learner's own notebook")
    (ex / "02_a.ipynb.bak").write_text("a learner's backup")
    before = {p.name: p.read_bytes() for p in sol.iterdir()}
    assert main(_args(sol, ex)) == 0
    assert (ex / "my_notes.ipynb").read_text() == "a learner's own notebook"
    assert (ex / "02_a.ipynb.bak").read_text() == "a learner's backup"
    assert {p.name: p.read_bytes() for p in sol.iterdir()} == before
    assert main(_args(sol, sol)) == 2
    assert "same folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in sol.iterdir()} == before


def test_cli_without_solutions_folder_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dpcourse.cli", "release", "--solutions", str(tmp_path / "nope"),
                           "--exercises", str(tmp_path / "ex")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "no solutions folder" in done.stderr
    assert not (tmp_path / "ex").exists()


SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.skipif(not SOLUTIONS, reason="no solution notebooks yet")
def test_committed_exercises_equal_what_release_produces(capsys):
    status = main(_args(ROOT / "solutions", ROOT / "exercises", check=True))
    assert status == 0, capsys.readouterr().out + "\nrun: dpcourse release"


@pytest.mark.skipif(not SOLUTIONS, reason="no solution notebooks yet")
def test_every_solution_has_graded_regions_and_its_exercise_has_none():
    for path in SOLUTIONS:
        exercise = release_notebook(path)
        text = nbformat.writes(exercise)
        assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text, path.name
        assert PLACEHOLDER.split("(")[0] in text, path.name


# --------------------------------------------------------------------------- a learner's work is never lost

def _edit(path: Path, new_source: str, run: bool = False) -> bytes:
    """What a learner does: write code into the graded cell (and maybe run it); return the file's bytes."""
    nb = nbformat.read(path, as_version=4)
    graded = next(c for c in nb.cells if "graded" in c.metadata.get("tags", []))
    graded.source = new_source
    if run:
        graded.execution_count = 1
        graded.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    nbformat.write(nb, path)
    return path.read_bytes()


def _released(tmp_path: Path) -> tuple[Path, Path, Path]:
    sol, ex = tmp_path / "solutions", tmp_path / "exercises"
    _solution(sol, "04_ring.ipynb", SOURCE)
    assert main(_args(sol, ex)) == 0
    return sol, ex, ex / "04_ring.ipynb"


def test_an_edited_exercise_is_kept_while_its_solution_is_unchanged(tmp_path, capsys):
    sol, ex, target = _released(tmp_path)
    mine = _edit(target, "def f(x, y):\n    return x * y  # my own answer\n")
    assert main(_args(sol, ex)) == 0
    out = capsys.readouterr().out
    assert target.read_bytes() == mine and "kept" in out and "a learner has edited it" in out
    assert main(_args(sol, ex, check=True)) == 1
    out = capsys.readouterr().out
    assert "a learner has edited it; the solution is unchanged" in out and "solution changed" not in out


def test_a_changed_solution_never_replaces_an_edited_exercise_without_force(tmp_path, capsys):
    sol, ex, target = _released(tmp_path)
    mine = _edit(target, "def f(x, y):\n    return x * y  # my own answer\n")
    _solution(sol, "04_ring.ipynb", SOURCE.replace("total = 0", "total = 0  # a clearer start"))
    capsys.readouterr()
    assert main(_args(sol, ex, check=True)) == 1
    assert "a learner has edited it, and the solution changed since the last release" in capsys.readouterr().out
    assert main(_args(sol, ex)) == 1
    out = capsys.readouterr().out
    assert target.read_bytes() == mine
    assert "not replaced" in out and "--force" in out and "wrote" not in out and "run dpcourse release" not in out
    assert not (ex / BACKUPS).exists()

    assert main(_args(sol, ex, force=True)) == 0  # told to: the learner's file is copied first
    out = capsys.readouterr().out
    copies = sorted((ex / BACKUPS).iterdir())
    assert len(copies) == 1 and copies[0].read_bytes() == mine and str(copies[0]) in out
    assert copies[0].name.startswith("04_ring.") and copies[0].suffix == ".ipynb"
    assert "# a clearer start" in target.read_text() and main(_args(sol, ex, check=True)) == 0

    again = _edit(target, "def f(x, y):\n    return 0  # second try\n")
    assert main(_args(sol, ex, force=True)) == 0  # a second copy never overwrites the first
    copies = sorted((ex / BACKUPS).iterdir())
    assert len(copies) == 2 and {c.read_bytes() for c in copies} == {mine, again}


def test_outputs_of_a_run_count_as_the_learners_too(tmp_path, capsys):
    sol, ex, target = _released(tmp_path)
    graded = next(c for c in nbformat.read(target, as_version=4).cells if "graded" in c.metadata.get("tags", []))
    ran = _edit(target, graded.source, run=True)  # same code, run: outputs and a count
    assert main(_args(sol, ex)) == 0 and target.read_bytes() == ran
    _solution(sol, "04_ring.ipynb", SOURCE.replace("total = 0", "total = 0  # changed"))
    capsys.readouterr()
    assert main(_args(sol, ex, check=True)) == 1
    assert "outputs from a run (code as released), and the solution changed" in capsys.readouterr().out
    assert main(_args(sol, ex)) == 1 and target.read_bytes() == ran


def test_an_exercise_from_before_release_records_is_judged_by_its_code(tmp_path, capsys):
    sol, ex, target = _released(tmp_path)
    nb = nbformat.read(target, as_version=4)
    del nb.metadata["dpcourse"]["released"]  # as written by an older release
    nbformat.write(nb, target)
    assert main(_args(sol, ex)) == 0 and "wrote" in capsys.readouterr().out  # same code as now: safe to record
    assert "released" in nbformat.read(target, as_version=4).metadata["dpcourse"]

    nb = nbformat.read(target, as_version=4)
    del nb.metadata["dpcourse"]["released"]
    nbformat.write(nb, target)
    mine = _edit(target, "def f(x, y):\n    return 1\n")
    assert main(_args(sol, ex)) == 1 and target.read_bytes() == mine  # can't tell whose: keep it
    assert "--force" in capsys.readouterr().out
    assert main(_args(sol, ex, check=True)) == 1 and "edited, or released before" in capsys.readouterr().out


def test_an_exercise_that_is_no_notebook_any_more_is_kept(tmp_path, capsys):
    sol, ex, target = _released(tmp_path)
    target.write_text('{"cells": [ half a notebook')
    assert main(_args(sol, ex)) == 1 and target.read_text() == '{"cells": [ half a notebook'
    assert main(_args(sol, ex, force=True)) == 0
    assert [c.read_text() for c in (ex / BACKUPS).iterdir()] == ['{"cells": [ half a notebook']


@pytest.mark.slow
def test_a_learners_edit_survives_every_command(tmp_path):
    """A copy of the course with a learner's answer in exercise 02; each command must leave those bytes."""
    course = tmp_path / "course"
    for folder in ("solutions", "exercises"):
        shutil.copytree(ROOT / folder, course / folder)
    (course / "lessons").mkdir()
    shutil.copy(ROOT / "lessons" / "00_setup.ipynb", course / "lessons")
    (course / "tools" / "nbsrc" / "lessons").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "nb.py", course / "tools")
    shutil.copy(ROOT / "tools" / "nbsrc" / "lessons" / "index.py", course / "tools" / "nbsrc" / "lessons")
    exercise = course / "exercises" / "02_minibatch_math.ipynb"
    solved = nbformat.read(ROOT / "solutions" / exercise.name, as_version=4)
    answer = next(c.source for c in solved.cells if "graded" in c.metadata.get("tags", []))
    mine = _edit(exercise, "# my answer, typed in the lab\n" + answer, run=True)

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=600, cwd=course)

    done = run("-m", "dpcourse.cli", "release")
    assert done.returncode == 0 and "kept" in done.stdout, done.stdout + done.stderr
    assert exercise.read_bytes() == mine
    done = run("-m", "dpcourse.cli", "release", "--check")
    assert done.returncode == 1 and "a learner has edited it" in done.stdout and exercise.read_bytes() == mine

    solution = course / "solutions" / exercise.name  # the instructor improves the solution's prose
    nb = nbformat.read(solution, as_version=4)
    nb.cells[0].source += "\n\nOne more sentence."
    nbformat.write(nb, solution)
    done = run("-m", "dpcourse.cli", "release")
    assert done.returncode == 1 and "not replaced" in done.stdout and exercise.read_bytes() == mine
    done = run("-m", "dpcourse.cli", "release", "--check")
    assert "a learner has edited it, and the solution changed" in done.stdout and exercise.read_bytes() == mine

    done = run("-m", "dpcourse.cli", "grade", str(exercise), "--out", str(tmp_path / "grades"), "--timeout", "60")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "grades" / exercise.stem / "results.json").read_text())
    assert report["score"] == report["max_score"] > 0 and exercise.read_bytes() == mine

    check = ("import json, time\nfrom dpcourse.grading import check\nnb = json.load(open(%r))\n"
             "for c in nb['cells']:  # the notebook's cells up to the learner's, then its check() cell\n"
             "    if c['cell_type'] == 'code':\n"
             "        exec(''.join(c['source']))\n"
             "        if 'graded' in c['metadata'].get('tags', []):\n"
             "            break\n"
             "t = time.monotonic()\n"
             "print(bool(check('02', accumulate_gradients)), f'check: {time.monotonic() - t:.1f} s')") % str(exercise)
    done = run("-c", check)
    assert done.returncode == 0 and "True check:" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert exercise.read_bytes() == mine

    done = run("tools/nb.py", "build", "tools/nbsrc/lessons/index.py", "lessons/index.ipynb")
    assert done.returncode == 0, done.stderr[-2000:]
    assert exercise.read_bytes() == mine

    done = run("-m", "dpcourse.cli", "release", "--force")  # told to: the learner's work is copied first
    assert done.returncode == 0
    copies = list((course / "exercises" / BACKUPS).iterdir())
    assert [c.read_bytes() for c in copies] == [mine] and "One more sentence." in exercise.read_text()


def test_an_exercise_opened_and_saved_without_edits_is_still_current(tmp_path, capsys):
    sol, ex, target = _released(tmp_path)
    nb = nbformat.read(target, as_version=4)
    nb.metadata["language_info"] = {"name": "python", "version": "3.12.1"}  # what Jupyter adds on save
    nbformat.write(nb, target, version=4)
    target.write_text(json.dumps(json.loads(target.read_text()), indent=2))  # and another layout
    saved = target.read_bytes()
    assert main(_args(sol, ex, check=True)) == 0
    assert main(_args(sol, ex)) == 0 and "unchanged" in capsys.readouterr().out and target.read_bytes() == saved
