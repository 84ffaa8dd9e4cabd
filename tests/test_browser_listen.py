"""The Listen tab in a real browser: JupyterLab plays the dialogue and highlights the line being spoken.

Uses the JupyterLab fixture of ``test_browser.py``. A one-cell notebook shows lesson 06b's aids (the
shortest dialogue); with flite and sox here the dialogue is built first, and the test checks that
Chromium decodes the audio (its duration matches the build) and that a ``timeupdate`` highlights
the line at that time. Without them it checks the fallback: the transcript and the line that says
how to get audio. Then it rates one card in the Review tab.
"""

from __future__ import annotations

import re
import shutil

import nbformat
import pytest
from jupyter_server import open_page
from test_browser import CHROMIUM, FLAGS, SHOTS, _run_all_and_save, lab  # noqa: F401  (lab is a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("no_leftover_processes")]


def test_listen_tab_plays_and_highlights(lab):  # noqa: F811
    from dpcourse import audio

    base, token, work = lab
    spoken = audio.build("06b", "dialogue") if shutil.which("flite") and shutil.which("sox") else None
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('from dpcourse.aids import lesson_aids\nlesson_aids("06b")')]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = work / "listen.ipynb"
    nbformat.write(nb, path)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with open_page(base, token, "listen.ipynb", CHROMIUM, FLAGS) as page:
        _run_all_and_save(page, path, timeout_s=90)
        # the aids' own tab bar (JupyterLab's tab for listen.ipynb would match "Listen" too)
        page.locator(".jp-OutputArea-output .lm-TabBar-tabLabel", has_text=re.compile("^Listen$")).first.click()
        page.locator(".dpl-transcript").first.wait_for(timeout=30_000)
        text = page.locator(".jp-Notebook").inner_text()
        assert "Review due: " in text, "the aids lack their Review due line"
        if spoken is None:
            assert "apt-get install flite sox" in text
            page.screenshot(path=str(SHOTS / "listen_fallback.png"))
        else:
            _check_player(page, spoken)
        _check_review_tab(page)


def _check_player(page, spoken: dict) -> None:
    """Chromium decodes the built dialogue, and a timeupdate highlights the line at that time."""
    player = page.locator(".dpl-listen audio").first
    player.wait_for(timeout=30_000)
    assert page.locator(".dpl-listen li[data-start]").count() == len(spoken["lines"])
    duration = player.evaluate("a => new Promise(done => a.readyState >= 1 ? done(a.duration) : "
                               "a.addEventListener('loadedmetadata', () => done(a.duration)))")
    assert abs(duration - spoken["duration_s"]) < 1.0, "the browser does not decode the audio it was given"
    third = spoken["lines"][2]
    player.evaluate(f"a => {{ a.currentTime = {(third['start'] + third['end']) / 2}; "
                    "a.dispatchEvent(new Event('timeupdate')); }")
    now = page.locator(".dpl-listen li.dpl-now")
    assert now.count() == 1, "the line being spoken is not highlighted"
    assert third["text"][:40] in now.inner_text()
    page.screenshot(path=str(SHOTS / "listen_player.png"))


def _check_review_tab(page) -> None:
    """The Review tab: show a card, rate it Good; the answer is saved and the count drops by one."""
    from dpcourse import review

    before = len(review.deck().due())
    page.locator(".jp-OutputArea-output .lm-TabBar-tabLabel", has_text=re.compile("^Review$")).first.click()
    page.get_by_role("button", name="Show answer").first.click()
    page.get_by_role("button", name="Good (3)").first.click()
    page.get_by_text(f"Review due: {before - 1}").first.wait_for(timeout=15_000)
    assert review.deck().reviews == 1, "the kernel did not save the answer to the learner's history"
    page.screenshot(path=str(SHOTS / "review_tab.png"))
