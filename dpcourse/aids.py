"""Learning aids at the end of every lesson: a three-level summary, key terms, a quiz, a mnemonic.

Each lesson's content lives in ``dpcourse/aids_content/lessonNN.py`` as plain data:

    TITLE = "Lesson 01 - one device"
    SUMMARY = {"Basic": "...", "Medium": "...", "Detailed": "..."}   # markdown strings
    TERMS = {"throughput": "samples processed per second", ...}     # term -> one-line definition
    QUIZ = [{"q": "...", "choices": ["...", "..."], "answer": 0, "why": "..."}, ...]  # 3-5 questions
    MNEMONIC = "..."                                                  # a line or a small picture

``lesson_aids("01")`` shows them all. (This version renders static markdown; interactive widgets
with the same content and a static fallback come with the learning-aids work.)
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["load", "lesson_aids", "as_markdown"]


def load(lesson: str) -> ModuleType:
    """The content module of ``lesson`` (``"01"``), checked for the fields every lesson has."""
    try:
        module = importlib.import_module(f"dpcourse.aids_content.lesson{lesson}")
    except ModuleNotFoundError:
        raise ValueError(f"no learning aids for lesson {lesson!r}: expected dpcourse/aids_content/lesson{lesson}.py") from None
    for name in ("TITLE", "SUMMARY", "TERMS", "QUIZ", "MNEMONIC"):
        if not hasattr(module, name):
            raise ValueError(f"dpcourse/aids_content/lesson{lesson}.py lacks {name}.")
    return module


def as_markdown(lesson: str) -> str:
    """All the aids of ``lesson`` as one markdown document (answers folded away)."""
    c = load(lesson)
    parts = [f"## Summary: {c.TITLE}"]
    for level in ("Basic", "Medium", "Detailed"):
        parts.append(f"**{level}.** {c.SUMMARY[level]}")
    parts.append("### Key terms")
    parts += [f"- **{term}**: {definition}" for term, definition in c.TERMS.items()]
    parts.append("### Check yourself")
    for i, q in enumerate(c.QUIZ, 1):
        choices = "\n".join(f"   {chr(97 + j)}) {choice}" for j, choice in enumerate(q["choices"]))
        answer = f"{chr(97 + q['answer'])}) {q['choices'][q['answer']]}. {q.get('why', '')}"
        parts.append(f"{i}. {q['q']}\n{choices}\n\n   <details><summary>answer</summary>{answer}</details>")
    parts.append(f"### Remember it by\n{c.MNEMONIC}")
    return "\n\n".join(parts)


def lesson_aids(lesson: str) -> None:
    """Display the summary, key terms, quiz and mnemonic of ``lesson`` in the notebook."""
    from IPython.display import Markdown, display

    display(Markdown(as_markdown(lesson)))
