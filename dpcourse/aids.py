"""Learning aids at the end of every lesson: a three-level summary, key terms, flashcards, a quiz, a mnemonic.

Each lesson's content lives in ``dpcourse/aids_content/lessonNN.py`` as plain data, checked at load
against the typed schema in ``dpcourse/aids_content/schema.py`` (one dataclass per part):

    TITLE = "Lesson 01 - one device"
    SUMMARY = {"Basic": "...", "Medium": "...", "Detailed": "..."}   # markdown strings
    TERMS = {"throughput": "samples processed per second", ...}     # term -> one-line definition (>= 4)
    QUIZ = [{"q": "...", "choices": ["...", "..."], "answer": 0, "why": "..."}, ...]  # 3-5 questions
    MNEMONIC = "..."                                                  # a line or a small picture
    KEY_POINTS = [("point", "analogy"), ...]   # the audiobook track (dpcourse.dialogue); 3-6 pairs
    CARDS = [("question", "answer"), ...]      # review cards beyond the key terms (dpcourse.review)

Each lesson also has a student-teacher dialogue, ``dpcourse/aids_content/dialogues/lessonNN.txt``.

``lesson_aids("01")`` shows them. In a live notebook (JupyterLab, Notebook, VS Code) that is a set of
widgets: the summary behind Basic/Medium/Detailed toggle buttons, flashcards over the key terms, a
quiz that answers at once, the mnemonic, a Listen tab (the dialogue and the audiobook: player and
transcript, or the transcript and how to get audio) and a Review tab (due flashcards of every lesson
opened, ``dpcourse.review``), under a "Review due: N" line. Running the cell records the lesson as
opened, so its cards join the learner's review deck. Where widgets cannot run (headless execution, nbval,
plain IPython) it is static markdown; the widget display carries the same markdown as well, so an
exported HTML page shows the text. Widgets keep no state in the saved notebook.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import psutil

from dpcourse.aids_content.schema import LEVELS, LessonAids, Question, parse, problems

__all__ = ["load", "content", "validate", "lesson_aids", "as_markdown", "build_widget", "check_answer",
           "widgets_live", "LEVELS"]

TAB_TITLES = ("Summary", "Key terms", "Flashcards", "Quiz", "Remember it by", "Listen", "Review")
_HEADLESS_PARENTS = ("pytest", "nbval", "nbconvert", "nbclient", "papermill", "tools/nb.py", "py.test")
_FRONT_ENDS = ("jupyter-lab", "jupyter lab", "jupyterlab", "jupyter-server", "jupyter_server", "jupyter-notebook",
               "jupyter notebook", "voila", "vscode", "code-server")


def load(lesson: str) -> ModuleType:
    """The content module of ``lesson`` (``"01"``), once it has passed the schema (for code that reads its names)."""
    return _module_and_content(lesson)[0]


def content(lesson: str) -> LessonAids:
    """The aids of ``lesson`` (``"01"``), typed and checked: a malformed file is a one-line ``ValueError``."""
    return _module_and_content(lesson)[1]


def _module_and_content(lesson: str) -> tuple[ModuleType, LessonAids]:
    lesson = str(lesson).zfill(2)
    try:
        module = importlib.import_module(f"dpcourse.aids_content.lesson{lesson}")
    except ModuleNotFoundError:
        raise ValueError(f"no learning aids for lesson {lesson!r}: "
                         f"expected dpcourse/aids_content/lesson{lesson}.py") from None
    return module, parse(module, lesson)


def validate(module: Any) -> list[str]:
    """Everything wrong with a content module, one line each (empty when it is well formed)."""
    return problems(module)


def review_line(due: int | None, problem: str | None = None) -> str:
    """The "Review due: N" line shown above the aids (markdown)."""
    if due is None:
        line = "**Review due:** unknown (the review history could not be read)."
    else:
        line = (f"**Review due: {due}** card{'s' if due != 1 else ''} from the lessons you have opened. "
                "Review them with `dpcourse review` in a terminal, or in the Review tab (live notebook).")
    return line + (f" Note: {problem}" if problem else "")


def as_markdown(lesson: str, review: str | None = None) -> str:
    """All the aids of ``lesson`` as one markdown document (answers folded away), then the Listen section;
    ``review`` (a :func:`review_line`) goes under the title."""
    from dpcourse import listen

    c = content(lesson)
    parts = [f"## Summary: {c.title}"] + ([review] if review else [])
    for level in LEVELS:
        parts.append(f"**{level}.** {c.summary.level(level)}")
    parts.append("### Key terms")
    parts.append(_terms_markdown(c))
    parts.append("### Check yourself")
    for i, q in enumerate(c.quiz, 1):
        choices = "\n".join(f"   {chr(97 + j)}) {choice}" for j, choice in enumerate(q.choices))
        answer = f"{chr(97 + q.answer)}) {q.choices[q.answer]}. {q.why}"
        parts.append(f"{i}. {q.q}\n{choices}\n\n   <details><summary>answer</summary>{answer}</details>")
    parts.append(f"### Remember it by\n{c.mnemonic}")
    parts.append(listen.markdown(lesson))
    return "\n\n".join(parts)


def _terms_markdown(c: LessonAids) -> str:
    return "\n".join(f"- **{t.term}**: {t.definition}" for t in c.terms)


def check_answer(question: Question, choice: int) -> tuple[bool, str]:
    """Whether ``choice`` (an index) answers ``question``, and the feedback a learner sees."""
    right = choice == question.answer
    if right:
        return True, f"Right. {question.why}"
    return False, "Not quite: think again, or pick another answer to see why it is right."


# --------------------------------------------------------------------------- widgets

def widgets_live() -> bool:
    """True when this code runs in a notebook kernel with a front end that can show widgets.

    ``DPCOURSE_WIDGETS=0`` or ``=1`` decides outright. Otherwise widgets need ipywidgets and a
    Jupyter kernel started by a front end (JupyterLab, Notebook, VS Code); a kernel started by a
    headless runner (pytest/nbval, nbconvert, nbclient, papermill, ``tools/nb.py``) gets the static
    markdown, so saved output stays plain and stable.
    """
    forced = os.environ.get("DPCOURSE_WIDGETS")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    return _started_by_front_end()


def _started_by_front_end() -> bool:
    """True when the process that started this kernel is a Jupyter server or an editor that
    renders widgets (JupyterLab, Notebook, VS Code), not a headless runner (pytest, nbclient)."""
    cmdline = _parent_cmdline()
    if cmdline is None:  # the parent cannot be read: assume a person is looking
        return True
    if any(word in cmdline for word in _FRONT_ENDS):
        return True
    return not any(word in cmdline for word in _HEADLESS_PARENTS)


def _parent_cmdline() -> str | None:
    """The command line of this process's parent, as one string; None when it cannot be read (the parent
    has gone, or the system will not say)."""
    try:
        return " ".join(psutil.Process(os.getppid()).cmdline())
    except (psutil.Error, OSError):
        return None


def _markdown_output(text: str) -> Any:
    """An Output widget showing ``text`` rendered as markdown."""
    import ipywidgets as w
    from IPython.display import Markdown

    out = w.Output()
    out.append_display_data(Markdown(text))
    return out


def _summary_widget(c: LessonAids) -> Any:
    import ipywidgets as w

    toggle = w.ToggleButtons(options=list(LEVELS), value="Basic", description="Depth:",
                             tooltips=["the idea in a few lines", "the idea and how it works", "the full story"])
    shown = w.Output()

    def show(change: Any = None) -> None:
        shown.outputs = ()
        shown.append_display_data(_markdown_text(c.summary.level(toggle.value)))

    toggle.observe(show, names="value")
    show()
    return w.VBox([toggle, shown])


def _markdown_text(text: str) -> Any:
    from IPython.display import Markdown

    return Markdown(text)


def _flashcards_widget(c: LessonAids) -> Any:
    import ipywidgets as w

    cards = [(t.term, t.definition) for t in c.terms]
    state = {"i": 0, "back": False}
    face = w.HTML(layout=w.Layout(border="1px solid #888", padding="16px", min_height="90px", width="95%"))
    counter = w.Label()
    flip, prev, nxt = w.Button(description="Flip"), w.Button(description="< Previous"), w.Button(description="Next >")

    def render() -> None:
        term, definition = cards[state["i"]]
        face.value = (f"<div style='font-size:1.1em'>{_escape(definition)}</div>" if state["back"]
                      else f"<div style='font-size:1.4em'><b>{_escape(term)}</b></div>"
                      "<i>(say the definition, then flip)</i>")
        counter.value = f"card {state['i'] + 1} of {len(cards)} - {'definition' if state['back'] else 'term'}"

    def on_flip(_: Any) -> None:
        state["back"] = not state["back"]
        render()

    def on_move(step: int) -> Any:
        def handler(_: Any) -> None:
            state["i"] = (state["i"] + step) % len(cards)
            state["back"] = False
            render()
        return handler

    flip.on_click(on_flip)
    prev.on_click(on_move(-1))
    nxt.on_click(on_move(+1))
    render()
    return w.VBox([face, w.HBox([prev, flip, nxt, counter])])


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _quiz_widget(c: LessonAids) -> Any:
    import ipywidgets as w

    score = w.HTML()
    answered: dict[int, bool] = {}
    rows = []

    def update_score() -> None:
        score.value = f"<b>{sum(answered.values())} of {len(c.quiz)} right</b> ({len(answered)} answered)"

    for i, q in enumerate(c.quiz):
        radio = w.RadioButtons(options=[(choice, j) for j, choice in enumerate(q.choices)], value=None,
                               layout=w.Layout(width="auto"))
        feedback = w.HTML()

        def on_pick(change: Any, q: Question = q, i: int = i, feedback: Any = feedback) -> None:
            if change["new"] is None:
                return
            right, text = check_answer(q, change["new"])
            answered[i] = right
            colour = "green" if right else "firebrick"
            feedback.value = f"<span style='color:{colour}'>{_escape(text)}</span>"
            update_score()

        radio.observe(on_pick, names="value")
        rows.append(w.VBox([w.HTML(f"<b>{i + 1}. {_escape(q.q)}</b>"), radio, feedback]))
    update_score()
    return w.VBox(rows + [score])


def build_widget(lesson: str, review: str | None = None) -> Any:
    """The interactive aids of ``lesson`` as one ipywidgets widget: the title and a live "Review due: N" line,
    then tabs (summary, terms, cards, quiz, mnemonic, listen, review); ``review``, the line computed when
    the lesson was opened, adds its note when the history needed attention."""
    import ipywidgets as w

    from dpcourse import listen
    from dpcourse import review as reviewing

    c = content(lesson)
    due_line = w.HTML()
    tabs = w.Tab(children=[_summary_widget(c), _markdown_output(_terms_markdown(c)), _flashcards_widget(c),
                           _quiz_widget(c), _markdown_output(c.mnemonic), listen.listen_widget(lesson),
                           reviewing.widget(on_change=lambda n: setattr(due_line, "value", _review_html(n)))])
    for i, title in enumerate(TAB_TITLES):
        tabs.set_title(i, title)
    note = [_markdown_output(review)] if review and "Note:" in review else []
    return w.VBox([w.VBox([w.HTML(f"<h3>{_escape(c.title)}</h3>"), due_line, *note]), tabs])


def _review_html(due: int) -> str:
    return (f"<b>Review due: {due}</b> card{'s' if due != 1 else ''} from the lessons you have opened: "
            "see the Review tab, or run <code>dpcourse review</code> in a terminal.")


class _Aids:
    """Displays as the widget where a front end can render it, else as markdown (both in one bundle)."""

    def __init__(self, lesson: str, widget: Any | None, review: str | None = None):
        self.lesson, self.widget, self.review = lesson, widget, review

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        bundle = {"text/markdown": as_markdown(self.lesson, self.review),
                  "text/plain": f"learning aids for lesson {self.lesson}"}
        if self.widget is not None:
            widget_bundle = self.widget._repr_mimebundle_()
            bundle.update({k: v for k, v in widget_bundle.items() if k != "text/plain"})
        return bundle


def lesson_aids(lesson: str, widgets: bool | None = None) -> None:
    """Display the aids of ``lesson``: widgets in a live notebook, markdown elsewhere (``widgets`` forces either)."""
    from IPython.display import display

    content(lesson)  # a clear error for a missing or malformed content file, before anything is shown
    review = _open_for_review(lesson)
    use = widgets_live() if widgets is None else widgets
    display(_Aids(lesson, build_widget(lesson, review) if use else None, review))


def _open_for_review(lesson: str) -> str:
    """Record ``lesson`` as opened (its cards join the review deck); the "Review due" line to show.

    A history that cannot be written or read must not break the lesson: the line says so instead.
    """
    from dpcourse import review

    try:
        problem = review.record_opened(lesson)
        deck = review.deck()
        return review_line(len(deck.due()), problem or deck.problem)
    except (OSError, ValueError) as e:
        return review_line(None, f"{type(e).__name__}: {e}")
