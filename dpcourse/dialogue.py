"""The spoken tracks of a lesson: its student-teacher dialogue and its audiobook script, as text.

A dialogue lives in ``dpcourse/aids_content/dialogues/lessonNN.txt``, one turn a line
(``TEACHER: ...`` / ``STUDENT: ...``, ``#`` comments, a ``# wrong guess`` marker); the format is in
that folder's README. The audiobook reads the content module's ``KEY_POINTS``: each key point, then
its analogy. Both become a list of :class:`Line` (speaker, text), which ``dpcourse.audio`` speaks and
the Listen tab shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DIALOGUES",
    "SPEAKERS",
    "TRACKS",
    "Line",
    "audiobook",
    "check_dialogue",
    "dialogue",
    "dialogue_path",
    "lessons",
    "spoken_words",
    "track",
]

CONTENT = Path(__file__).resolve().parent / "aids_content"
DIALOGUES = CONTENT / "dialogues"
SPEAKERS = ("TEACHER", "STUDENT")
TRACKS = ("dialogue", "audiobook")
WRONG_GUESS = "# wrong guess"
WORDS = (300, 800)  # spoken words: 2-5 minutes at the 2.3-2.7 words/s of our voices, with some slack


@dataclass(frozen=True)
class Line:
    speaker: str  # "TEACHER", "STUDENT", or "NARRATOR" for the audiobook
    text: str


def lessons() -> list[str]:
    """Every lesson that has learning aids: ``["00", "01", ..., "06b", ...]``, in course order."""
    return sorted(p.stem[len("lesson"):] for p in CONTENT.glob("lesson*.py"))


def normalise(lesson: str) -> str:
    """``4`` / ``"4"`` / ``"04"`` -> ``"04"``; ``"6b"`` -> ``"06b"``; anything else is a clear error."""
    text = str(lesson).strip().lower()
    m = re.fullmatch(r"(\d{1,2})([a-z]?)", text)
    if not m:
        raise ValueError(f"{lesson!r} is not a lesson number: use one of {', '.join(lessons())}")
    name = m[1].zfill(2) + m[2]
    if name not in lessons():
        raise ValueError(f"there is no lesson {name}: use one of {', '.join(lessons())}")
    return name


def dialogue_path(lesson: str) -> Path:
    return DIALOGUES / f"lesson{normalise(lesson)}.txt"


def parse(text: str, where: str = "dialogue") -> list[Line]:
    """The spoken lines of a dialogue file's text; a clear ``ValueError`` for a malformed line."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        speaker, sep, said = line.partition(":")
        if not sep or speaker not in SPEAKERS or not said.strip():
            raise ValueError(f"{where}, line {number}: expected 'TEACHER: ...' or 'STUDENT: ...', got {raw[:60]!r}")
        lines.append(Line(speaker, said.strip()))
    return lines


def dialogue(lesson: str) -> list[Line]:
    """The student-teacher dialogue of ``lesson`` as spoken lines."""
    path = dialogue_path(lesson)
    if not path.exists():
        raise ValueError(f"lesson {normalise(lesson)} has no dialogue yet: "
                         f"write {path.relative_to(CONTENT.parent.parent)} "
                         f"(format in {DIALOGUES.relative_to(CONTENT.parent.parent)}/README.md)")
    return parse(path.read_text(encoding="utf-8"), where=str(path.name))


def audiobook(lesson: str) -> list[Line]:
    """The audiobook script of ``lesson``: its title, then every key point followed by its analogy."""
    from dpcourse import aids

    c = aids.load(normalise(lesson))
    points = getattr(c, "KEY_POINTS", None)
    if not points:
        raise ValueError(f"dpcourse/aids_content/lesson{normalise(lesson)}.py has no KEY_POINTS for the audiobook")
    lines = [Line("NARRATOR", f"{spoken(c.TITLE)}. The key points, each with a picture to remember it by.")]
    for i, (point, analogy) in enumerate(points, 1):
        lines.append(Line("NARRATOR", f"Point {i}. {point}"))
        lines.append(Line("NARRATOR", analogy))  # analogies open with "Like ...", "Think of ...": said as written
    return lines


def track(lesson: str, kind: str = "dialogue") -> list[Line]:
    if kind not in TRACKS:
        raise ValueError(f"unknown track {kind!r}: use {' or '.join(TRACKS)}")
    return dialogue(lesson) if kind == "dialogue" else audiobook(lesson)


def spoken(text: str) -> str:
    """A title or line as it should be said: 'Lesson 04 - x' -> 'Lesson 4, x'."""
    text = re.sub(r"\bLesson 0(\d)", r"Lesson \1", text)
    return text.replace(" - ", ", ").replace(" — ", ", ")


def spoken_words(lines: list[Line]) -> int:
    return sum(len(line.text.split()) for line in lines)


def check_dialogue(lesson: str) -> list[str]:
    """Everything wrong with the dialogue of ``lesson`` against the folder's README (empty when fine)."""
    path = dialogue_path(lesson)
    if not path.exists():
        return [f"missing {path.name}"]
    text = path.read_text(encoding="utf-8")
    try:
        lines = parse(text, where=path.name)
    except ValueError as e:
        return [str(e)]
    problems = []
    if {line.speaker for line in lines} != set(SPEAKERS):
        problems.append("both TEACHER and STUDENT must speak")
    words = spoken_words(lines)
    if not WORDS[0] <= words <= WORDS[1]:
        problems.append(f"{words} spoken words; a 2-5 minute dialogue has {WORDS[0]}-{WORDS[1]}")
    raw = [r.strip() for r in text.splitlines() if r.strip()]
    guesses = [i for i, r in enumerate(raw) if r.lower() == WRONG_GUESS]
    if not guesses:
        problems.append("no '# wrong guess' line before the student's wrong guess")
    for i in guesses:
        after = raw[i + 1:i + 3]
        if len(after) < 2 or not after[0].startswith("STUDENT:") or not after[1].startswith("TEACHER:"):
            problems.append(f"'# wrong guess' (line {i + 1}) must be followed by a STUDENT line, "
                            "then the TEACHER's correction")
    if any(sym in line.text for line in lines for sym in ("`", "**", "$", "\\(")):
        problems.append("markdown or code symbols in a spoken line: write it as it is said")
    return problems
