"""Every link a learner can click in the course opens something: README, course map, lessons, exercises.

Links are read from markdown cells and from stored markdown/HTML outputs (the course map's table is
an output), and resolved the way JupyterLab resolves them: relative to the notebook's folder, inside
the course folder that ``dpcourse lab`` serves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted([*ROOT.glob("lessons/*.ipynb"), *ROOT.glob("exercises/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])
_MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")


def links_in(text: str) -> list[str]:
    """Local link targets in markdown or HTML text (web addresses, anchors and mail links left out)."""
    found = _MD_LINK.findall(text) + _HTML_LINK.findall(text)
    local = []
    for target in found:
        parsed = urlparse(target)
        if parsed.scheme or parsed.netloc or not parsed.path:  # http:, mailto:, data:, or '#anchor'
            continue
        local.append(unquote(parsed.path))
    return local


def notebook_links(path: Path) -> list[str]:
    """Links in ``path``'s markdown cells and in its stored markdown and HTML outputs."""
    links = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            links += links_in("".join(cell["source"]))
        for output in cell.get("outputs", []):
            for kind in ("text/markdown", "text/html"):
                data = output.get("data", {}).get(kind)
                if data:
                    links += links_in("".join(data) if isinstance(data, list) else data)
    return links


def test_the_link_finder_finds_what_a_renderer_would_follow():
    text = ('[a](../exercises/04_x.ipynb) ![plot](img/p.png "title") [web](https://pytorch.org) [top](#top)\n'
            '<a href="../solutions/04_x.ipynb">s</a> [spaced](my%20notes.ipynb) [mail](mailto:a@b.c)')
    want = ["../exercises/04_x.ipynb", "../solutions/04_x.ipynb", "img/p.png", "my notes.ipynb"]
    assert sorted(links_in(text)) == want


def test_the_course_map_links_every_exercise_and_solution():
    links = {(ROOT / "lessons" / link).resolve() for link in notebook_links(ROOT / "lessons" / "index.ipynb")}
    for folder in ("lessons", "exercises", "solutions"):
        for nb in ROOT.glob(f"{folder}/[0-9][0-9]*_*.ipynb"):
            assert nb.resolve() in links, \
                f"the course map has no link to {nb.relative_to(ROOT)}: rebuild lessons/index.ipynb"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_link_in_a_notebook_opens_a_file_of_the_course(notebook):
    for link in notebook_links(notebook):
        target = (notebook.parent / link).resolve()
        assert target.is_relative_to(ROOT), f"{notebook.name}: {link} points outside the course folder"
        where = notebook.relative_to(ROOT)
        assert target.exists(), f"{where}: link {link} -> {target.relative_to(ROOT)} does not exist"


def test_every_link_in_the_readme_opens_a_file():
    links = links_in((ROOT / "README.md").read_text())
    assert len(links) > 10  # the course table
    for link in links:
        assert (ROOT / link).exists(), f"README.md: link {link} does not exist"
