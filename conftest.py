"""nbval over the lessons: lesson 06b needs the optional TensorFlow extra.

Kept at the course's root rather than in lessons/, so the learner's lessons folder holds lessons only
(``dpcourse lab`` also hides conftest.py files from the file browser)."""

from __future__ import annotations

import importlib.util
import os

import pytest


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("tensorflow") is not None or os.environ.get("CI"):
        return  # CI installs the extra, so there a missing TensorFlow fails loudly
    skip = pytest.mark.skip(reason="lesson 06b needs TensorFlow: pip install -e '.[tensorflow]'")
    for item in items:
        if os.path.basename(str(item.fspath)).startswith("06b_"):
            item.add_marker(skip)
