"""Author and execute the course's notebooks headless, the way CI runs them.

    python tools/nb.py build lessons/src.py lessons/01_x.ipynb   # percent-format source -> executed notebook
    python tools/nb.py execute lessons/01_x.ipynb ...           # re-run a notebook in place, store outputs

Source format: cells start with ``# %%`` (code) or ``# %% [markdown]`` (markdown, each line
behind ``# ``); ``# %% tags=["graded"]`` adds cell tags. Executing strips widget state so that
committed notebooks never carry it, and stores outputs from a fresh kernel in the notebook's folder.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

_HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse_percent(text: str) -> nbformat.NotebookNode:
    """Turn percent-format source into a notebook (no outputs)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    cells: list[tuple[bool, list[str], list[str]]] = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            cells.append((bool(m["md"]), json.loads(m["tags"]) if m["tags"] else [], []))
        elif cells:
            cells[-1][2].append(line)
    for is_md, tags, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if is_md:
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines)
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines))
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def execute(path: Path, timeout: int = 300) -> float:
    """Execute ``path`` in place in a fresh kernel; return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
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
        nbformat.write(parse_percent(args.source.read_text()), args.notebook)
        targets = [] if args.no_execute else [args.notebook]
    else:
        targets = args.notebooks
    for path in targets:
        print(f"{path}: executed in {execute(path):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
