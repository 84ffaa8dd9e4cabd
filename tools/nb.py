"""Author and execute the course's notebooks headless, the way CI runs them.

    python tools/nb.py build lessons/src.py lessons/01_x.ipynb   # percent-format source -> executed notebook
    python tools/nb.py execute lessons/01_x.ipynb ...           # re-run a notebook in place, store outputs

Source format: jupytext's percent format (``# %%`` starts a code cell, ``# %% [markdown]`` a
markdown cell whose lines start with ``# ``, ``# %% tags=["graded"]`` adds cell tags, and a shell
line is written ``# !cmd``). A source must be exactly what jupytext itself would write for its
cells, so a line that lost its ``# `` fails the build with its line number instead of turning
into code or text silently.

A solution shows the library's reference code instead of a copy of it. A line

    # include: dpcourse.allreduce.check_input            (the function or class as it is)
    # include solution: dpcourse.allreduce.ring_all_reduce

is replaced by the object's source. With ``solution``, the body of the function (for a class:
of each method) after its docstring goes between ``### BEGIN SOLUTION`` / ``### END SOLUTION``,
so that ``dpcourse release`` turns it into the exercise's placeholder; a body of one line (a
method that only delegates) stays given.

Executing strips widget state so that committed notebooks never carry it, and stores outputs
from a fresh kernel in the notebook's folder.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient


class MalformedSource(ValueError):
    """A notebook source that is not in jupytext's percent format exactly."""


INCLUDE = re.compile(r"^# include( solution)?: ([\w.]+)\.(\w+)$")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def _with_solution_markers(source: str) -> str:
    """``source`` (one function or class) with each function body after its docstring marked."""
    lines = source.split("\n")
    regions = []  # (first line, last line) of each body, 0-based
    top = ast.parse(source).body[0]
    functions = [n for n in top.body if isinstance(n, ast.FunctionDef)] if isinstance(top, ast.ClassDef) else [top]
    for node in functions:  # a function's own inner functions stay inside its region
        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
        if len(body) > 1 or (body and body[0].end_lineno > body[0].lineno):  # a one-liner stays given
            regions.append((body[0].lineno - 1, node.body[-1].end_lineno - 1))
    for first, last in sorted(regions, reverse=True):  # from the bottom, so line numbers stay valid
        indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
        lines[last + 1:last + 1] = [indent + END]
        lines[first:first] = [indent + BEGIN]
    return "\n".join(lines)


def library_source(module: str, name: str) -> str:
    """The source of ``module.name`` as the library has it (decorators included, dedented)."""
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise MalformedSource(f"cannot include {module}.{name}: {exc}") from None
    return textwrap.dedent(inspect.getsource(obj)).rstrip("\n")


def expand_includes(text: str, where: str = "<source>") -> str:
    """``text`` with every ``# include: module.name`` line replaced by that object's source."""
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        found = INCLUDE.match(line)
        if not found:
            if line.startswith(("# include:", "# include solution:")):
                raise MalformedSource(f"{where}:{number}: {line!r} is not an include: write "
                                      "'# include: module.name' or '# include solution: module.name'.")
            out.append(line)
            continue
        source = library_source(found[2], found[3])
        out.append(_with_solution_markers(source) if found[1] else source)
    return "\n".join(out)


def read_source(path: Path) -> nbformat.NotebookNode:
    """The notebook a source file describes, includes expanded."""
    return parse_percent(expand_includes(path.read_text(), where=str(path)), where=str(path))


def parse_percent(text: str, where: str = "<source>") -> nbformat.NotebookNode:
    """Turn percent-format source into a notebook (no outputs); raise :class:`MalformedSource`
    unless jupytext writes the very same text back for the cells it read."""
    nb = jupytext.reads(text, fmt="py:percent")
    canonical = jupytext.writes(nb, fmt="py:percent")
    if canonical != text:
        ours, theirs = text.splitlines(), canonical.splitlines()
        line = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        got = ours[line] if line < len(ours) else "<end of file>"
        want = theirs[line] if line < len(theirs) else "<end of file>"
        raise MalformedSource(f"{where}:{line + 1}: not in jupytext's percent format: found {got!r}, "
                              f"jupytext would write {want!r} (a markdown line starts with '# ', "
                              "a shell line is '# !cmd').")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(path: Path, timeout: int = 300) -> float:
    """Execute ``path`` in place in a fresh kernel; return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    # An empty course home for the kernel: the aids' "Review due" line is a new learner's, and the
    # builder's own review history (~/.dpcourse) is neither read nor written.
    with tempfile.TemporaryDirectory(prefix="dpcourse-home-build-") as home:
        saved = os.environ.get("DPCOURSE_HOME")
        os.environ["DPCOURSE_HOME"] = home
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        finally:
            if saved is None:
                os.environ.pop("DPCOURSE_HOME", None)
            else:
                os.environ["DPCOURSE_HOME"] = saved
    seconds = time.perf_counter() - start
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("source", type=Path)
    b.add_argument("notebook", type=Path)
    b.add_argument("--no-execute", action="store_true")
    e = sub.add_parser("execute")
    e.add_argument("notebooks", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        try:
            nb = read_source(args.source)
        except MalformedSource as exc:
            print(exc, file=sys.stderr)
            return 2
        nbformat.write(nb, args.notebook)
        targets = [] if args.no_execute else [args.notebook]
    else:
        targets = args.notebooks
    for path in targets:
        print(f"{path}: executed in {execute(path):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
