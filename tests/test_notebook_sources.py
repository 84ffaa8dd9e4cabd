"""Every committed notebook matches its percent-format source in tools/nbsrc (with the library code
it includes), and is stored executed; a solution's graded code is the library's reference itself."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from nb import BEGIN, END, MalformedSource, expand_includes, library_source, main, parse_percent, read_source  # noqa: E402

SOURCES = sorted((ROOT / "tools" / "nbsrc").glob("*/*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_notebook_matches_source(source):
    notebook = ROOT / source.parent.name / f"{source.stem}.ipynb"
    assert notebook.exists(), (f"{notebook.relative_to(ROOT)} is missing: "
                               f"python tools/nb.py build {source.relative_to(ROOT)} {notebook.relative_to(ROOT)}")
    stored = nbformat.read(notebook, as_version=4)
    expected = read_source(source)
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


INCLUDES = [(src, line) for src in SOURCES for line in src.read_text().splitlines()
            if line.startswith(("# include:", "# include solution:"))]


def _without_markers(text: str) -> str:
    return "\n".join(line for line in text.split("\n") if line.strip() not in (BEGIN, END))


@pytest.mark.parametrize("source, line", INCLUDES, ids=[f"{s.stem}:{line.split()[-1]}" for s, line in INCLUDES])
def test_included_code_is_the_library_s_own(source, line):
    """The built notebook holds the library's source, as the library has it now, in one cell."""
    module, _, name = line.split()[-1].rpartition(".")
    stored = nbformat.read(ROOT / source.parent.name / f"{source.stem}.ipynb", as_version=4)
    library = library_source(module, name)
    cells = [c for c in stored.cells if c.cell_type == "code" and library in _without_markers(c.source)]
    assert cells, f"{source.stem}: {module}.{name} differs from the library's: rebuild it with tools/nb.py build"
    if " solution:" in line:
        assert BEGIN in cells[0].source and "graded" in cells[0].metadata.get("tags", [])


def test_graded_solutions_are_the_library_references():
    """Solutions 04 and 05 grade the library's own code: same names, same text."""
    def graded(stem: str) -> str:
        nb = nbformat.read(ROOT / "solutions" / f"{stem}.ipynb", as_version=4)
        cells = [_without_markers(c.source).strip() for c in nb.cells if "graded" in c.metadata.get("tags", [])]
        return "\n\n\n".join(cells)  # two blank lines between definitions, as in the library

    assert graded("04_allreduce").strip() == library_source("dpcourse.allreduce", "ring_all_reduce")
    ddp = [library_source("dpcourse.ddp_by_hand", name)
           for name in ("average_gradients", "broadcast_parameters", "fill_buckets", "BucketedDDP")]
    assert graded("05_ddp_by_hand").strip() == "\n\n\n".join(ddp)


def test_include_marks_each_body_after_its_docstring():
    text = expand_includes("# include solution: dpcourse.allreduce.chunk_bounds")
    lines = text.split("\n")
    assert lines[0].startswith("def chunk_bounds(") and lines[-1] == "    ### END SOLUTION"
    assert lines.index("    ### BEGIN SOLUTION") == lines.index('    """') + 1  # right after the docstring
    assert _without_markers(text) == library_source("dpcourse.allreduce", "chunk_bounds")
    with pytest.raises(MalformedSource, match="cannot include dpcourse.allreduce.no_such_thing"):
        expand_includes("# include: dpcourse.allreduce.no_such_thing")
    with pytest.raises(MalformedSource, match="<source>:2: '# include: ring_all_reduce' is not an include"):
        expand_includes("x = 1\n# include: ring_all_reduce")  # no module
    assert expand_includes("# including prose is prose") == "# including prose is prose"


def test_include_leaves_one_line_bodies_given():
    text = expand_includes("# include solution: dpcourse.ddp_by_hand.BucketedDDP")
    assert "-> Any:\n        return self.module(*args, **kwargs)\n\n" in text  # forward only delegates: no markers
    assert text.count("### BEGIN SOLUTION") == text.count("### END SOLUTION") > 5
