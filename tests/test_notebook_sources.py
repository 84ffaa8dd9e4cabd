"""Every committed notebook matches its percent-format source in tools/nbsrc, and is stored executed."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from nb import MalformedSource, main, parse_percent  # noqa: E402

SOURCES = sorted((ROOT / "tools" / "nbsrc").glob("*/*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_notebook_matches_source(source):
    notebook = ROOT / source.parent.name / f"{source.stem}.ipynb"
    assert notebook.exists(), (f"{notebook.relative_to(ROOT)} is missing: "
                               f"python tools/nb.py build {source.relative_to(ROOT)} {notebook.relative_to(ROOT)}")
    stored = nbformat.read(notebook, as_version=4)
    expected = parse_percent(source.read_text())
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in expected.cells], (
        f"{notebook.relative_to(ROOT)} differs from its source: rebuild it with tools/nb.py build")


@pytest.mark.parametrize("folder", ["lessons", "solutions"])
def test_notebooks_are_stored_executed_without_widget_state(folder):
    for path in sorted((ROOT / folder).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), f"{path.name}: not executed"
        assert "widgets" not in nb.metadata, f"{path.name}: widget state stored"
        errors = [c for c in code for o in c.outputs if o.output_type == "error"
                  and "raises-exception" not in c.metadata.get("tags", [])]
        assert not errors, f"{path.name}: stored with an error"


def test_a_malformed_source_fails_the_build(tmp_path):
    good = (ROOT / "tools" / "nbsrc" / "lessons" / "index.py").read_text()
    lines = good.splitlines(keepends=True)
    def prose(line: str) -> bool:  # a markdown line of plain text (not a heading, not a cell marker)
        return line.startswith("# ") and line[2:3] not in ("#", "%", "|", "-", "*", "")

    markdown_line = next(i for i in range(1, len(lines)) if prose(lines[i]) and prose(lines[i - 1]))
    lines[markdown_line] = lines[markdown_line][2:]  # a markdown line that lost its "# "
    broken = tmp_path / "broken.py"
    broken.write_text("".join(lines))
    with pytest.raises(MalformedSource, match=rf"broken.py:{markdown_line + 1}: not in jupytext's percent format"):
        parse_percent(broken.read_text(), where=str(broken))
    out = tmp_path / "broken.ipynb"
    assert main(["build", str(broken), str(out), "--no-execute"]) == 2
    assert not out.exists(), "a malformed source must not produce a notebook"
    parse_percent(good)  # and the real source is fine
