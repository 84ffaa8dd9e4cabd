"""Re-run only the learning-aids cell at the end of lesson notebooks, and store its new output.

    python tools/refresh_aids.py lessons/00_setup.ipynb lessons/01_single_device.ipynb ...

The last cell of every lesson is ``from dpcourse.aids import lesson_aids; lesson_aids("NN")``: it
depends on no earlier cell, so when only the aids change (``dpcourse/aids.py``, the content, the
dialogues) this gives the very output a full ``tools/nb.py execute`` would, in a second instead of
re-running every experiment. It runs in a fresh kernel, headless, with an empty ``DPCOURSE_HOME``,
so the stored "Review due" line is a new learner's and nothing is read from or written to the
builder's own review history. Any other change to a lesson needs ``tools/nb.py build``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def refresh(path: Path, timeout: int = 120) -> None:
    nb = nbformat.read(path, as_version=4)
    last = nb.cells[-1]
    if last.cell_type != "code" or "lesson_aids(" not in last.source:
        raise SystemExit(f"{path}: the last cell is not a lesson_aids(...) cell; rebuild with tools/nb.py")
    single = nbformat.v4.new_notebook(metadata=nb.metadata, cells=[nbformat.v4.new_code_cell(last.source)])
    with tempfile.TemporaryDirectory(prefix="dpcourse-home-refresh-") as home:
        saved = {k: os.environ.get(k) for k in ("DPCOURSE_HOME", "DPCOURSE_WIDGETS")}
        os.environ.update(DPCOURSE_HOME=home, DPCOURSE_WIDGETS="0")  # the kernel inherits both: static output
        try:
            NotebookClient(single, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    errors = [o for o in single.cells[0].outputs if o.output_type == "error"]
    if errors:
        raise SystemExit(f"{path}: the aids cell failed: {errors[0].ename}: {errors[0].evalue}")
    last.outputs = single.cells[0].outputs
    for output in last.outputs:
        if "execution_count" in output:
            output["execution_count"] = last.execution_count
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    print(f"{path}: aids output refreshed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    for path in parser.parse_args(argv).notebooks:
        refresh(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
