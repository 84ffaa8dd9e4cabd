"""Author and execute the course's notebooks headless, the way CI runs them.

    python tools/nb.py build lessons/src.py lessons/01_x.ipynb   # percent-format source -> executed notebook
    python tools/nb.py execute lessons/01_x.ipynb ...           # re-run a notebook in place, store outputs

Source format: jupytext's percent format (``# %%`` starts a code cell, ``# %% [markdown]`` a
markdown cell whose lines start with ``# ``, ``# %% tags=["graded"]`` adds cell tags, and a shell
line is written ``# !cmd``). A source must be exactly what jupytext itself would write for its
cells, so a line that lost its ``# `` fails the build with its line number instead of turning
into code or text silently. Executing strips widget state so that committed notebooks never
carry it, and stores outputs from a fresh kernel in the notebook's folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient


class MalformedSource(ValueError):
    """A notebook source that is not in jupytext's percent format exactly."""


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
            nb = parse_percent(args.source.read_text(), where=str(args.source))
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
