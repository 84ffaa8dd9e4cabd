"""Where the course keeps what belongs to the learner: review history, built audio.

``$DPCOURSE_HOME`` when set (tests point it at a temporary folder), else ``~/.dpcourse``. Nothing
here is ever inside the repository, so ``git pull`` and a fresh checkout never touch it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home"]


def home() -> Path:
    """The learner's course folder (created on first use)."""
    path = Path(os.environ.get("DPCOURSE_HOME") or Path.home() / ".dpcourse").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
