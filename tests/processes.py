"""Finding the processes a test left behind (imported by tests and by conftest.py).

This test process becomes a child subreaper (as ``dpcourse grade`` does), so an orphaned
grandchild re-parents here and shows up among our children instead of escaping the check.
"""

from __future__ import annotations

import psutil

from dpcourse.processes import become_subreaper

become_subreaper()


def children(pid: int | None = None) -> set[int]:
    """PIDs of live (non-zombie) processes whose parent is ``pid`` (default: this process)."""
    try:
        kids = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return set()
    return {p.pid for p in kids if alive(p.pid)}


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

