"""`dpcourse release`: exercises generated from solutions, never drifting, never overwriting a learner's work."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dpcourse.grading.release import PLACEHOLDER, ReleaseError, main, release_notebook, strip_solutions

ROOT = Path(__file__).resolve().parent.parent


def _args(solutions: Path, exercises: Path, check: bool = False) -> argparse.Namespace:
    return argparse.Namespace(solutions=solutions, exercises=exercises, check=check)


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
    _solution(tmp_path / "solutions", "05_y.ipynb", SOURCE, "print('setup')\n### BEGIN SOLUTION\nz = 1\n### END SOLUTION")
    assert main(_args(tmp_path / "solutions", tmp_path / "exercises")) == 0
    nb = nbformat.read(tmp_path / "exercises" / "05_y.ipynb", as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata and nb.metadata["dpcourse"] == {"exercise": "05"}
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
    assert main(_args(sol, ex, check=True)) == 1 and "stale" in capsys.readouterr().out


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
