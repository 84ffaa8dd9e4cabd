"""The layout shows the course: a concept is found from file names alone.

Each graded exercise ``NN`` has one stem shared by its lesson, exercise, solution, both notebook
sources and its suites (``04_allreduce``: ``lessons/04_allreduce.ipynb``, ``exercises/…``,
``solutions/…``, ``tools/nbsrc/{lessons,solutions}/04_allreduce.py``,
``dpcourse/grading/suites/ex04_allreduce.py``, ``instructor/suites/ex04_allreduce.py``). And the
README's "How it is built" names every module of the package.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dpcourse.grading.framework import suite_modules

ROOT = Path(__file__).resolve().parent.parent


def _stems() -> dict[str, str]:
    """Exercise id -> stem, read from the visible suites' module names (``ex04_allreduce`` -> ``04_allreduce``)."""
    return {ex: module.rsplit(".", 1)[1][2:] for ex, module in suite_modules().items()}


def test_every_suite_is_named_after_its_lesson():
    stems = _stems()
    assert len(stems) >= 8
    for ex, stem in stems.items():
        assert re.fullmatch(rf"{ex}_[a-z0-9_]+", stem), f"suite ex{stem}: name it ex{ex}_<its lesson's stem>"


@pytest.mark.parametrize("ex", sorted(_stems()))
def test_an_exercise_and_its_lesson_share_one_stem(ex):
    stem = _stems()[ex]
    expected = [f"lessons/{stem}.ipynb", f"tools/nbsrc/lessons/{stem}.py", f"exercises/{stem}.ipynb",
                f"solutions/{stem}.ipynb", f"tools/nbsrc/solutions/{stem}.py"]
    missing = [p for p in expected if not (ROOT / p).is_file()]
    assert not missing, f"exercise {ex} ({stem}): missing {missing}"
    hidden = sorted((ROOT / "instructor" / "suites").glob(f"ex{ex}*.py"))
    assert [p.name for p in hidden] in ([], [f"ex{stem}.py"]), f"hidden suite of {ex} must be ex{stem}.py: {hidden}"


def test_no_notebook_without_its_source_and_no_source_without_its_notebook():
    for folder in ("lessons", "solutions"):
        notebooks = {p.stem for p in (ROOT / folder).glob("*.ipynb")}
        sources = {p.stem for p in (ROOT / "tools" / "nbsrc" / folder).glob("*.py")}
        assert notebooks == sources, f"{folder}: {sorted(notebooks ^ sources)}"
    exercises = {p.stem for p in (ROOT / "exercises").glob("*.ipynb")}
    assert exercises == {p.stem for p in (ROOT / "solutions").glob("*.ipynb")}, "run dpcourse release"


def _built_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## How it is built")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_the_readme_names_every_module():
    section = _built_section()
    package = ROOT / "dpcourse"
    missing = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] in ("aids_content", "jupyter_config") or (rel.name == "__init__.py" and len(rel.parts) == 1):
            continue
        if "suites" in rel.parts:
            continue  # the suites are named after their lessons (test above) and listed as suites/
        name = rel.parent.name + "/" if rel.name == "__init__.py" else rel.stem
        if not re.search(rf"`[^`\n]*(?<![\w.]){re.escape(name)}(?:\.py)?(?![\w])[^`\n]*`", section):
            missing.append(str(rel))
    assert not missing, f"README.md's 'How it is built' does not name {missing}: add a line for each"
