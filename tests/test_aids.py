"""The learning aids: every lesson has well-formed content, the widgets build, the fallback renders."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from dpcourse import aids

ROOT = Path(__file__).resolve().parent.parent
CONTENT = ROOT / "dpcourse" / "aids_content"


def lesson_numbers() -> list[str]:
    """Lesson numbers of the notebooks in lessons/ (``08_scaling.ipynb`` -> ``"08"``)."""
    return sorted({m[1] for p in (ROOT / "lessons").glob("*.ipynb") if (m := re.match(r"(\d\d)_", p.name))})


def content_numbers() -> list[str]:
    return sorted(p.stem[len("lesson"):] for p in CONTENT.glob("lesson[0-9][0-9].py"))


def test_every_lesson_notebook_has_aids_content():
    missing = [n for n in lesson_numbers() if n not in content_numbers()]
    assert not missing, f"lessons without dpcourse/aids_content/lessonNN.py: {missing}"


@pytest.mark.parametrize("lesson", content_numbers())
def test_content_is_well_formed(lesson):
    c = aids.load(lesson)
    assert aids.validate(c) == []
    assert set(c.SUMMARY) == {"Basic", "Medium", "Detailed"}
    assert len(c.SUMMARY["Basic"]) < len(c.SUMMARY["Detailed"]), "Detailed should say more than Basic"
    assert len(c.TERMS) >= 4
    assert 3 <= len(c.QUIZ) <= 5
    for q in c.QUIZ:
        assert 0 <= q["answer"] < len(q["choices"])
        assert len(set(q["choices"])) == len(q["choices"]), f"repeated choice in {q['q']!r}"
    assert c.MNEMONIC.strip()


@pytest.mark.parametrize("lesson", content_numbers())
def test_static_fallback_renders_everything(lesson):
    c = aids.load(lesson)
    text = aids.as_markdown(lesson)
    for level in aids.LEVELS:
        assert c.SUMMARY[level][:40] in text
    for term in c.TERMS:
        assert f"**{term}**" in text
    for q in c.QUIZ:
        assert q["q"] in text and q["choices"][q["answer"]] in text


@pytest.mark.parametrize("lesson", content_numbers())
def test_widget_builds_with_all_parts(lesson):
    pytest.importorskip("ipywidgets")
    ui = aids.build_widget(lesson)
    tabs = ui.children[1]
    assert [tabs.get_title(i) for i in range(len(tabs.children))] == [
        "Summary", "Key terms", "Flashcards", "Quiz", "Remember it by", "Listen", "Review"]
    c = aids.load(lesson)
    toggle = tabs.children[0].children[0]
    assert list(toggle.options) == ["Basic", "Medium", "Detailed"]
    quiz = tabs.children[3]
    assert len(quiz.children) == len(c.QUIZ) + 1  # one row per question, then the score


def test_summary_toggle_switches_level():
    ui = aids.build_widget("08")
    summary = ui.children[1].children[0]
    toggle, shown = summary.children
    toggle.value = "Detailed"
    assert aids.load("08").SUMMARY["Detailed"] in str(shown.outputs)
    toggle.value = "Basic"
    assert aids.load("08").SUMMARY["Basic"] in str(shown.outputs)
    assert aids.load("08").SUMMARY["Detailed"] not in str(shown.outputs)


def test_flashcards_flip_and_move():
    ui = aids.build_widget("08")
    face, buttons = ui.children[1].children[2].children
    prev, flip, nxt, counter = buttons.children
    terms = list(aids.load("08").TERMS.items())
    assert terms[0][0] in face.value and "card 1 of" in counter.value
    flip.click()
    assert terms[0][1][:20] in face.value.replace("&#x27;", "'")
    nxt.click()
    assert terms[1][0] in face.value and "card 2 of" in counter.value
    prev.click()
    prev.click()
    assert terms[-1][0] in face.value  # wraps around


def test_quiz_gives_instant_feedback():
    c = aids.load("08")
    ui = aids.build_widget("08")
    quiz = ui.children[1].children[3]
    first = quiz.children[0]
    radio, feedback = first.children[1], first.children[2]
    wrong = next(j for j in range(len(c.QUIZ[0]["choices"])) if j != c.QUIZ[0]["answer"])
    radio.value = wrong
    assert "Not quite" in feedback.value
    radio.value = c.QUIZ[0]["answer"]
    assert "Right" in feedback.value
    assert "1 of" in quiz.children[-1].value


def test_check_answer():
    q = {"q": "?", "choices": ["a", "b"], "answer": 1, "why": "because"}
    assert aids.check_answer(q, 1) == (True, "Right. because")
    assert aids.check_answer(q, 0)[0] is False


def test_display_bundle_always_carries_markdown():
    bundle = aids._Aids("08", aids.build_widget("08"))._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/markdown"] == aids.as_markdown("08")
    static = aids._Aids("08", None)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in static and "text/markdown" in static


def test_widgets_not_live_outside_a_kernel(monkeypatch):
    monkeypatch.delenv("DPCOURSE_WIDGETS", raising=False)
    assert aids.widgets_live() is False
    monkeypatch.setenv("DPCOURSE_WIDGETS", "1")
    assert aids.widgets_live() is True


def test_missing_or_malformed_content_is_a_clear_error():
    with pytest.raises(ValueError, match="no learning aids for lesson '99'"):
        aids.load("99")
    bad = SimpleNamespace(TITLE="t", SUMMARY={"Basic": "x"}, TERMS={"a": "b"},
                          QUIZ=[{"q": "?", "choices": ["a"], "answer": 3, "why": ""}], MNEMONIC="m")
    bad.CARDS = [("a question without an answer",)]
    problems = aids.validate(bad)
    assert any("CARDS must be a list of (question, answer) pairs" in p for p in problems)
    assert any("SUMMARY" in p for p in problems)
    assert any("TERMS" in p for p in problems)
    assert any("QUIZ" in p for p in problems)


@pytest.mark.parametrize("lesson", lesson_numbers())
def test_lesson_ends_with_its_own_aids(lesson):
    import nbformat

    path = next((ROOT / "lessons").glob(f"{lesson}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    heading, aids_cell = nb.cells[-2], nb.cells[-1]
    assert heading.cell_type == "markdown" and "Summary, key terms and self-check" in heading.source
    assert aids_cell.cell_type == "code" and f'lesson_aids("{lesson}")' in aids_cell.source
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state: rebuild it with tools/nb.py"
