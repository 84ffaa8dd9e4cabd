"""The learning aids: every lesson has well-formed content, the widgets build, the fallback renders."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from dpcourse import aids, aids_content
from dpcourse.aids_content.schema import Question

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
    assert aids.validate(aids.load(lesson)) == []
    c = aids.content(lesson)
    assert len(c.summary.basic) < len(c.summary.medium) < len(c.summary.detailed), "each level says more"
    assert len(c.terms) >= 4
    assert 3 <= len(c.quiz) <= 5
    for q in c.quiz:
        assert 0 <= q.answer < len(q.choices)
        assert len(set(q.choices)) == len(q.choices), f"repeated choice in {q.q!r}"
    assert c.mnemonic.strip() and 3 <= len(c.key_points) <= 6


@pytest.mark.parametrize("lesson", content_numbers())
def test_typed_content_is_what_the_file_says(lesson):
    module, c = aids.load(lesson), aids.content(lesson)
    assert c.title == module.TITLE and c.mnemonic == module.MNEMONIC
    assert {level: c.summary.level(level) for level in aids.LEVELS} == module.SUMMARY
    assert {t.term: t.definition for t in c.terms} == module.TERMS
    assert [{"q": q.q, "choices": list(q.choices), "answer": q.answer, "why": q.why} for q in c.quiz] == module.QUIZ
    assert [(k.point, k.analogy) for k in c.key_points] == [tuple(p) for p in module.KEY_POINTS]
    assert [(k.question, k.answer) for k in c.cards] == [tuple(p) for p in getattr(module, "CARDS", [])]


@pytest.mark.parametrize("lesson", content_numbers())
def test_static_fallback_renders_everything(lesson):
    c = aids.content(lesson)
    text = aids.as_markdown(lesson)
    for level in aids.LEVELS:
        assert c.summary.level(level)[:40] in text
    for t in c.terms:
        assert f"**{t.term}**" in text
    for q in c.quiz:
        assert q.q in text and q.choices[q.answer] in text


@pytest.mark.parametrize("lesson", content_numbers())
def test_widget_builds_with_all_parts(lesson):
    pytest.importorskip("ipywidgets")
    ui = aids.build_widget(lesson)
    tabs = ui.children[1]
    assert [tabs.get_title(i) for i in range(len(tabs.children))] == [
        "Summary", "Key terms", "Flashcards", "Quiz", "Remember it by", "Listen", "Review"]
    c = aids.content(lesson)
    toggle = tabs.children[0].children[0]
    assert list(toggle.options) == ["Basic", "Medium", "Detailed"]
    quiz = tabs.children[3]
    assert len(quiz.children) == len(c.quiz) + 1  # one row per question, then the score


def test_summary_toggle_switches_level():
    ui = aids.build_widget("08")
    summary = ui.children[1].children[0]
    toggle, shown = summary.children
    summaries = aids.load("08").SUMMARY
    toggle.value = "Detailed"
    assert summaries["Detailed"] in str(shown.outputs)
    toggle.value = "Basic"
    assert summaries["Basic"] in str(shown.outputs)
    assert summaries["Detailed"] not in str(shown.outputs)


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
    first_question = aids.load("08").QUIZ[0]
    ui = aids.build_widget("08")
    quiz = ui.children[1].children[3]
    first = quiz.children[0]
    radio, feedback = first.children[1], first.children[2]
    wrong = next(j for j in range(len(first_question["choices"])) if j != first_question["answer"])
    radio.value = wrong
    assert "Not quite" in feedback.value
    radio.value = first_question["answer"]
    assert "Right" in feedback.value
    assert "1 of" in quiz.children[-1].value


def test_check_answer():
    q = Question("?", ("a", "b"), 1, "because")
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


@pytest.mark.parametrize("parent, live", [
    (["/usr/bin/python3", "/usr/local/bin/jupyter-lab", "--port=8888"], True),
    (["python", "-m", "jupyter", "lab"], True),
    (["/home/me/.vscode-server/node", "extensionHost"], True),
    (["python", "-m", "pytest", "--nbval-lax", "lessons"], False),
    (["python", "tools/nb.py", "build", "x.py", "x.ipynb"], False),
    (["ipython"], True),  # a person at a console
    (psutil.AccessDenied(1), True),  # the system will not say: assume a person is looking
    (psutil.NoSuchProcess(1), True),
])
def test_front_end_is_told_from_the_parent_command_line(monkeypatch, parent, live):
    class Parent:
        def __init__(self, pid):
            assert pid == os.getppid()

        def cmdline(self):
            if isinstance(parent, Exception):
                raise parent
            return parent

    monkeypatch.setattr(psutil, "Process", Parent)
    assert aids._started_by_front_end() is live


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
    assert all("\n" not in p for p in problems)


def _good_content() -> dict:
    quiz = [{"q": f"question {i}?", "choices": ["yes", "no"], "answer": 0, "why": "because"} for i in range(3)]
    return {"TITLE": "Lesson 98 - a test", "MNEMONIC": "m",
            "SUMMARY": {"Basic": "short", "Medium": "a little longer", "Detailed": "the longest of the three"},
            "TERMS": {f"term {i}": f"definition {i}" for i in range(4)}, "QUIZ": quiz,
            "KEY_POINTS": [("point", "analogy")] * 3, "CARDS": [("front", "back")]}


def _install(source: str, lesson: str, tmp_path: Path, monkeypatch) -> None:
    """``source`` as ``dpcourse/aids_content/lesson<lesson>.py``, for this test only."""
    (tmp_path / f"lesson{lesson}.py").write_text(source)
    monkeypatch.setattr(aids_content, "__path__", [*aids_content.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"dpcourse.aids_content.lesson{lesson}", raising=False)


def _source(content: dict) -> str:
    return "".join(f"{name} = {value!r}\n" for name, value in content.items())


@pytest.mark.parametrize("mistake, message", [
    (lambda c: c["QUIZ"][1].update(answer=2),
     "QUIZ question 2: answer is 2, but it must index one of the 2 choices: 0 to 1."),
    (lambda c: c["QUIZ"][1].update(choices=["yes", "yes"]),
     "QUIZ question 2: choices repeat an answer: make every choice different."),
    (lambda c: c["QUIZ"][0].pop("why"),
     "QUIZ question 1: must be a dict with exactly the keys q, choices, answer, why (got q, choices, answer)."),
    (lambda c: c["SUMMARY"].update(Detailed="too short"),
     "SUMMARY['Detailed'] must say more than SUMMARY['Medium'] (9 characters against 15)."),
    (lambda c: c["TERMS"].update({"term 0": " "}), "TERMS['term 0'] must be a non-empty string, not ' '."),
    (lambda c: c.update(CARDS=[("a question without an answer",)]),
     "CARDS must be a list of (question, answer) pairs of non-empty strings: entry 1 is "),
    (lambda c: c.update(KEY_POINTS=c["KEY_POINTS"][:2]), "KEY_POINTS must hold 3 to 6 (point, analogy) pairs (got 2)."),
    (lambda c: c.update(FLASHCARDS=c.pop("CARDS")), "defines FLASHCARDS, which the schema does not know"),
    (lambda c: c.pop("MNEMONIC"), "lacks MNEMONIC: every lesson defines TITLE, SUMMARY, TERMS, QUIZ, MNEMONIC."),
], ids=["answer", "choices", "keys", "summary", "term", "cards", "key-points", "unknown-name", "missing"])
def test_a_malformed_content_module_fails_to_load_with_one_line(tmp_path, monkeypatch, mistake, message):
    """A content file written with one mistake: loading it names the file, the field and the fix, in one line."""
    content = _good_content()
    mistake(content)
    _install(_source(content), "98", tmp_path, monkeypatch)
    with pytest.raises(ValueError) as error:
        aids.content("98")
    text = str(error.value)
    assert text.startswith("dpcourse/aids_content/lesson98.py: ") and "\n" not in text
    assert message in text
    with pytest.raises(ValueError, match="lesson98.py"):  # the module other code reads is checked as well
        aids.load("98")


def test_well_formed_content_loads(tmp_path, monkeypatch):
    _install(_source(_good_content()), "98", tmp_path, monkeypatch)
    c = aids.content("98")
    assert c.quiz[2].q == "question 2?" and c.cards[0].answer == "back"
    assert c.summary.level("Medium") == "a little longer" and c.terms[3].definition == "definition 3"


def test_a_name_given_twice_in_a_content_file_is_caught(tmp_path, monkeypatch):
    """Python keeps the second of two assignments silently: the schema says so instead of losing the first."""
    content = _good_content()
    _install(_source(content) + f"CARDS = {content['CARDS']!r}\n", "97", tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=r"lesson97.py: CARDS is assigned 2 times \(lines 7, 8\)"):
        aids.content("97")


@pytest.mark.parametrize("lesson", lesson_numbers())
def test_lesson_ends_with_its_own_aids(lesson):
    import nbformat

    path = next((ROOT / "lessons").glob(f"{lesson}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    heading, aids_cell = nb.cells[-2], nb.cells[-1]
    assert heading.cell_type == "markdown" and "Summary, key terms and self-check" in heading.source
    assert aids_cell.cell_type == "code" and f'lesson_aids("{lesson}")' in aids_cell.source
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state: rebuild it with tools/nb.py"
