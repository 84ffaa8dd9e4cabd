"""The ``dpcourse`` command: ``lab`` serves the whole course, passes Jupyter's options on, asks nothing."""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from jupyter_server import serve
from test_links import notebook_links

from dpcourse import cli, lab

ROOT = Path(__file__).resolve().parent.parent
SERVE_A_CLASS = ["--no-browser", "--port=8888", "--ip=0.0.0.0", "--IdentityProvider.token=s3cret"]


def _exec_line(monkeypatch, argv: list[str]) -> tuple[list[str], dict]:
    """What ``dpcourse ARGV`` would exec, without starting anything."""
    seen = {}

    def fake_execve(path, cmd, env):
        seen.update(path=path, cmd=cmd, env=env)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_execve)
    with pytest.raises(SystemExit):
        cli.main(argv)
    return seen["cmd"], seen["env"]


def test_lab_passes_any_jupyter_option_on_after_the_course_defaults(monkeypatch, capsys):
    cmd, env = _exec_line(monkeypatch, ["lab", *SERVE_A_CLASS])
    assert cmd[:4] == [sys.executable, "-m", "jupyter", "lab"]
    assert cmd[-len(SERVE_A_CLASS):] == SERVE_A_CLASS  # last: an option given here wins over the defaults
    assert f"--ServerApp.root_dir={lab.course_root()}" in cmd
    assert "--LabApp.default_url=/lab/tree/lessons/index.ipynb" in cmd
    out = capsys.readouterr().out
    assert "starting:" in out and "--IdentityProvider.token=..." in out and "s3cret" not in out
    assert str(lab.CONFIG_DIR) in env["JUPYTER_CONFIG_PATH"].split(os.pathsep)


@pytest.mark.parametrize("argv", [["lab", "--", *SERVE_A_CLASS], ["lab", *SERVE_A_CLASS[:2], "--", *SERVE_A_CLASS[2:]]])
def test_a_literal_double_dash_is_dropped(monkeypatch, argv):
    cmd, _ = _exec_line(monkeypatch, argv)
    assert "--" not in cmd and cmd[-len(SERVE_A_CLASS):] == SERVE_A_CLASS


def test_lab_help_is_ours_and_names_how_to_serve_a_class(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["lab", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--ip=0.0.0.0" in out and "--IdentityProvider.token" in out


def test_the_course_root_is_the_folder_with_the_lessons(tmp_path):
    assert lab.course_root() == ROOT or (Path.cwd() / "lessons").is_dir()
    (tmp_path / "lessons").mkdir()
    assert lab.course_root(tmp_path) == tmp_path.resolve()
    assert (lab.course_root(tmp_path / "lessons") / "lessons").is_dir()  # from inside lessons/: the package's course


def test_the_users_own_jupyter_config_path_stays_first():
    env = lab.lab_env({"JUPYTER_CONFIG_PATH": "/mine", "HOME": "/home/x"})
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == ["/mine", str(lab.CONFIG_DIR)]
    assert env["HOME"] == "/home/x"
    page = json.loads((lab.CONFIG_DIR / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"] == {"@jupyterlab/apputils-extension:announcements": True}


def test_other_commands_still_reject_unknown_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["doctor", "--port=8888"])
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture
def served(tmp_path):
    """``dpcourse lab`` itself, as an instructor starts it for a class (on localhost, a free port)."""
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "run"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}

    def command(port: int, token: str) -> list[str]:
        return [sys.executable, "-m", "dpcourse.cli", "lab", "--", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]

    with serve(command, tmp_path / "lab.log", "dpcourse lab", env, cwd=ROOT, start_timeout=90) as (base, token):
        yield base, token, tmp_path / "lab.log"


def _get(base: str, token: str, path: str):
    return urllib.request.urlopen(f"{base}{path}{'&' if '?' in path else '?'}token={token}", timeout=30)


@pytest.mark.usefixtures("no_leftover_processes")
def test_dpcourse_lab_serves_the_course_opens_the_map_and_asks_nothing(served):
    base, token, log = served
    try:  # "/" is where a browser lands: the course map
        urllib.request.build_opener(_NoRedirect).open(f"{base}/?token={token}", timeout=30)
        raise AssertionError("no redirect from /")
    except urllib.error.HTTPError as redirect:
        assert redirect.code in (301, 302) and redirect.headers["Location"].startswith("/lab/tree/lessons/index.ipynb")
    assert "/lab/tree/lessons/index.ipynb" in log.read_text()  # the address it prints for the class
    html = _get(base, token, "/lab").read().decode()
    page = json.loads(re.search(r'id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.DOTALL)[1])
    assert "@jupyterlab/apputils-extension:announcements" in page["disabledExtensions"]  # no "Jupyter news?" question
    assert Path(page["serverRoot"]).resolve() == ROOT

    # every link of the course map opens through the server, resolved from lessons/ as JupyterLab does
    links = notebook_links(ROOT / "lessons" / "index.ipynb")
    assert any(link.startswith("../exercises/") for link in links) and any("../solutions/" in x for x in links)
    for link in links:
        path = (Path("lessons") / link).as_posix()
        path = os.path.normpath(path)
        reply = json.loads(_get(base, token, f"/api/contents/{path}?content=0").read())
        assert reply["type"] == "notebook" and reply["path"] == path, link

    listing = json.loads(_get(base, token, "/api/contents/lessons").read())
    names = {item["name"] for item in listing["content"]}
    assert "index.ipynb" in names and "conftest.py" not in names
    top = {item["name"] for item in json.loads(_get(base, token, "/api/contents/").read())["content"]}
    assert {"lessons", "exercises", "solutions"} <= top and "conftest.py" not in top
