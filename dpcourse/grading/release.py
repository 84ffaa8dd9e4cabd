"""``dpcourse release [--solutions DIR] [--exercises DIR] [--check]``: exercises from their solutions.

In every code cell, each region between a line ``### BEGIN SOLUTION`` and a line ``### END SOLUTION``
becomes one ``raise NotImplementedError(...)`` at the region's indentation; code outside the regions
stays. Outputs, execution counts and widget state are cleared, and the exercise id is recorded in the
notebook's metadata; cell ids are numbered, so that an unchanged solution always gives the same exercise.
Only the exercises folder given is written to, one file per solution, same name.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

__all__ = ["main", "release_notebook", "strip_solutions", "ReleaseError", "BEGIN", "END", "PLACEHOLDER"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
PLACEHOLDER = 'raise NotImplementedError("your code here: replace this line with your solution")'


class ReleaseError(ValueError):
    """A solution notebook whose markers cannot be turned into an exercise."""


def strip_solutions(source: str, where: str) -> tuple[str, int]:
    """``source`` with every solution region replaced; returns the text and the number of regions."""
    out: list[str] = []
    inside: int | None = None
    regions = 0
    for number, line in enumerate(source.split("\n"), 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside is not None:
                raise ReleaseError(f"{where}: '{BEGIN}' on line {number} inside the region opened on line {inside}; "
                                   f"close it with '{END}' first.")
            inside = number
            out.append(line[: len(line) - len(line.lstrip())] + PLACEHOLDER)
            regions += 1
        elif marker == END:
            if inside is None:
                raise ReleaseError(f"{where}: '{END}' on line {number} without a '{BEGIN}' before it.")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise ReleaseError(f"{where}: '{BEGIN}' on line {inside} has no matching '{END}'.")
    return "\n".join(out), regions


def release_notebook(solution: Path) -> nbformat.NotebookNode:
    """The exercise notebook generated from ``solution`` (nothing is written)."""
    try:
        nb = nbformat.read(solution, as_version=4)
    except Exception as exc:
        raise ReleaseError(f"{solution}: cannot read the notebook ({exc}).") from None
    nb = copy.deepcopy(nb)
    total = 0
    for index, cell in enumerate(nb.cells, 1):
        cell.metadata.pop("execution", None)
        if "id" in cell:  # rebuilding a solution draws new random ids: keep exercises stable
            cell["id"] = f"cell-{index:03d}"
        if cell.cell_type != "code":
            continue
        first = cell.source.strip().split("\n", 1)[0][:40]
        where = f"{solution.name}, cell {index} ({first!r})"
        cell.source, regions = strip_solutions(cell.source, where)
        if regions == 0 and "graded" in cell.metadata.get("tags", []):
            raise ReleaseError(f"{where}: tagged 'graded' but has no '{BEGIN}' / '{END}' region.")
        total += regions
        cell.outputs = []
        cell.execution_count = None
    if total == 0:
        raise ReleaseError(f"{solution}: no '{BEGIN}' / '{END}' region in any cell: mark the learner's code.")
    nb.metadata.pop("widgets", None)
    m = re.match(r"(\d\d)_", solution.name)
    if m:
        nb.metadata["dpcourse"] = {"exercise": m[1]}
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def main(args: argparse.Namespace) -> int:
    """Entry point of ``dpcourse release``: 0 when all is well, 1 on a bad solution or drift (``--check``)."""
    solutions, exercises = Path(args.solutions), Path(args.exercises)
    if not solutions.is_dir():
        print(f"dpcourse release: no solutions folder {solutions}: run it from the course's root or pass "
              "--solutions DIR.", file=sys.stderr)
        return 2
    if exercises.resolve() == solutions.resolve():
        print("dpcourse release: --exercises and --solutions are the same folder; that would overwrite the "
              "solutions: pass another --exercises DIR.", file=sys.stderr)
        return 2
    sources = sorted(p for p in solutions.glob("*.ipynb") if re.match(r"\d\d_", p.name))
    if not sources:
        print(f"dpcourse release: no NN_*.ipynb solution notebooks in {solutions}.", file=sys.stderr)
        return 2
    status = 0
    expected: set[str] = set()
    for solution in sources:
        target = exercises / solution.name
        expected.add(solution.name)
        try:
            text = _text(release_notebook(solution))
        except ReleaseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        current = target.read_text() if target.exists() else None
        if args.check:
            if current != text:
                print(f"differs: {target} ({'missing' if current is None else 'stale'}): run dpcourse release")
                status = 1
            continue
        if current != text:
            exercises.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"wrote {target}")
        else:
            print(f"unchanged {target}")
    extra = sorted(p.name for p in exercises.glob("*.ipynb") if p.name not in expected) if exercises.is_dir() else []
    for name in extra:
        print(f"{'differs' if args.check else 'note'}: {exercises / name} has no solution in {solutions}")
        status = 1 if args.check else status
    return status
