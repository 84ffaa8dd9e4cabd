"""The instructor's hidden tests: kept outside the package learners install, loaded only by the grader.

A hidden suite is a folder (or a ``.zip`` / ``.tar.gz`` of one) holding ``exNN.py`` files. Each
defines ``extend(suite, visible)``: it adds tests to ``suite`` with ``suite.add(...)``, built from the
``run`` and ``judge`` halves of the visible module ``visible`` (``dpcourse.grading.suites.exNN_slug``) and
parameters of its own. The course repository keeps its hidden suite in ``instructor/suites/``, which
is not part of the ``dpcourse`` package (``pip install dpcourse`` never has it); ``dpcourse grade``
uses it when run from a clone, or the one given with ``--suite DIR|ARCHIVE``.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from dpcourse.grading.framework import SUITE_NAME, suite_modules

__all__ = ["use", "extend", "default_location", "location"]

_STATE: dict = {"path": None, "chosen": False, "cache": {}}


def default_location() -> Path | None:
    """``instructor/suites`` of the clone this package runs from, if there is one."""
    here = Path(__file__).resolve().parents[2] / "instructor" / "suites"
    return here if here.is_dir() else None


def location() -> Path | None:
    """Where hidden tests are read from now (None: visible tests only)."""
    return _STATE["path"] if _STATE["chosen"] else default_location()


def use(source: str | os.PathLike | None) -> Path | None:
    """Read hidden tests from ``source`` (a folder, a .zip or .tar.gz; None: none at all)."""
    _STATE["cache"].clear()
    _STATE["chosen"] = True
    if source is None:
        _STATE["path"] = None
        return None
    src = Path(source)
    if src.is_dir():
        _STATE["path"] = src.resolve()
        return _STATE["path"]
    if not src.is_file():
        raise ValueError(f"--suite {source}: no such folder or archive; give the folder of exNN.py files "
                         "(instructor/suites) or a .zip/.tar.gz of it.")
    target = Path(tempfile.mkdtemp(prefix="dpcourse-hidden-"))
    try:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                z.extractall(target)
        elif tarfile.is_tarfile(src):
            with tarfile.open(src) as t:
                t.extractall(target, filter="data")
        else:
            raise ValueError(f"--suite {source}: not a folder, .zip or .tar.gz.")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ValueError(f"--suite {source}: cannot unpack it ({exc}).") from None
    found = sorted({p.parent for p in target.rglob("ex[0-9][0-9]*.py") if SUITE_NAME.match(p.stem)})
    if not found:
        raise ValueError(f"--suite {source}: holds no exNN.py files.")
    _STATE["path"] = found[0]
    return found[0]


def _hidden_file(folder: Path, exercise: str) -> Path | None:
    """``exNN_stem.py`` (or an older archive's ``exNN.py``) of ``exercise`` in ``folder``, if there is one."""
    for path in sorted(folder.glob(f"ex{exercise}*.py")):
        if SUITE_NAME.match(path.stem):
            return path
    return None


def extend(suite):  # noqa: ANN001, ANN201  (a Suite)
    """``suite`` plus its hidden tests, when a hidden suite is in use (else ``suite`` itself)."""
    folder = location()
    path = None if folder is None else _hidden_file(folder, suite.exercise)
    if path is None:
        return suite
    key = (str(folder), suite.exercise)
    if key not in _STATE["cache"]:
        visible = importlib.import_module(suite_modules()[suite.exercise])
        spec = importlib.util.spec_from_file_location(f"_dpcourse_hidden_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        full = copy.copy(suite)
        full.tests = list(suite.tests)
        module.extend(full, visible)
        _STATE["cache"][key] = full
    return _STATE["cache"][key]
