"""The planted submissions in tests/planted/: a file's header, and the code a learner would have written.

A planted file is either a whole submission (``NN_name.py``, or a notebook) or a unified diff
(``NN_name.diff``) against a frozen copy kept beside it, normally ``NN_good.py``: the wrong variant
shows only what it gets wrong. The diff is applied with GNU patch and no fuzz, so a base that has
drifted fails loudly instead of being patched somewhere else. The header, ``# key: value`` lines at
the top (``exercise``, ``expect``, ``names``, ``hangs``, ...), stands in a diff's preamble, which
patch ignores. Bases never point outside tests/planted/: refactoring the library cannot change
what the grader's tests grade.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PLANTED = Path(__file__).resolve().parent / "planted"


def header(path: Path) -> dict[str, str]:
    """The ``# key: value`` lines a planted file starts with."""
    fields = {}
    for line in path.read_text().splitlines():
        m = re.match(r"# (\w[\w-]*): (.*)", line)
        if not m:
            break
        fields[m[1]] = m[2].strip()
    return fields


def planted_files() -> list[Path]:
    """Every planted submission, by name: whole files and diffs together, then the notebooks."""
    return sorted([*PLANTED.glob("*.py"), *PLANTED.glob("*.diff")]) + sorted(PLANTED.glob("*.ipynb"))


def base_of(diff: Path) -> Path:
    """The frozen file a diff applies to: its ``--- NAME`` line, a file beside the diff."""
    names = re.findall(r"^--- (\S+)", diff.read_text(), re.M)
    if len(names) != 1:
        raise ValueError(f"{diff.name}: a planted diff patches exactly one file (found {len(names)} '--- ' lines)")
    name = names[0]
    if "/" in name or not (diff.parent / name).is_file():
        raise ValueError(f"{diff.name}: its base {name!r} must be a file in tests/planted/ itself")
    return diff.parent / name


def apply_diff(diff: Path) -> str:
    """Apply ``diff`` to its base with GNU patch (no fuzz); return the patched text, or raise a one-line error."""
    base = base_of(diff)
    patch = shutil.which("patch")
    if patch is None:
        raise RuntimeError(f"{diff.name}: GNU patch is needed to read planted diffs (apt-get install patch)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / base.name
        done = subprocess.run([patch, "--fuzz=0", "--force", "--quiet", "--no-backup-if-mismatch",
                               "-o", str(out), "-r", str(Path(tmp) / "rejects"), str(base), "-i", str(diff)],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            said = re.sub(r" -- saving rejects.*", "", " ".join((done.stdout + done.stderr).split()))
            raise ValueError(f"{diff.name} does not apply to {base.name} (patch --fuzz=0: {said or done.returncode}); "
                             f"regenerate it with diff -u from an edited copy of {base.name}")
        return out.read_text()


def planted_source(path: Path) -> str:
    """The code of a planted submission: the file itself, or its diff applied to its frozen base."""
    return apply_diff(path) if path.suffix == ".diff" else path.read_text()
