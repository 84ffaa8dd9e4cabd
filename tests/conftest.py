"""Shared test fixtures."""

from __future__ import annotations

import os
import time

import pytest
from processes import children


@pytest.fixture
def no_leftover_processes():
    """Fail the test if it leaves child processes behind (after a short grace period)."""
    before = children()
    yield
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        left = children() - before
        if not left:
            return
        time.sleep(0.05)
    for pid in left:  # don't let one failure poison the next tests
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    pytest.fail(f"processes left behind: {sorted(left)}")
