"""A Jupyter server for the tests that talk to one (``test_cli.py``, ``test_browser*.py``).

``serve`` starts the command on a free localhost port with a token, waits until the server answers,
and shuts it down afterwards: politely through its API first, then by killing its process group, so
no kernel or server outlives the test. ``open_page`` opens a notebook of it in headless Chromium.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(command: Callable[[int, str], list[str]], log_path: Path, what: str, env: dict, cwd: Path | None = None,
          start_timeout: float = 60) -> Iterator[tuple[str, str]]:
    """Run ``command(port, token)``; yield ``(base_url, token)`` once ``/api/status`` answers."""
    token, port = "t" + os.urandom(8).hex(), free_port()
    log = open(log_path, "wb")
    server = subprocess.Popen(command(port, token), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # its own group: one kill reaches its kernels too
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not start:\n" + log_path.read_text()[-3000:]) from None
                time.sleep(0.3)
        yield base, token
    finally:
        try:  # shut down kernels and server properly, then make sure
            stop = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(stop, timeout=10)
            server.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()


@contextlib.contextmanager
def open_page(base: str, token: str, path: str, chromium: str, flags: list[str]) -> Iterator:
    """A Playwright page of headless Chromium on JupyterLab's view of ``path`` (relative to the root)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{path}?reset&token={token}")
            yield page
        finally:
            browser.close()
