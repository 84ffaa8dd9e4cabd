"""Take the learner's code out of a submitted notebook, without running any of it.

The learner's code is the notebook's code cells tagged ``graded``; when the tags were lost, the cells
that define the names the exercise grades (found with ``ast``). Other cells contribute only their
top-level imports and function/class definitions (so helpers and ``import torch`` still work), never
their experiments. IPython magics and shell lines are dropped.
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["Submission", "SubmissionError", "read_submission", "exercise_of"]

_MAGIC = re.compile(r"^\s*[%!]")


class SubmissionError(ValueError):
    """The notebook cannot be graded at all (not JSON, not a notebook, code that does not parse)."""


@dataclass
class Submission:
    path: Path
    exercise: str | None
    cells: list[tuple[str, str]] = field(default_factory=list)  # (label, source) to execute in order
    graded_sources: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _strip_magics(source: str) -> str:
    if source.lstrip().startswith("%%"):
        return ""
    return "\n".join("" if _MAGIC.match(line) else line for line in source.splitlines())


def _defines(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(re.findall(r"^(?:def|class)\s+(\w+)", source, re.M))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _is_reference(module: str, references: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in references)


def _imported_modules(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def _kept_from_other_cell(source: str, names: tuple[str, ...], references: tuple[str, ...]) -> str:
    """Top-level imports and definitions of an ungraded cell (never the course's references or graders)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = _imported_modules(node)
            if any(_is_reference(m, references) or m.startswith("dpcourse.grading") for m in mods):
                continue
            keep.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name not in names:
            keep.append(node)
    return ast.unparse(ast.Module(body=keep, type_ignores=[])) if keep else ""


def _code_only(source: str) -> str:
    """``source`` without its comments and string literals (a docstring may mention any module)."""
    skip = {tokenize.COMMENT, tokenize.STRING} | {getattr(tokenize, n) for n in
                                                  ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, n)}
    lines: dict[int, list[str]] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in skip:
                lines.setdefault(tok.start[0], []).append(tok.string)
    except (tokenize.TokenError, SyntaxError):
        return source  # code that does not tokenize is judged on its raw text
    return re.sub(r"\s*\.\s*", ".", "\n".join(" ".join(toks) for _, toks in sorted(lines.items())))


def references_used(source: str, references: tuple[str, ...]) -> list[str]:
    """The course's reference modules that the code in ``source`` imports or names (comments and
    strings do not count)."""
    code = _code_only(source)
    found = []
    for ref in references:
        parent, _, leaf = ref.rpartition(".")
        pattern = re.compile(rf"\b{re.escape(ref)}\b|from\s+{re.escape(parent)}\s+import\s+[^\n]*\b{leaf}\b")
        if pattern.search(code):
            found.append(ref)
    return found


def exercise_of(path: Path, nb: dict | None = None) -> str | None:
    """The exercise id: the notebook's ``dpcourse.exercise`` metadata, else a leading ``NN_`` in its name."""
    if nb is not None:
        meta = nb.get("metadata", {}).get("dpcourse", {})
        if isinstance(meta, dict) and isinstance(meta.get("exercise"), str):
            return meta["exercise"]
    m = re.match(r"(\d\d)(?:[_\-. ]|$)", path.name)
    return m[1] if m else None


def read_submission(path: Path, names_of: Callable[[str], tuple[str, ...]],
                    references_of: Callable[[str], tuple[str, ...]] = lambda exercise: (),
                    guess: Callable[[set[str]], str | None] | None = None) -> Submission:
    """Read ``path`` and pick the learner's code; ``names_of(exercise)`` gives the graded names and
    ``references_of(exercise)`` the course modules whose imports are dropped from ungraded cells.

    Without exercise metadata or an ``NN_`` file name, ``guess(defined names)`` names the exercise.
    Raises :class:`SubmissionError` for a file that is not a readable notebook.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SubmissionError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"{Path(path).name} is not a valid notebook (not JSON: {exc.msg} at line {exc.lineno}); "
                              "re-download it from Jupyter (File > Download) and resubmit.") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise SubmissionError(f"{Path(path).name} is JSON but not a notebook (no list of cells).")
    exercise = exercise_of(Path(path), nb)
    if exercise is None and guess is not None:
        defined = set()
        for c in nb["cells"]:
            if isinstance(c, dict) and c.get("cell_type") == "code":
                defined |= _defines(_strip_magics(_source(c)))
        exercise = guess(defined)
    sub = Submission(Path(path), exercise)
    names: tuple[str, ...] = tuple(names_of(exercise)) if exercise else ()
    references = tuple(references_of(exercise)) if exercise else ()
    code_cells = [(i, c) for i, c in enumerate(nb["cells"], 1) if isinstance(c, dict) and c.get("cell_type") == "code"]
    graded = {i for i, c in code_cells if "graded" in (c.get("metadata", {}) or {}).get("tags", [])}
    if not graded:
        graded = {i for i, c in code_cells if _defines(_strip_magics(_source(c))) & set(names)}
        sub.note = "no cell is tagged 'graded': graded the cells that define " + ", ".join(names) if graded else ""
    for i, cell in code_cells:
        source = _strip_magics(_source(cell))
        label = f"<cell {i}>"
        if i in graded:
            sub.cells.append((label, source))
            sub.graded_sources.append((label, source))
        else:
            kept = _kept_from_other_cell(source, names, references)
            if kept:
                sub.cells.append((label, kept))
    return sub
