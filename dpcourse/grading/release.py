"""``dpcourse release [--solutions DIR] [--exercises DIR] [--check] [--force]``: exercises from their solutions.

In every code cell, each region between a line ``### BEGIN SOLUTION`` and a line ``### END SOLUTION``
becomes one ``raise NotImplementedError(...)`` at the region's indentation; code outside the regions
stays. Outputs, execution counts and widget state are cleared, and the exercise id is recorded in the
notebook's metadata; cell ids are numbered, so that an unchanged solution always gives the same exercise.
Only the exercises folder given is written to, one file per solution, same name.

An exercise is a learner's workspace, so release never loses what is in one. Each exercise records
what release wrote into it (``metadata.dpcourse.released``: a hash of its cells). Comparing that record
with the cells now in the file tells whether a learner has edited (or run) it; comparing it with what
the solution gives now tells whether the solution changed since. An exercise someone has changed is
never replaced unless ``--force`` is given, and then only after a copy has been kept in
``exercises/backups/NAME.<time>.ipynb`` (a new file each time, never overwritten).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = [
    "BACKUPS",
    "BEGIN",
    "END",
    "PLACEHOLDER",
    "ReleaseError",
    "State",
    "backup",
    "cells_hash",
    "compare",
    "main",
    "release_notebook",
    "strip_solutions",
]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
PLACEHOLDER = 'raise NotImplementedError("your code here: replace this line with your solution")'
BACKUPS = "backups"  # inside the exercises folder


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
    record = dict(nb.metadata.get("dpcourse") or {})
    m = re.match(r"(\d\d)_", solution.name)
    if m and "exercise" not in record:  # the grader reads the exercise from here, whatever the file is called
        record["exercise"] = m[1]
    record["released"] = cells_hash(nb)
    nb.metadata["dpcourse"] = record
    return nb


def cells_hash(nb: dict) -> str:
    """A hash of what a learner writes in a notebook: every cell's type and source (not outputs or ids)."""
    cells = [[c.get("cell_type", ""), "".join(s) if isinstance(s := c.get("source", ""), list) else str(s)]
             for c in nb.get("cells", []) if isinstance(c, dict)]
    return "sha256:" + hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def _has_outputs(nb: dict) -> bool:
    return any(c.get("outputs") or c.get("execution_count") for c in nb.get("cells", []) if isinstance(c, dict))


def _text(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


@dataclass
class State:
    """How an exercise on disk stands against what release would write now.

    ``kind``: ``missing``, ``current`` (what release writes now: the same bytes, or the cells it wrote
    with nothing added, in a file Jupyter has saved again), ``solution-changed`` (nobody touched it since
    the last release; the solution has changed), ``edited`` (its cells differ from what the last
    release wrote), ``ran`` (same cells as released, with outputs from a run), ``unrecorded`` (written
    by an older release, before releases were recorded: same cells as now, no outputs), ``unknown``
    (no record, and cells other than what release writes now), ``unreadable``.
    """

    kind: str
    solution_changed: bool = False

    @property
    def learners(self) -> bool:
        """True when the file holds something release did not write (edits, outputs, or can't tell)."""
        return self.kind in ("edited", "ran", "unknown", "unreadable")


def compare(current: str | None, new: nbformat.NotebookNode) -> State:
    """Where ``current`` (the exercise's text, None when there is none) stands against ``new``."""
    if current is None:
        return State("missing")
    if current == _text(new):
        return State("current")
    try:
        nb = json.loads(current)
    except ValueError:
        return State("unreadable", True)
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return State("unreadable", True)
    record = (nb.get("metadata") or {}).get("dpcourse") or {}
    released = record.get("released") if isinstance(record, dict) else None
    now, wanted = cells_hash(nb), new.metadata["dpcourse"]["released"]
    if released is None:  # written before releases were recorded: its cells alone can tell
        if now == wanted:
            return State("ran" if _has_outputs(nb) else "unrecorded", False)
        return State("unknown", True)
    changed = released != wanted
    if now != released:
        return State("edited", changed)
    if _has_outputs(nb):
        return State("ran", changed)
    return State("solution-changed" if changed else "current", changed)


def backup(target: Path) -> Path:
    """Copy ``target`` to ``backups/NAME.<time>.ipynb`` beside it, a new file every time; return its path."""
    folder = target.parent / BACKUPS
    folder.mkdir(parents=True, exist_ok=True)
    data = target.read_bytes()
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    for n in range(1, 10_000):
        path = folder / f"{target.stem}.{stamp}{'' if n == 1 else f'-{n}'}{target.suffix}"
        try:
            with open(path, "xb") as f:  # "x": never overwrite an earlier copy
                f.write(data)
            return path
        except FileExistsError:
            continue
    raise OSError(f"cannot find a free backup name for {target} in {folder}")


_CHECK = {
    "missing": "missing: {t}: run dpcourse release",
    "solution-changed": "solution changed since the last release: {t}: nobody has edited it; dpcourse release "
                        "updates it",
    "unrecorded": "written by an older release: {t}: same code as now, no record of the release in it; "
                  "dpcourse release records it",
    "unreadable": "unreadable: {t} is not a notebook any more; dpcourse release leaves it alone (--force "
                  "replaces it, keeping a copy)",
}


def _check_line(state: State, target: Path) -> str:
    t = str(target)
    if state.kind in _CHECK:
        return _CHECK[state.kind].format(t=t)
    if state.kind == "unknown":
        return (f"edited, or released before releases were recorded: {t}: its code is not what the solution gives "
                "now; dpcourse release leaves it alone (--force replaces it, keeping a copy)")
    what = "a learner has edited it" if state.kind == "edited" else "it holds outputs from a run (code as released)"
    if state.solution_changed:
        return (f"{what}, and the solution changed since the last release: {t}: dpcourse release leaves it alone "
                "(--force replaces it, keeping a copy)")
    return f"{what}; the solution is unchanged: {t}: nothing to release"


def _release_one(state: State, target: Path, text: str, force: bool) -> tuple[str, int]:
    """Write ``text`` to ``target`` if that loses nothing (or ``force``: after a backup); (message, status)."""
    if state.kind == "current":
        return f"unchanged {target}", 0
    if state.learners and not (force or state.solution_changed):
        return f"kept {target}: {_check_line(state, target).split(': ', 1)[0]}", 0
    if state.learners and not force:
        why = _check_line(state, target).split(": ")[0]
        return f"not replaced: {target}: {why}. Rerun with --force to replace it; a copy is kept first.", 1
    note = ""
    if state.learners:
        note = f" (the previous version is kept in {backup(target)})"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return f"wrote {target}{note}", 0


def main(args: argparse.Namespace) -> int:
    """Entry point of ``dpcourse release``: 0 when all is well, 1 on a bad solution, an exercise it would not
    replace, or (``--check``) any exercise not byte-identical to what release would write."""
    solutions, exercises = Path(args.solutions), Path(args.exercises)
    force = bool(getattr(args, "force", False))
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
            new = release_notebook(solution)
        except ReleaseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        state = compare(target.read_text(errors="replace") if target.exists() else None, new)
        if args.check:
            if state.kind != "current":
                print(_check_line(state, target))
                status = 1
            continue
        message, code = _release_one(state, target, _text(new), force)
        print(message)
        status = max(status, code)
    extra = sorted(p.name for p in exercises.glob("*.ipynb") if p.name not in expected) if exercises.is_dir() else []
    for name in extra:
        print(f"{'differs' if args.check else 'note'}: {exercises / name} has no solution in {solutions}")
        status = 1 if args.check else status
    return status
