"""``dpcourse lab [JUPYTER OPTION ...]``: JupyterLab on the whole course, opened on the course map.

The server's root is the course folder (``lessons/``, ``exercises/`` and ``solutions/`` side by side),
so every link in the course map and the lessons (``../exercises/04_allreduce.ipynb``) opens its
target. Every option after ``lab`` goes to ``jupyter lab`` unchanged, after the course's defaults, so
an option given there wins (``--port=8888 --ip=0.0.0.0 --no-browser --IdentityProvider.token=...``).

First start asks nothing: JupyterLab's "official Jupyter news?" question comes from its announcements
plugin, which this command turns off through a config folder of its own (``jupyter_config/``, added
to ``JUPYTER_CONFIG_PATH`` for this server only; the user's Jupyter settings are not touched).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

__all__ = ["CONFIG_DIR", "COURSE_MAP", "course_root", "lab_command", "lab_env", "main"]

COURSE_MAP = "lessons/index.ipynb"
CONFIG_DIR = Path(__file__).resolve().parent / "jupyter_config"
# JupyterLab's defaults, plus what a learner has no use for in the file browser
HIDE = ("__pycache__", "*.pyc", "*.pyo", ".DS_Store", "*~", "conftest.py", "*.egg-info")


def course_root(cwd: Path | None = None) -> Path:
    """The course folder: the current one when it holds the lessons, else the one this package sits in."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    for candidate in (cwd, Path(__file__).resolve().parent.parent):
        if (candidate / "lessons").is_dir():
            return candidate.resolve()
    return cwd.resolve()


def lab_command(root: Path, jupyter_args: list[str], as_root: bool = False) -> list[str]:
    """The ``jupyter lab`` command line: the course's defaults, then ``jupyter_args`` (a first ``--`` dropped)."""
    args = list(jupyter_args)
    if "--" in args:  # "dpcourse lab -- --port=8888": the separator is ours, not Jupyter's
        args.remove("--")
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}"]
    if (root / COURSE_MAP).is_file():
        cmd.append(f"--LabApp.default_url=/lab/tree/{COURSE_MAP}")
    cmd += [f"--ContentsManager.hide_globs={glob}" for glob in HIDE]
    if as_root:
        cmd.append("--allow-root")  # JupyterLab refuses to start as root without it
    return cmd + args


def lab_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` with the course's Jupyter config folder added (after the user's own, which still win)."""
    env = dict(os.environ if env is None else env)
    paths = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(paths + [str(CONFIG_DIR)])
    return env


def main(jupyter_args: list[str]) -> int:
    """Replace this process with JupyterLab serving the course."""
    root = course_root()
    if not (root / COURSE_MAP).is_file():
        print(f"dpcourse lab: no {COURSE_MAP} under {root}: serving {root} as it is (run it from the course's "
              "folder to get the course map).", file=sys.stderr)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    cmd = lab_command(root, jupyter_args, as_root)
    shown = [re.sub(r"(?i)(token=).+", r"\1...", arg) for arg in cmd]  # as Jupyter's own log hides it
    print("starting:", " ".join(shown), flush=True)
    os.execve(sys.executable, cmd, lab_env())
    return 0  # not reached
