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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Submission",
    "SubmissionError",
    "exercise_from_name",
    "exercise_from_text",
    "exercise_of",
    "read_submission",
]

_MAGIC = re.compile(r"^\s*[%!]")


class SubmissionError(ValueError):
    """The notebook cannot be graded at all (not JSON, not a notebook, code that does not parse).

    ``exercise``: the exercise it is for all the same, when its text or its name tells (so that it
    scores 0 out of that exercise's points); ``found_by`` says which.
    """

    def __init__(self, message: str, exercise: str | None = None, found_by: str = ""):
        super().__init__(message)
        self.exercise, self.found_by = exercise, found_by


@dataclass
class Submission:
    path: Path
    exercise: str | None
    cells: list[tuple[str, str]] = field(default_factory=list)  # (label, source) to execute in order
    graded_sources: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""
    found_by: str = ""  # where the exercise id came from: "metadata", "check() call", "names", "file name"


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
        return set(re.findall(r"^(?:def|class)\s+(\w+)", source, re.MULTILINE))
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
    fstring_parts = ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
    skip = {tokenize.COMMENT, tokenize.STRING} | {getattr(tokenize, n) for n in fstring_parts if hasattr(tokenize, n)}
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


_TWO_DIGITS = re.compile(r"(?<!\d)(\d\d)(?!\d)")  # exactly two: Canvas's 12345 is a user id, not an exercise
_CHECK_CALL = re.compile(r"""\bcheck\(\s*\\?["'](\d\d?)\\?["']""")
_META = re.compile(r'"dpcourse"\s*:\s*\{[^{}]*"exercise"\s*:\s*"(\d\d?)"')


def _known(exercise: str | None, known: tuple[str, ...]) -> str | None:
    if exercise is None:
        return None
    exercise = exercise.zfill(2) if exercise.isdigit() else exercise
    return exercise if not known or exercise in known else None


def exercise_from_name(path: Path, known: tuple[str, ...] = ()) -> str | None:
    """The exercise id in a file name, whatever a platform added around it.

    ``04_ring.ipynb``, ``grace_04_ring.ipynb``, ``04_ring-grace.ipynb``, Canvas's
    ``grace_12345_67890_04_ring.ipynb``; else the folder's name (a Moodle folder per exercise). With
    ``known`` ids, only those count; of several, the one written like the course's ``NN_name``.
    """
    for text in (Path(path).name, Path(path).parent.name):
        found = [m for m in _TWO_DIGITS.finditer(text) if _known(m[1], known)]
        if found:
            named = [m for m in found if re.match(r"[_\- ][A-Za-z]", text[m.end():])]
            return (named or found)[0][1]
    return None


def exercise_from_text(text: str, known: tuple[str, ...] = (),
                       names_of: Callable[[str], tuple[str, ...]] | None = None) -> tuple[str | None, str]:
    """The exercise id written inside a notebook's text, even a broken one: its ``dpcourse.exercise``
    metadata, its ``check("NN", ...)`` call, or the definitions of one exercise's names. Returns
    (id, where it was found) or (None, "")."""
    for how, pattern in (("metadata", _META), ("check() call", _CHECK_CALL)):
        for m in pattern.finditer(text):
            if _known(m[1], known):
                return _known(m[1], known), how
    if names_of is not None:
        for exercise in known:
            names = names_of(exercise)
            if names and all(re.search(rf"\b(?:def|class)\s+{re.escape(n)}\b", text) for n in names):
                return exercise, "names"
    return None, ""


def _from_inside(nb: dict, known: tuple[str, ...]) -> tuple[str | None, str]:
    """The id a notebook states: its ``dpcourse.exercise`` metadata, else its ``check("NN", ...)`` call."""
    meta = (nb.get("metadata") or {}).get("dpcourse") if isinstance(nb.get("metadata"), dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("exercise"), str) and _known(meta["exercise"], known):
        return _known(meta["exercise"], known), "metadata"
    for c in nb.get("cells", []):
        if isinstance(c, dict) and c.get("cell_type") == "code":
            for m in _CHECK_CALL.finditer(_source(c)):
                if _known(m[1], known):
                    return _known(m[1], known), "check() call"
    return None, ""


def exercise_of(path: Path, nb: dict | None = None, known: tuple[str, ...] = ()) -> str | None:
    """The exercise id: the notebook's ``dpcourse.exercise`` metadata, else its ``check("NN", ...)`` call,
    else the file name (any prefix or suffix around ``NN``)."""
    inside = _from_inside(nb, known)[0] if isinstance(nb, dict) else None
    return inside or exercise_from_name(path, known)


def read_submission(path: Path, names_of: Callable[[str], tuple[str, ...]],
                    references_of: Callable[[str], tuple[str, ...]] = lambda exercise: (),
                    guess: Callable[[set[str]], str | None] | None = None, known: tuple[str, ...] = ()) -> Submission:
    """Read ``path`` and pick the learner's code; ``names_of(exercise)`` gives the graded names and
    ``references_of(exercise)`` the course modules whose imports are dropped from ungraded cells.

    The exercise comes from the notebook itself whenever it says (metadata, a ``check("NN", ...)``
    call, or ``guess(defined names)``), from the file name only when it doesn't; ``known`` lists the
    ids that exist. Raises :class:`SubmissionError` for a file that is not a readable notebook.
    """
    def unreadable(message: str, text: str = "") -> SubmissionError:
        exercise, found_by = exercise_from_text(text, known, names_of if known else None)
        if exercise is None:
            exercise, found_by = exercise_from_name(Path(path), known), "file name"
        return SubmissionError(message, exercise, found_by if exercise else "")

    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise unreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        raise unreadable(f"{Path(path).name} is not a valid notebook (not JSON: {exc.msg} at line {exc.lineno}): "
                         "re-download it from Jupyter (File > Download) and submit it again.", text) from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise unreadable(f"{Path(path).name} is JSON but not a notebook (no list of cells): submit the .ipynb "
                         "file itself (File > Download in Jupyter).", text)
    exercise, found_by = _from_inside(nb, known)
    if exercise is None and guess is not None:
        defined = set()
        for c in nb["cells"]:
            if isinstance(c, dict) and c.get("cell_type") == "code":
                defined |= _defines(_strip_magics(_source(c)))
        exercise, found_by = guess(defined), "names"
    if exercise is None:
        exercise, found_by = exercise_from_name(Path(path), known), "file name"
    sub = Submission(Path(path), exercise, found_by=found_by if exercise else "")
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
