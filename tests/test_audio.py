"""The Listen tracks: every lesson has a dialogue in the folder's format and an audiobook script."""

from __future__ import annotations

import pytest

from dpcourse import dialogue

LESSONS = dialogue.lessons()


def test_lessons_include_every_aids_module():
    assert "00" in LESSONS and "06b" in LESSONS
    assert LESSONS == sorted(LESSONS)


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_has_a_dialogue(lesson):
    assert dialogue.check_dialogue(lesson) == [], f"dialogues/lesson{lesson}.txt"
    lines = dialogue.dialogue(lesson)
    assert lines[0].speaker == "TEACHER"
    assert sum(line.speaker == "STUDENT" for line in lines) >= 5, "the student should ask, not only listen"


def test_malformed_dialogue_line_is_a_clear_error():
    with pytest.raises(ValueError, match="line 2: expected 'TEACHER: ...'"):
        dialogue.parse("TEACHER: hello\nPROFESSOR: hi\n", where="x.txt")
    assert dialogue.parse("# comment\n\nSTUDENT: why?\n") == [dialogue.Line("STUDENT", "why?")]


def test_lesson_names_normalise_and_refuse_nonsense():
    assert dialogue.normalise("4") == "04" and dialogue.normalise("6b") == "06b"
    with pytest.raises(ValueError, match="there is no lesson 99"):
        dialogue.normalise("99")
    with pytest.raises(ValueError, match="not a lesson number"):
        dialogue.normalise("../etc")
