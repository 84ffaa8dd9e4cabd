"""Spaced review across the course: flashcards come back when the learner is about to forget them.

The deck is every card of every lesson the learner has opened (a lesson counts as opened when its
learning aids cell runs): each key term (term -> definition) and each question of the lesson's
``CARDS`` list, many of which target the confusions learners really have (bytes against elements,
bus against algorithm bandwidth, when ``no_sync`` applies, what ZeRO shards, sum against mean).
When a card is next due is decided by FSRS (the ``fsrs`` package), from the learner's own answers:
Again, Hard, Good or Easy.

The history is one append-only log of events, ``~/.dpcourse/review/history.jsonl`` (or under
``$DPCOURSE_HOME``): ``opened`` (a lesson) and ``review`` (a card, a rating, a time). The schedule is
never stored; it is replayed from the log, so a log merged from two kernels gives one answer.
Every write takes a file lock, re-reads the log, adds its events and replaces the file atomically
(temporary file, fsync, ``os.replace``): two kernels reviewing at once keep both their answers, and
a crash mid-write leaves the old file whole. A log that cannot be read is never overwritten: it is
renamed aside (``history.corrupt-<time>.jsonl``), its readable events are carried over, and the
learner is told where the original is.

In a terminal: ``dpcourse review``. In a notebook: ``from dpcourse.review import widget; widget()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from dpcourse.home import home

__all__ = [
    "RATINGS",
    "Card",
    "Deck",
    "all_cards",
    "deck",
    "due_count",
    "history_path",
    "main",
    "record_opened",
    "record_review",
    "review_terminal",
    "widget",
]

RATINGS = {1: "Again", 2: "Hard", 3: "Good", 4: "Easy"}
VERSION = 1


@dataclass(frozen=True)
class Card:
    id: str       # "04/3f2a91c0d2": lesson, then a hash of the front, stable across runs
    lesson: str
    kind: str     # "term" or "question"
    front: str
    back: str


def _card_id(lesson: str, front: str) -> str:
    return f"{lesson}/{hashlib.sha1(front.encode()).hexdigest()[:10]}"


def lesson_cards(lesson: str) -> list[Card]:
    """The cards of one lesson: its key terms, then its ``CARDS`` questions."""
    from dpcourse import aids

    c = aids.load(lesson)
    cards = [Card(_card_id(lesson, term), lesson, "term", term, definition) for term, definition in c.TERMS.items()]
    cards += [Card(_card_id(lesson, front), lesson, "question", front, back) for front, back in getattr(c, "CARDS", [])]
    return cards


def all_cards() -> dict[str, Card]:
    """Every card of every lesson with aids, by id."""
    from dpcourse.dialogue import lessons

    return {card.id: card for lesson in lessons() for card in lesson_cards(lesson)}


# --------------------------------------------------------------------------- the history file

def history_path() -> Path:
    folder = home() / "review"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "history.jsonl"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("review times must carry a time zone (use datetime.now(timezone.utc))")
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _valid(event: Any) -> bool:
    if not isinstance(event, dict) or event.get("v") != VERSION or not isinstance(event.get("at"), str):
        return False
    try:
        datetime.fromisoformat(event["at"])
    except ValueError:
        return False
    if event.get("t") == "opened":
        return isinstance(event.get("lesson"), str)
    if event.get("t") == "review":
        return isinstance(event.get("card"), str) and event.get("rating") in RATINGS
    return False


def _parse(raw: bytes) -> tuple[list[dict], int]:
    """The readable events of a log, and how many of its lines could not be read."""
    events, bad = [], 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            event = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            bad += 1
            continue
        if _valid(event):
            events.append(event)
        else:
            bad += 1
    return events, bad


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock shared by every process using this history (a separate lock file, since
    the history itself is replaced, not rewritten in place)."""
    with open(path.with_suffix(".lock"), "a+") as lock:
        try:
            import fcntl
        except ImportError:  # Windows: no fcntl; one kernel at a time there
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomic(path: Path, events: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".history-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for event in events:
                f.write(json.dumps(event, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _update(add: list[dict], path: Path | None = None) -> tuple[list[dict], str | None]:
    """Under the lock: read the log, set a damaged one aside, append ``add``, replace the file.

    Returns every event now in the log and, when the log was damaged, the message for the learner.
    """
    path = path or history_path()
    with _locked(path):
        raw = path.read_bytes() if path.exists() else b""
        events, bad = _parse(raw)
        problem = None
        if bad:
            aside = path.with_name(f"history.corrupt-{_now().strftime('%Y%m%dT%H%M%S%f')}.jsonl")
            os.replace(path, aside)  # kept, byte for byte
            problem = (f"your review history {path} had {bad} unreadable line(s); the original is kept at {aside}, "
                       f"and its {len(events)} readable event(s) were carried over.")
        if add or bad:
            events = events + add
            _write_atomic(path, events)
        return events, problem


def _event(kind: str, when: datetime | None, **fields: Any) -> dict:
    return {"v": VERSION, "t": kind, "at": _stamp(when or _now()),
            "by": f"{socket.gethostname()}:{os.getpid()}", **fields}


def record_opened(lesson: str, when: datetime | None = None) -> str | None:
    """Note that the learner opened ``lesson`` (its cards join the deck). Returns a problem message or None."""
    from dpcourse.dialogue import normalise

    name = normalise(lesson)
    events, problem = _update([])
    if any(e["t"] == "opened" and e["lesson"] == name for e in events):
        return problem  # once is enough: re-running a lesson's aids cell does not grow the history
    return _update([_event("opened", when, lesson=name)])[1] or problem


def record_review(card_id: str, rating: int, when: datetime | None = None) -> str | None:
    """Save one answer at once (1 Again, 2 Hard, 3 Good, 4 Easy). Returns a problem message or None."""
    if rating not in RATINGS:
        raise ValueError(f"rating must be 1 (Again), 2 (Hard), 3 (Good) or 4 (Easy), not {rating!r}")
    return _update([_event("review", when, card=card_id, rating=rating)])[1]


# --------------------------------------------------------------------------- the schedule

class Deck:
    """The learner's deck replayed from the history: which lessons are open, each card's FSRS state."""

    def __init__(self, events: list[dict], cards: dict[str, Card] | None = None, problem: str | None = None):
        import fsrs

        self.problem = problem
        self.cards = all_cards() if cards is None else cards
        self.scheduler = fsrs.Scheduler(enable_fuzzing=False)  # replay must give the same schedule every time
        self.opened: dict[str, datetime] = {}
        self.state: dict[str, Any] = {}   # card id -> fsrs.Card, for cards reviewed at least once
        self.reviews = 0
        for event in sorted(events, key=lambda e: (e["at"], e.get("by", ""))):
            at = datetime.fromisoformat(event["at"])
            if event["t"] == "opened":
                self.opened.setdefault(event["lesson"], at)
            elif event["card"] in self.cards:  # a card since removed from the course is skipped, not an error
                card = self.state.get(event["card"]) or fsrs.Card(card_id=self._int_id(event["card"]), due=at)
                self.state[event["card"]], _ = self.scheduler.review_card(card, fsrs.Rating(event["rating"]), at)
                self.reviews += 1

    @staticmethod
    def _int_id(card_id: str) -> int:
        return int(hashlib.sha1(card_id.encode()).hexdigest()[:12], 16)

    def in_deck(self) -> list[Card]:
        return [c for c in self.cards.values() if c.lesson in self.opened]

    def due_at(self, card: Card) -> datetime:
        state = self.state.get(card.id)
        return state.due if state is not None else self.opened[card.lesson]

    def due(self, now: datetime | None = None, lesson: str | None = None) -> list[Card]:
        """Cards due at ``now``: reviewed cards whose time has come (most overdue first), then new ones
        in lesson order."""
        now = now or _now()
        cards = [c for c in self.in_deck() if (lesson is None or c.lesson == lesson) and self.due_at(c) <= now]
        seen = sorted((c for c in cards if c.id in self.state), key=self.due_at)
        new = [c for c in cards if c.id not in self.state]
        return seen + new

    def next_due(self) -> datetime | None:
        times = [self.due_at(c) for c in self.in_deck()]
        return min(times) if times else None


def deck(path: Path | None = None) -> Deck:
    """The learner's deck as the history says now (a damaged history is set aside and reported)."""
    events, problem = _update([], path)
    return Deck(events, problem=problem)


def due_count(now: datetime | None = None) -> int:
    return len(deck().due(now))


# --------------------------------------------------------------------------- terminal

def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    left = moment - now
    if left <= timedelta(0):
        return "now"
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if left.total_seconds() >= seconds:
            n = round(left.total_seconds() / seconds)
            return f"in {n} {unit}{'s' if n != 1 else ''}"
    return "in under a minute"


def review_terminal(limit: int | None = None, lesson: str | None = None, ask: Callable[[str], str] = input,
                    say: Callable[[str], None] = print, clock: Callable[[], datetime] = _now) -> int:
    """Review due cards in a terminal: show the front, Enter shows the back, 1-4 rates. Returns the number rated."""
    from dpcourse.dialogue import normalise

    lesson = normalise(lesson) if lesson else None
    d = deck()
    if d.problem:
        say("note: " + d.problem)
    if not d.opened:
        say("No lessons opened yet. Run the last cell of a lesson (its learning aids), or add one with "
            "`dpcourse review --open 04`.")
        return 0
    due = d.due(clock(), lesson)
    say(f"Review due: {len(due)} card(s) from lessons {', '.join(sorted(d.opened))}. "
        "Enter shows the answer; then 1 Again, 2 Hard, 3 Good, 4 Easy; q stops (every answer is saved at once).")
    rated = 0
    while due and (limit is None or rated < limit):
        card = due[0]
        kind = "key term" if card.kind == "term" else "question"
        say(f"\n[{rated + 1}] lesson {card.lesson} - {kind}\n    {card.front}")
        try:
            if ask("    (recall it, then press Enter) ").strip().lower() == "q":
                break
            say(f"    -> {card.back}")
            while True:
                answer = ask("    How well did you remember? 1 Again  2 Hard  3 Good  4 Easy  (q stops): ")
                answer = answer.strip().lower()
                if answer == "q" or answer in {"1", "2", "3", "4"}:
                    break
                say("    type 1, 2, 3 or 4 (or q to stop)")
        except EOFError:
            break
        if answer == "q":
            break
        problem = record_review(card.id, int(answer), clock())
        if problem:
            say("note: " + problem)
        rated += 1
        d = deck()  # re-read: another kernel may have answered meanwhile
        due = d.due(clock(), lesson)
        say(f"    saved ({RATINGS[int(answer)]}); next time {_when(d.due_at(card), clock())}")
    left = len(d.due(clock(), lesson))
    say(f"\nReviewed {rated} card(s). Still due: {left}. Next card due {_when(d.next_due(), clock())}.")
    return rated


def status_text(now: datetime | None = None) -> str:
    now = now or _now()
    d = deck()
    lines = [f"review history: {history_path()}"]
    if d.problem:
        lines.append("note: " + d.problem)
    if not d.opened:
        return "\n".join(lines + ["no lessons opened yet"])
    for lesson in sorted(d.opened):
        cards = [c for c in d.in_deck() if c.lesson == lesson]
        lines.append(f"lesson {lesson}: {len(cards)} cards, {len(d.due(now, lesson))} due, "
                     f"{sum(c.id in d.state for c in cards)} reviewed at least once")
    lines.append(f"due now: {len(d.due(now))}; {d.reviews} answers so far; next due {_when(d.next_due(), now)}")
    return "\n".join(lines)


def main(args: Any) -> int:
    """``dpcourse review [--open NN] [--lesson NN] [--limit N] [--status] [--now WHEN]``."""
    try:
        clock = _now
        if getattr(args, "now", None):
            try:
                when = datetime.fromisoformat(args.now)
            except ValueError:
                raise ValueError(f"--now wants an ISO date and time such as 2027-01-15T09:00, "
                                 f"not {args.now!r}") from None
            when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
            clock = lambda: when  # noqa: E731
        if args.open:
            for lesson in args.open:
                problem = record_opened(lesson, clock())
                if problem:
                    print("note: " + problem)
            print(f"added lesson(s) {', '.join(args.open)} to your review deck")
        if args.status:
            print(status_text(clock()))
            return 0
        review_terminal(limit=args.limit, lesson=args.lesson, clock=clock)
    except ValueError as e:
        print(f"dpcourse review: {e}")
        return 2
    return 0


# --------------------------------------------------------------------------- notebook widget

def widget(lesson: str | None = None, on_change: Callable[[int], None] | None = None) -> Any:
    """A review widget for the notebook: the due cards one by one, Show answer, then Again/Hard/Good/Easy.

    ``on_change(n)`` is called with the number of due cards whenever it changes (the aids' "Review due" line).
    """
    import html

    import ipywidgets as w

    from dpcourse.dialogue import normalise

    lesson = normalise(lesson) if lesson else None
    header, face, note = w.HTML(), w.HTML(layout=w.Layout(border="1px solid #888", padding="12px",
                                                          min_height="80px", width="95%")), w.HTML()
    show = w.Button(description="Show answer")
    rate = [w.Button(description=f"{name} ({key})", disabled=True) for key, name in RATINGS.items()]
    state: dict[str, Any] = {"card": None}

    def render() -> None:
        d = deck()
        note.value = f"<span style='color:firebrick'>{html.escape(d.problem)}</span>" if d.problem else ""
        due = d.due(lesson=lesson)
        header.value = f"<b>Review due: {len(due)}</b> (lessons opened: {', '.join(sorted(d.opened)) or 'none'})"
        if on_change is not None:
            on_change(len(due))
        state["card"] = due[0] if due else None
        for b in rate:
            b.disabled = True
        if state["card"] is None:
            face.value = f"Nothing due. Next card due {_when(d.next_due(), _now())}."
            show.disabled = True
            return
        c = state["card"]
        face.value = (f"<small>lesson {c.lesson} - {'key term' if c.kind == 'term' else 'question'}</small>"
                      f"<div style='font-size:1.3em'>{html.escape(c.front)}</div>")
        show.disabled = False

    def on_show(_: Any) -> None:
        c = state["card"]
        if c is None:
            return
        face.value += f"<hr><div>{html.escape(c.back)}</div>"
        show.disabled = True
        for b in rate:
            b.disabled = False

    def on_rate(rating: int) -> Callable[[Any], None]:
        def handler(_: Any) -> None:
            if state["card"] is not None:
                record_review(state["card"].id, rating)
            render()
        return handler

    show.on_click(on_show)
    for key, b in zip(RATINGS, rate):
        b.on_click(on_rate(key))
    render()
    return w.VBox([header, face, w.HBox([show, *rate]), note])

