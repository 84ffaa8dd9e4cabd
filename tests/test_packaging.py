"""The install story: pyproject, environment.yml, README and CI agree with each other."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch-cpu"}  # pip name -> conda-forge name where they differ


def _pip_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower() for r in requirements}


def _conda_names() -> set[str]:
    names = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"\s+- ([A-Za-z0-9_.-]+)", line)
        if m and m[1] != "python" and m[1] != "conda-forge":
            names.add(m[1].lower())
    return names


def test_environment_yml_lists_what_pyproject_needs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _pip_names(project["dependencies"]) | _pip_names(project["optional-dependencies"]["test"])
    expected = {CONDA_NAMES.get(name, name) for name in wanted}
    assert _conda_names() == expected


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install = re.search(r"<!-- install -->\s*```bash\n(.+?)\n```", readme, re.S)[1].strip()
    test = re.search(r"<!-- test -->\s*```bash\n(.+?)\n```", readme, re.S)[1].strip()
    assert "dpcourse lab" in install
    setup = install.split("&& dpcourse lab")[0].strip()
    assert setup in ci, "CI must install the way the README says"
    assert test in ci, "CI must run the README's test command"
    assert "torch==" in install, "a bare torch requirement pulls a multi-GB CUDA build"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "dpcourse.cli", "doctor"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CPU cores" in out.stdout and "gloo" in out.stdout


def test_course_layout():
    for folder in ("lessons", "dpcourse", "exercises", "solutions", "tests"):
        assert (ROOT / folder).is_dir(), folder
    lessons = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]*.ipynb"))
    assert lessons and lessons[0].startswith("00_")
    exercises = {p.name for p in (ROOT / "exercises").glob("*.ipynb")}
    solutions = {p.name for p in (ROOT / "solutions").glob("*.ipynb")}
    assert exercises == solutions, "every exercise has a solution of the same name, and back"
