"""nbval over the lessons: lesson 06b needs the optional TensorFlow extra.

Kept at the course's root rather than in lessons/, so the learner's lessons folder holds lessons only
(``dpcourse lab`` also hides conftest.py files from the file browser)."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile

import pytest

# The learner's own course folder (~/.dpcourse: review history, built audio) is never touched by a
# test run: each session, and every nbval kernel it starts (they inherit the environment), gets a
# fresh DPCOURSE_HOME of its own.
os.environ["DPCOURSE_HOME"] = tempfile.mkdtemp(prefix="dpcourse-home-test-")
atexit.register(shutil.rmtree, os.environ["DPCOURSE_HOME"], True)


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("tensorflow") is not None or os.environ.get("CI"):
        return  # CI installs the extra, so there a missing TensorFlow fails loudly
    skip = pytest.mark.skip(reason="lesson 06b needs TensorFlow: pip install -e '.[tensorflow]'")
    for item in items:
        if os.path.basename(str(item.fspath)).startswith("06b_"):
            item.add_marker(skip)
