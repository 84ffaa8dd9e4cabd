"""Learning aids at the end of every lesson: a three-level summary, key terms, flashcards, a quiz, a mnemonic.

Each lesson's content lives in ``dpcourse/aids_content/lessonNN.py`` as plain data:

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

__all__ = ["load", "validate", "lesson_aids", "as_markdown", "build_widget", "check_answer", "widgets_live"]

LEVELS = ("Basic", "Medium", "Detailed")
TAB_TITLES = ("Summary", "Key terms", "Flashcards", "Quiz", "Remember it by", "Listen", "Review")
_HEADLESS_PARENTS = ("pytest", "nbval", "nbconvert", "nbclient", "papermill", "tools/nb.py", "py.test")
_FRONT_ENDS = ("jupyter-lab", "jupyter lab", "jupyterlab", "jupyter-server", "jupyter_server", "jupyter-notebook",
               "jupyter notebook", "voila", "vscode", "code-server")


def load(lesson: str) -> ModuleType:
    """The content module of ``lesson`` (``"01"``), checked for the fields every lesson has."""
    lesson = str(lesson).zfill(2)
    try:
        module = importlib.import_module(f"dpcourse.aids_content.lesson{lesson}")
    except ModuleNotFoundError:
        raise ValueError(f"no learning aids for lesson {lesson!r}: "
                         f"expected dpcourse/aids_content/lesson{lesson}.py") from None
    problems = validate(module)
    if problems:
        raise ValueError(f"dpcourse/aids_content/lesson{lesson}.py: {problems[0]}")
    return module


def validate(content: Any) -> list[str]:
    """Everything wrong with a content module (empty when it is well formed)."""
    problems = []
    for name in ("TITLE", "SUMMARY", "TERMS", "QUIZ", "MNEMONIC"):
        if not hasattr(content, name):
            problems.append(f"lacks {name}.")
    if problems:
        return problems
    if not isinstance(content.TITLE, str) or not content.TITLE.strip():
        problems.append("TITLE must be a non-empty string.")
    if not isinstance(content.SUMMARY, dict) or set(content.SUMMARY) != set(LEVELS):
        problems.append(f"SUMMARY must have exactly the levels {', '.join(LEVELS)}.")
    elif not all(isinstance(v, str) and v.strip() for v in content.SUMMARY.values()):
        problems.append("every SUMMARY level needs some text.")
    if not isinstance(content.TERMS, dict) or len(content.TERMS) < 4:
        problems.append("TERMS needs at least 4 terms, each mapped to a definition.")
    elif not all(isinstance(k, str) and isinstance(v, str) and k.strip() and v.strip()
                 for k, v in content.TERMS.items()):
        problems.append("every TERMS entry maps a term to a non-empty definition.")
    if not isinstance(content.QUIZ, list) or not 3 <= len(content.QUIZ) <= 5:
        problems.append("QUIZ needs 3 to 5 questions.")
    else:
        for i, q in enumerate(content.QUIZ, 1):
            if not isinstance(q, dict) or not {"q", "choices", "answer", "why"} <= set(q):
                problems.append(f"QUIZ question {i} needs the keys q, choices, answer and why.")
                continue
            if not isinstance(q["choices"], list) or len(q["choices"]) < 2:
                problems.append(f"QUIZ question {i} needs at least 2 choices.")
            elif not isinstance(q["answer"], int) or not 0 <= q["answer"] < len(q["choices"]):
                problems.append(f"QUIZ question {i}: answer must index one of its {len(q['choices'])} choices.")
    if not isinstance(content.MNEMONIC, str) or not content.MNEMONIC.strip():
        problems.append("MNEMONIC must be a non-empty string.")
    for name, what in (("KEY_POINTS", "(point, analogy)"), ("CARDS", "(question, answer)")):
        pairs = getattr(content, name, [])
        if not isinstance(pairs, (list, tuple)) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) and x.strip() for x in p)
                for p in pairs):
            problems.append(f"{name} must be a list of {what} pairs of non-empty strings.")
    return problems


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

    c = load(lesson)
    parts = [f"## Summary: {c.TITLE}"] + ([review] if review else [])
    for level in LEVELS:
        parts.append(f"**{level}.** {c.SUMMARY[level]}")
    parts.append("### Key terms")
    parts += [f"- **{term}**: {definition}" for term, definition in c.TERMS.items()]
    parts.append("### Check yourself")
    for i, q in enumerate(c.QUIZ, 1):
        choices = "\n".join(f"   {chr(97 + j)}) {choice}" for j, choice in enumerate(q["choices"]))
        answer = f"{chr(97 + q['answer'])}) {q['choices'][q['answer']]}. {q.get('why', '')}"
        parts.append(f"{i}. {q['q']}\n{choices}\n\n   <details><summary>answer</summary>{answer}</details>")
    parts.append(f"### Remember it by\n{c.MNEMONIC}")
    parts.append(listen.markdown(lesson))
    return "\n\n".join(parts)


def check_answer(question: dict, choice: int) -> tuple[bool, str]:
    """Whether ``choice`` (an index) answers ``question``, and the feedback a learner sees."""
    right = choice == question["answer"]
    if right:
        return True, f"Right. {question['why']}"
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
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # no /proc (macOS, Windows): assume a person is looking
        return True
    if any(word in cmdline for word in _FRONT_ENDS):
        return True
    return not any(word in cmdline for word in _HEADLESS_PARENTS)


def _markdown_output(text: str) -> Any:
    """An Output widget showing ``text`` rendered as markdown."""
    import ipywidgets as w
    from IPython.display import Markdown

    out = w.Output()
    out.append_display_data(Markdown(text))
    return out


def _summary_widget(c: ModuleType) -> Any:
    import ipywidgets as w

    toggle = w.ToggleButtons(options=list(LEVELS), value="Basic", description="Depth:",
                             tooltips=["the idea in a few lines", "the idea and how it works", "the full story"])
    shown = w.Output()

    def show(change: Any = None) -> None:
        shown.outputs = ()
        shown.append_display_data(_markdown_text(c.SUMMARY[toggle.value]))

    toggle.observe(show, names="value")
    show()
    return w.VBox([toggle, shown])


def _markdown_text(text: str) -> Any:
    from IPython.display import Markdown

    return Markdown(text)


def _flashcards_widget(c: ModuleType) -> Any:
    import ipywidgets as w

    cards = list(c.TERMS.items())
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


def _quiz_widget(c: ModuleType) -> Any:
    import ipywidgets as w

    score = w.HTML()
    answered: dict[int, bool] = {}
    rows = []

    def update_score() -> None:
        score.value = f"<b>{sum(answered.values())} of {len(c.QUIZ)} right</b> ({len(answered)} answered)"

    for i, q in enumerate(c.QUIZ):
        radio = w.RadioButtons(options=[(choice, j) for j, choice in enumerate(q["choices"])], value=None,
                               layout=w.Layout(width="auto"))
        feedback = w.HTML()

        def on_pick(change: Any, q: dict = q, i: int = i, feedback: Any = feedback) -> None:
            if change["new"] is None:
                return
            right, text = check_answer(q, change["new"])
            answered[i] = right
            colour = "green" if right else "firebrick"
            feedback.value = f"<span style='color:{colour}'>{_escape(text)}</span>"
            update_score()

        radio.observe(on_pick, names="value")
        rows.append(w.VBox([w.HTML(f"<b>{i + 1}. {_escape(q['q'])}</b>"), radio, feedback]))
    update_score()
    return w.VBox(rows + [score])


def build_widget(lesson: str, review: str | None = None) -> Any:
    """The interactive aids of ``lesson`` as one ipywidgets widget: the title and a live "Review due: N" line,
    then tabs (summary, terms, cards, quiz, mnemonic, listen, review); ``review``, the line computed when
    the lesson was opened, adds its note when the history needed attention."""
    import ipywidgets as w

    from dpcourse import listen
    from dpcourse import review as reviewing

    c = load(lesson)
    due_line = w.HTML()
    terms = "\n".join(f"- **{term}**: {definition}" for term, definition in c.TERMS.items())
    tabs = w.Tab(children=[_summary_widget(c), _markdown_output(terms), _flashcards_widget(c), _quiz_widget(c),
                           _markdown_output(c.MNEMONIC), listen.listen_widget(lesson),
                           reviewing.widget(on_change=lambda n: setattr(due_line, "value", _review_html(n)))])
    for i, title in enumerate(TAB_TITLES):
        tabs.set_title(i, title)
    note = [_markdown_output(review)] if review and "Note:" in review else []
    return w.VBox([w.VBox([w.HTML(f"<h3>{_escape(c.TITLE)}</h3>"), due_line, *note]), tabs])


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

    load(lesson)  # a clear error for a missing or malformed content file, before anything is shown
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
