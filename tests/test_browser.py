"""The course as a learner meets it: JupyterLab in a real (headless) browser.

Starts JupyterLab the way ``dpcourse lab`` does (same command line and config, on a copy of the
course) on a free localhost port with a token and throw-away settings; opens lesson 00 and runs it
through the UI; lands on the course map, clicks its link to an exercise, runs that, and checks what
a learner would see: no question on first start, every cell's output. Screenshots go to
``screenshots/browser/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from jupyter_server import open_page, serve

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "screenshots" / "browser"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic", "--disable-default-apps"]

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("no_leftover_processes")]


def _missing(what: str) -> None:
    """Outside CI a missing browser skips, with the reason; in CI it fails: CI installs it."""
    message = f"browser test needs {what}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must install it: see .ci/run)")
    pytest.skip(message)


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 with a token, serving copies of the course notebooks."""
    if CHROMIUM is None:
        _missing("Debian's chromium (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _missing("playwright (pip install -e '.[browser]')")
    from dpcourse.lab import lab_command, lab_env

    work = tmp_path / "course"  # a copy in the course's layout: the learner's files are never touched
    for rel in ("lessons/00_setup.ipynb", "lessons/index.ipynb", "exercises/02_minibatch_math.ipynb",
                "solutions/02_minibatch_math.ipynb"):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, work / rel)
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # render every cell (no lazy windowing), so the page holds all outputs
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    # nothing about news here: dpcourse lab's own config must keep the first start quiet
    env = lab_env({**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
                   "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
                   "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
                   "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")})

    def command(port: int, token: str) -> list[str]:
        return lab_command(work, ["--no-browser", "--ip=127.0.0.1", f"--port={port}",
                                  f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0",
                                  "--LabApp.news_url=",
                                  "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"], as_root=True)

    with serve(command, tmp_path / "lab.log", "JupyterLab", env) as (base, token):
        yield base, token, work


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def _run_all_and_save(page, path: Path, timeout_s: float) -> dict:
    """Clear the stored outputs, run every cell through the Run menu, wait, save; return the saved JSON."""
    page.locator(".jp-Notebook .jp-Cell:visible").first.wait_for(timeout=60_000)  # the open tab's, not another's
    page.locator(".jp-NotebookPanel-toolbar:visible").get_by_text("Python 3").first.wait_for(timeout=60_000)
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)
    _menu(page, "Edit", "Clear Outputs of All Cells")
    _menu(page, "Run", "Run All Cells")
    prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt")
    busy = lambda: any("*" in t for t in prompts.all_inner_texts())  # noqa: E731
    deadline = time.monotonic() + 20
    while not busy() and time.monotonic() < deadline:
        time.sleep(0.1)
    deadline, quiet_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:  # done when nothing has been queued or running for 2 s
        if busy():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 4:
            break
        time.sleep(0.25)
    else:
        page.screenshot(path=str(SHOTS / f"timeout_{path.stem}.png"))
        pytest.fail(f"{path.name}: cells still running after {timeout_s} s")
    before = path.stat().st_mtime
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 20
    while path.stat().st_mtime == before and time.monotonic() < deadline:
        time.sleep(0.2)
    return json.loads(path.read_text())


def test_lesson_00_and_an_exercise_in_jupyterlab(lab):
    base, token, work = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with open_page(base, token, "lessons/00_setup.ipynb", CHROMIUM, FLAGS) as page:
        saved = _run_all_and_save(page, work / "lessons" / "00_setup.ipynb", timeout_s=150)

        code = [c for c in saved["cells"] if c["cell_type"] == "code"]
        assert all(c["execution_count"] for c in code), "Run All stopped before the last cell"
        errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
        assert not errors, f"cells ended in an error: {[e['ename'] + ': ' + e['evalue'] for e in errors]}"
        text = "".join("".join(o.get("text", "")) for c in code for o in c["outputs"])
        assert "[rank 0] hello: I am rank 0 of 2" in text and "[rank 1] hello: I am rank 1 of 2" in text
        page.get_by_text("[rank 1] hello: I am rank 1 of 2").first.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "01_lesson00_rank_lines.png"))

        widgets = page.locator(".jp-OutputArea-output .jupyter-widgets")
        widgets.first.wait_for(timeout=30_000)
        widgets.first.scroll_into_view_if_needed()
        assert widgets.count() > 0
        page.screenshot(path=str(SHOTS / "02_lesson00_widget.png"))
        body = page.locator(".jp-Notebook").inner_text()
        assert "Error displaying widget" not in body and "Loading widget..." not in body

        # where a learner lands: the course map; its link to the exercise opens the exercise
        page.goto(f"{base}/?reset&token={token}")
        link = page.locator('.jp-RenderedMarkdown a[href*="exercises/02_minibatch_math.ipynb"]').first
        link.wait_for(timeout=60_000)
        assert "/lab/tree/lessons/index.ipynb" in page.url, page.url
        page.screenshot(path=str(SHOTS / "03_course_map.png"))
        assert page.get_by_text("official Jupyter news").count() == 0, "first start asked about news"
        link.click()
        tab = page.locator(".lm-TabBar-tab", has_text="02_minibatch_math.ipynb")
        tab.first.wait_for(timeout=60_000)
        page.locator(".jp-Notebook .jp-RenderedMarkdown h1", has_text="Exercise 02").first.wait_for(timeout=60_000)
        assert page.get_by_text("File Load Error").count() == 0 and page.get_by_text("404").count() == 0
        saved = _run_all_and_save(page, work / "exercises" / "02_minibatch_math.ipynb", timeout_s=120)
        check_cells = [c for c in saved["cells"] if c["cell_type"] == "code" and "check(" in "".join(c["source"])]
        assert check_cells and check_cells[0]["execution_count"], "the self-check did not run"
        report = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                         for o in check_cells[0]["outputs"])
        assert "NotImplementedError" in report, report[:2000]
        page.get_by_text("NotImplementedError").first.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "04_exercise02_self_check.png"))
        assert "CheckResult(" not in report  # check() printed its summary; nothing more shows
