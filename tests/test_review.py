"""The review deck: FSRS schedule over simulated days, persistence, a corrupt history, two reviewers at once."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fsrs
import pytest

from dpcourse import aids, review

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DPCOURSE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _answer_all(rating: int, now: datetime, lesson: str | None = None) -> int:
    due = review.deck().due(now, lesson)
    for i, card in enumerate(due):
        assert review.record_review(card.id, rating, now + timedelta(seconds=i)) is None
    return len(due)


def test_nothing_is_due_before_a_lesson_is_opened():
    assert review.deck().due(T0) == []
    assert review.record_opened("04", T0) is None
    cards = review.lesson_cards("04")
    assert [c.id for c in review.deck().due(T0)] == [c.id for c in cards]
    assert len(cards) == len(aids.load("04").TERMS) + len(aids.load("04").CARDS)


def test_schedule_over_simulated_days_matches_fsrs_and_follows_the_answers():
    review.record_opened("02", T0)
    cards = review.lesson_cards("02")
    good, hard, easy, again = cards[0], cards[1], cards[2], cards[3]
    scheduler = fsrs.Scheduler(enable_fuzzing=False)
    reference = {c.id: fsrs.Card(card_id=1, due=T0) for c in (good, hard, easy, again)}
    seen = {c.id: 0 for c in cards}
    now = T0
    for day in range(60):  # one review session a day, for two months: answer what is due
        now = T0 + timedelta(days=day)
        for card in review.deck().due(now):
            rating = {good.id: 3, hard.id: 2, easy.id: 4, again.id: 1}.get(card.id, 3)
            review.record_review(card.id, rating, now)
            seen[card.id] += 1
            if card.id in reference:
                reference[card.id], _ = scheduler.review_card(reference[card.id], fsrs.Rating(rating), now)
    deck = review.deck()
    for card in (good, hard, easy, again):  # the replayed history gives exactly fsrs's own schedule
        assert deck.due_at(card) == reference[card.id].due
    # The worse a card is remembered, the more often it comes back; a forgotten one comes back daily.
    assert seen[easy.id] < seen[good.id] < seen[hard.id] <= seen[again.id] == 60
    assert deck.due_at(good) - now > timedelta(days=7)
    assert deck.due_at(again) - now < timedelta(days=1)


def test_answered_cards_leave_and_come_back_when_due():
    review.record_opened("07", T0)
    n = _answer_all(3, T0)
    assert n > 0 and review.deck().due(T0 + timedelta(minutes=1)) == []
    back = review.deck().due(T0 + timedelta(minutes=11))  # Good on a new card: a 10-minute learning step
    assert len(back) == n
    _answer_all(3, T0 + timedelta(minutes=11))
    assert review.deck().due(T0 + timedelta(hours=20)) == []
    assert len(review.deck().due(T0 + timedelta(days=3))) == n


def test_history_persists_across_processes(fresh_home):
    review.record_opened("05", T0)
    _answer_all(4, T0)
    code = ("from datetime import datetime, timedelta, timezone; from dpcourse import review; "
            "d = review.deck(); t = datetime(2026, 3, 2, 9, tzinfo=timezone.utc); "
            "print(len(d.due(t)), len(d.due(t + timedelta(days=30))), d.reviews, sorted(d.opened))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DPCOURSE_HOME": str(fresh_home)})
    assert out.returncode == 0, out.stderr
    cards = len(review.lesson_cards("05"))
    assert out.stdout.split() == ["0", str(cards), str(cards), "['05']"]
    lines = review.history_path().read_text().splitlines()
    assert len(lines) == 1 + cards and all(json.loads(line)["v"] == 1 for line in lines)


def test_corrupt_history_is_kept_aside_reported_and_salvaged():
    review.record_opened("04", T0)
    _answer_all(3, T0)
    path = review.history_path()
    good = path.read_bytes().splitlines(keepends=True)
    damaged = good[0] + b'{"v": 1, "t": "review", "card": "04/x", "rat\n' + b"\xff\xfe garbage\n" + b"".join(good[1:])
    path.write_bytes(damaged)
    deck = review.deck()
    assert deck.problem and "2 unreadable line(s)" in deck.problem
    aside = [p for p in path.parent.iterdir() if p.name.startswith("history.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged, "the damaged file must be kept byte for byte"
    assert str(aside[0]) in deck.problem
    assert deck.reviews == len(good) - 1 and sorted(deck.opened) == ["04"], "readable answers carried over"
    assert path.read_bytes() == b"".join(good)
    assert review.deck().problem is None  # reported once; the repaired file reads cleanly


def test_unreadable_history_never_breaks_the_lesson(monkeypatch):
    review.history_path().write_bytes(b"\x00\x01 not json at all")
    from IPython.display import display  # noqa: F401  (lesson_aids displays)

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj._repr_mimebundle_()))
    aids.lesson_aids("03", widgets=False)
    text = shown[0]["text/markdown"]
    assert "Review due: " in text and "unreadable" in text and "history.corrupt-" in text


def test_a_failed_write_leaves_the_old_history_whole(monkeypatch):
    review.record_opened("01", T0)
    before = review.history_path().read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(review.os, "replace", crash)
        with pytest.raises(OSError, match="disk full"):
            review.record_review(review.lesson_cards("01")[0].id, 3, T0)
    assert review.history_path().read_bytes() == before
    assert not [p for p in review.history_path().parent.iterdir() if p.suffix == ".tmp"], "temporary file left"


def _reviewer(home: str, card_ids: list[str], rating: int, start, barrier) -> None:
    os.environ["DPCOURSE_HOME"] = home
    barrier.wait()
    for i, card_id in enumerate(card_ids):
        review.record_review(card_id, rating, start + timedelta(seconds=i))


def test_two_reviewers_at_once_keep_both_their_answers(fresh_home):
    review.record_opened("08", T0)
    ids = [c.id for c in review.lesson_cards("08")]
    rounds = (ids * 4)[:30]
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_reviewer, args=(str(fresh_home), rounds, rating, T0 + timedelta(minutes=k), barrier))
             for k, rating in ((0, 3), (1, 2))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    events = [json.loads(line) for line in review.history_path().read_text().splitlines()]
    ratings = [e["rating"] for e in events if e["t"] == "review"]
    assert ratings.count(3) == 30 and ratings.count(2) == 30, "an answer was lost"
    assert review.deck().reviews == 60


def test_terminal_review_saves_each_answer_and_handles_bad_input():
    review.record_opened("00", T0)
    answers = iter(["", "7", "3", "", "1", "", "q"])
    said: list[str] = []
    rated = review.review_terminal(ask=lambda prompt: next(answers), say=said.append, clock=lambda: T0)
    assert rated == 2
    text = "\n".join(said)
    assert "type 1, 2, 3 or 4" in text and "saved (Good)" in text and "saved (Again)" in text
    assert review.deck().reviews == 2


def test_terminal_review_without_lessons_says_what_to_do():
    said: list[str] = []
    assert review.review_terminal(ask=lambda p: "", say=said.append) == 0
    assert "No lessons opened yet" in said[0] and "dpcourse review --open" in said[0]


def test_terminal_review_stops_cleanly_at_end_of_input():
    review.record_opened("00", T0)

    def eof(prompt):
        raise EOFError

    assert review.review_terminal(ask=eof, say=lambda s: None, clock=lambda: T0) == 0


def test_cli_review_status_and_bad_lesson(capsys):
    from dpcourse import cli

    assert cli.main(["review", "--open", "4", "--status"]) == 0
    out = capsys.readouterr().out
    assert "lesson 04:" in out and "due" in out
    assert cli.main(["review", "--lesson", "42"]) == 2
    assert "there is no lesson 42" in capsys.readouterr().out


def test_widget_shows_then_rates():
    pytest.importorskip("ipywidgets")
    review.record_opened("06", T0)
    before = len(review.deck().due())
    ui = review.widget()
    header, face, buttons, note = ui.children
    show, *rate = buttons.children
    assert f"Review due: {before}" in header.value and all(b.disabled for b in rate)
    front = face.value
    show.click()
    assert face.value.startswith(front) and len(face.value) > len(front) and not rate[2].disabled
    rate[2].click()  # Good
    assert review.deck().reviews == 1
    assert f"Review due: {before - 1}" in header.value


def test_lesson_aids_records_the_lesson_and_shows_what_is_due(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj._repr_mimebundle_()))
    aids.lesson_aids("02", widgets=False)
    assert "02" in review.deck().opened
    assert f"Review due: {len(review.lesson_cards('02'))}" in shown[0]["text/markdown"]
    aids.lesson_aids("02", widgets=False)  # running the cell again adds nothing to the history
    assert len(review.history_path().read_text().splitlines()) == 1


def test_confusion_cards_are_in_the_deck():
    text = "\n".join(f"{c.front} {c.back}" for c in review.all_cards().values() if c.kind == "question").lower()
    for needles in (("bytes", "elements"), ("bus bandwidth", "algorithm bandwidth"), ("no_sync",),
                    ("zero", "optimizer state", "gradients", "parameters"), ("reduction='sum'", "mean")):
        assert all(n in text for n in needles), needles


def test_bad_ratings_and_naive_times_are_clear_errors():
    with pytest.raises(ValueError, match="rating must be 1"):
        review.record_review("04/x", 5)
    with pytest.raises(ValueError, match="time zone"):
        review.record_opened("04", datetime(2026, 1, 1))


def test_history_lives_under_dpcourse_home(fresh_home):
    assert review.history_path() == Path(fresh_home) / "review" / "history.jsonl"


def test_aids_review_line_follows_the_review_tab():
    pytest.importorskip("ipywidgets")
    review.record_opened("03", T0)
    n = len(review.deck().due())
    ui = aids.build_widget("03")
    line = ui.children[0].children[1]
    assert f"Review due: {n}</b>" in line.value
    tabs = ui.children[1]
    tab = tabs.children[aids.TAB_TITLES.index("Review")]
    show, *rate = tab.children[2].children
    show.click()
    rate[3].click()  # Easy
    assert f"Review due: {n - 1}</b>" in line.value


def test_cli_review_on_simulated_days(capsys, monkeypatch):
    import io

    from dpcourse import cli

    monkeypatch.setattr("sys.stdin", io.StringIO("\n4\n"))
    assert cli.main(["review", "--open", "04", "--now", "2026-03-02T09:00", "--limit", "1"]) == 0
    assert "saved (Easy)" in capsys.readouterr().out
    assert review.deck().reviews == 1
    cards = len(review.lesson_cards("04"))
    assert cli.main(["review", "--status", "--now", "2026-03-02T09:05"]) == 0
    assert f"lesson 04: {cards} cards, {cards - 1} due" in capsys.readouterr().out
    assert cli.main(["review", "--status", "--now", "2027-03-02T09:00"]) == 0
    assert f"lesson 04: {cards} cards, {cards} due" in capsys.readouterr().out  # a year later, all are due again
    assert cli.main(["review", "--status", "--now", "next tuesday"]) == 2
    assert "--now wants an ISO date" in capsys.readouterr().out
