"""What a lesson's learning aids hold: the schema of every ``lessonNN.py`` beside this file.

A content file stays plain data (strings, dicts, lists of tuples) so that it reads like the text it
is. :func:`parse` builds a typed :class:`LessonAids` from it, one dataclass per part, and each part
checks itself as it is built. What is wrong comes back as one line that names the field and says
what to change; :func:`problems` lists every such line at once, for an author fixing a file.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, fields
from typing import Any

LEVELS = ("Basic", "Medium", "Detailed")
REQUIRED = ("TITLE", "SUMMARY", "TERMS", "QUIZ", "MNEMONIC")
OPTIONAL = ("KEY_POINTS", "CARDS")  # a lesson can be drafted before its audiobook and review cards
TERMS_AT_LEAST, QUIZ_QUESTIONS, KEY_POINTS_RANGE = 4, (3, 5), (3, 6)


class ContentError(ValueError):
    """A content file does not follow the schema. The message is one line: field, what is wrong, what to do."""


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ContentError(f"{field} must be a non-empty string, not {_short(value)}.")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Summary:
    """The lesson at three depths, in markdown: each level says more than the one before."""

    basic: str
    medium: str
    detailed: str

    def __post_init__(self) -> None:
        for level in LEVELS:
            _text(self.level(level), f"SUMMARY[{level!r}]")
        for shorter, longer in zip(LEVELS, LEVELS[1:]):
            if len(self.level(longer)) <= len(self.level(shorter)):
                raise ContentError(f"SUMMARY[{longer!r}] must say more than SUMMARY[{shorter!r}] "
                                   f"({len(self.level(longer))} characters against {len(self.level(shorter))}).")

    def level(self, name: str) -> str:
        """The text of level ``name`` (one of :data:`LEVELS`)."""
        return getattr(self, name.lower())

    @classmethod
    def parse(cls, data: Any) -> Summary:
        if not isinstance(data, dict) or set(data) != set(LEVELS):
            got = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise ContentError(f"SUMMARY must be a dict with exactly the levels {', '.join(LEVELS)} (got {got}).")
        return cls(*(data[level] for level in LEVELS))


@dataclass(frozen=True)
class Term:
    """A key term and its one-line definition: the front and back of a flashcard."""

    term: str
    definition: str

    def __post_init__(self) -> None:
        _text(self.term, "a TERMS key")
        _text(self.definition, f"TERMS[{self.term!r}]")

    @staticmethod
    def parse_all(data: Any) -> tuple[Term, ...]:
        if not isinstance(data, dict) or len(data) < TERMS_AT_LEAST:
            raise ContentError(f"TERMS must be a dict of at least {TERMS_AT_LEAST} terms, each mapped to its "
                               f"definition (got {len(data) if isinstance(data, dict) else _short(data)}).")
        return tuple(Term(term, definition) for term, definition in data.items())


@dataclass(frozen=True)
class Question:
    """A multiple-choice quiz question: ``answer`` indexes ``choices``; ``why`` is said once it is answered."""

    q: str
    choices: tuple[str, ...]
    answer: int
    why: str

    def __post_init__(self) -> None:
        _text(self.q, "q")
        if not isinstance(self.choices, (list, tuple)) or len(self.choices) < 2:
            raise ContentError(f"choices must be a list of at least 2 answers, not {_short(self.choices)}.")
        for choice in self.choices:
            _text(choice, "every choice")
        if len(set(self.choices)) != len(self.choices):
            raise ContentError("choices repeat an answer: make every choice different.")
        if type(self.answer) is not int or not 0 <= self.answer < len(self.choices):  # (a bool is no index)
            raise ContentError(f"answer is {_short(self.answer)}, but it must index one of the "
                               f"{len(self.choices)} choices: 0 to {len(self.choices) - 1}.")
        _text(self.why, "why")

    @classmethod
    def parse(cls, data: Any, number: int) -> Question:
        keys = ("q", "choices", "answer", "why")
        try:
            if not isinstance(data, dict) or set(data) != set(keys):
                got = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
                raise ContentError(f"must be a dict with exactly the keys {', '.join(keys)} (got {got}).")
            return cls(data["q"], tuple(data["choices"]) if isinstance(data["choices"], list) else data["choices"],
                       data["answer"], data["why"])
        except ContentError as e:
            raise ContentError(f"QUIZ question {number}: {e}") from None

    @staticmethod
    def parse_all(data: Any) -> tuple[Question, ...]:
        low, high = QUIZ_QUESTIONS
        if not isinstance(data, list) or not low <= len(data) <= high:
            raise ContentError(f"QUIZ must be a list of {low} to {high} questions "
                               f"(got {len(data) if isinstance(data, list) else _short(data)}).")
        return tuple(Question.parse(q, i) for i, q in enumerate(data, 1))


@dataclass(frozen=True)
class Card:
    """A review card beyond the key terms (dpcourse.review): a question and its answer."""

    question: str
    answer: str


@dataclass(frozen=True)
class KeyPoint:
    """One step of the audiobook track (dpcourse.dialogue): a key point, then an analogy to remember it by."""

    point: str
    analogy: str


def _pairs(data: Any, name: str, kind: type, count: tuple[int, int] | None = None) -> tuple:
    """``data``, a list of 2-tuples of sentences, as ``kind`` (:class:`Card` or :class:`KeyPoint`)."""
    shape = "(" + ", ".join(f.name for f in fields(kind)) + ")"
    bad = f"{name} must be a list of {shape} pairs of non-empty strings"
    if not isinstance(data, (list, tuple)):
        raise ContentError(f"{bad}, not {_short(data)}.")
    if count and not count[0] <= len(data) <= count[1]:
        raise ContentError(f"{name} must hold {count[0]} to {count[1]} {shape} pairs (got {len(data)}).")
    for i, pair in enumerate(data, 1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) and x.strip()
                                                                            for x in pair):
            raise ContentError(f"{bad}: entry {i} is {_short(pair)}.")
    return tuple(kind(*pair) for pair in data)


@dataclass(frozen=True)
class LessonAids:
    """Everything shown at the end of one lesson, checked."""

    lesson: str
    title: str
    summary: Summary
    terms: tuple[Term, ...]
    quiz: tuple[Question, ...]
    mnemonic: str  # the memory aid: a line, or a small picture in a code block
    key_points: tuple[KeyPoint, ...]
    cards: tuple[Card, ...]


_PARTS = {
    "TITLE": lambda v: _text(v, "TITLE"),
    "SUMMARY": Summary.parse,
    "TERMS": Term.parse_all,
    "QUIZ": Question.parse_all,
    "MNEMONIC": lambda v: _text(v, "MNEMONIC"),
    "KEY_POINTS": lambda v: _pairs(v, "KEY_POINTS", KeyPoint, KEY_POINTS_RANGE),
    "CARDS": lambda v: _pairs(v, "CARDS", Card),
}


def problems(content: Any) -> list[str]:
    """Every way ``content`` (a content module, or anything with its names) breaks the schema: one line each."""
    found = [f"lacks {name}: every lesson defines {', '.join(REQUIRED)}." for name in REQUIRED
             if not hasattr(content, name)]
    found += _names_assigned_twice(content)
    unknown = sorted(n for n in vars(content) if n.isupper() and n not in _PARTS)
    if unknown:
        found.append(f"defines {', '.join(unknown)}, which the schema does not know: "
                     f"the names are {', '.join(_PARTS)} (a typo?).")
    for name, part in _PARTS.items():
        if hasattr(content, name):
            try:
                part(getattr(content, name))
            except ContentError as e:
                found.append(str(e))
    return found


def parse(content: Any, lesson: str) -> LessonAids:
    """The typed aids of ``lesson`` from its content module; :class:`ContentError` (one line) if malformed."""
    wrong = problems(content)
    if wrong:
        more = f" ({len(wrong) - 1} more after it: aids.validate lists them)" if len(wrong) > 1 else ""
        raise ContentError(f"dpcourse/aids_content/lesson{lesson}.py: {wrong[0]}{more}")
    optional = {name: _PARTS[name](getattr(content, name, [])) for name in OPTIONAL}
    return LessonAids(lesson=lesson, title=content.TITLE, summary=Summary.parse(content.SUMMARY),
                      terms=Term.parse_all(content.TERMS), quiz=Question.parse_all(content.QUIZ),
                      mnemonic=content.MNEMONIC, key_points=optional["KEY_POINTS"], cards=optional["CARDS"])


def _names_assigned_twice(content: Any) -> list[str]:
    """A name given twice at the top of a content file: Python keeps the second silently, and the first is lost."""
    try:
        tree = ast.parse(inspect.getsource(content))
    except (TypeError, OSError, SyntaxError):  # not a module read from a file (a test's namespace)
        return []
    lines: dict[str, list[int]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in _PARTS:
                    lines.setdefault(target.id, []).append(node.lineno)
    return [f"{name} is assigned {len(at)} times (lines {', '.join(map(str, at))}): only the last counts; "
            "keep one." for name, at in lines.items() if len(at) > 1]
