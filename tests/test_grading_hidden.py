"""Grading that is right: hidden tests stay out of the package, the sandbox holds, the relay counts, and
verdicts do not depend on the draw (issue 16). Fast checks, in this process or one short child each."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from planted_sources import PLANTED, planted_source

from dpcourse.grading import hidden, isolate, relay
from dpcourse.grading.framework import SUITE_NAME, Fail, Judged, get_suite, suite_modules

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = isolate.available()


# --------------------------------------------------------------------------- hidden tests stay hidden

def _hidden_exercises() -> list[str]:
    """The exercises with a hidden suite in instructor/suites/ (``exNN_stem.py``)."""
    return sorted(m[1] for p in (ROOT / "instructor" / "suites").glob("ex*.py") if (m := SUITE_NAME.match(p.stem)))


def _hidden_names() -> dict[str, list[str]]:
    names = {}
    for ex in _hidden_exercises():
        visible = {t.name for t in get_suite(ex, hidden=False).tests}
        full = {t.name for t in get_suite(ex).tests}
        names[ex] = sorted(full - visible)
    return names


def test_hidden_tests_come_from_the_instructor_folder_not_the_package():
    assert hidden.location() == ROOT / "instructor" / "suites"
    assert len(_hidden_exercises()) >= 7 and set(_hidden_exercises()) <= set(suite_modules()), _hidden_exercises()
    names = _hidden_names()
    for ex, extra in names.items():
        assert extra, f"exercise {ex} has no hidden tests"
        suite = get_suite(ex, hidden=False)
        assert all(t.visible for t in suite.tests), f"exercise {ex}: a hidden test inside the package"


def test_the_wheel_learners_install_has_no_hidden_tests(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel, = tmp_path.glob("dpcourse-*.whl")
    with zipfile.ZipFile(wheel) as z:
        files = z.namelist()
        text = "\n".join(z.read(f).decode(errors="replace") for f in files if f.endswith(".py"))
    assert not [f for f in files if "instructor" in f]
    assert any(f.startswith("dpcourse/grading/suites/ex04_allreduce.py") for f in files)  # the visible self-checks ship
    for ex, extra in _hidden_names().items():
        for name in extra:
            assert name not in text, f"hidden test {name!r} of exercise {ex} is in the wheel"
    assert "1001" not in (ROOT / "dpcourse/grading/suites/ex04_allreduce.py").read_text()  # a hidden parameter


def test_suite_from_an_archive_and_bad_suite_arguments(tmp_path):
    archive = tmp_path / "hidden.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("suites/ex04_allreduce.py", "def extend(suite, visible):\n"
                   "    suite.add('archived: 2 ranks, 3 values', visible.run, visible.judge, visible=False,\n"
                   "              params={'world_size': 2, 'shape': [3], 'dtype': 'float64'})\n")
    try:
        hidden.use(archive)
        names = [t.name for t in get_suite("04").tests]
        assert "archived: 2 ranks, 3 values" in names and "4 ranks, 1001 float32 values" not in names
        hidden.use(None)
        assert all(t.visible for t in get_suite("04").tests)
        for bad in (tmp_path / "missing", tmp_path / "hidden.zip.txt"):
            if bad.suffix == ".txt":
                bad.write_text("not an archive")
            with pytest.raises(ValueError, match="--suite"):
                hidden.use(bad)
    finally:
        hidden._STATE.update(path=None, chosen=False)
        hidden._STATE["cache"].clear()


# --------------------------------------------------------------------------- the relay, in this process

def _frame(op: str, arrays: list[np.ndarray], seq: int = 1, ranks=(0, 1), **args) -> tuple[dict, bytes]:
    specs = [[str(a.dtype), list(a.shape)] for a in arrays]
    return ({"seq": seq, "op": op, "group": "g", "ranks": list(ranks), "args": args, "tensors": specs},
            b"".join(a.tobytes() for a in arrays))


def test_relay_counts_refuses_and_names_what_the_ranks_did():
    router = relay.Router(2, allowed=frozenset({"send", "recv", "barrier"}))
    router.handle(0, *_frame("allreduce", [np.ones(4, np.float32)], reduce="SUM"))
    assert router.outbox[-1][1]["error"].startswith("this exercise allows only send/recv")
    assert router.result_stats()[0]["refused"] == {"allreduce": 1}
    # a receive posted before the send; the send completes only when matched (rendezvous)
    router.outbox.clear()
    router.handle(1, *_frame("recv", [], seq=7, peer=0, tag=0, shapes=[["float32", [3]]]))
    assert router.blocked() == {1: ["recv from rank 0"]} and not router.outbox
    router.handle(0, *_frame("send", [np.arange(3, dtype=np.float32)], seq=2, peer=1, tag=0))
    replies = {rank: (h, p) for rank, h, p in router.outbox}
    assert np.frombuffer(replies[1][1], np.float32).tolist() == [0, 1, 2] and "error" not in replies[0][0]
    assert router.result_stats()[0]["bytes_sent"] == 12 and router.blocked() == {}
    # sizes that do not match are named on both sides
    router.outbox.clear()
    router.handle(0, *_frame("send", [np.zeros(4, np.float32)], seq=3, peer=1, tag=0))
    router.handle(1, *_frame("recv", [], seq=8, peer=0, tag=0, shapes=[["float32", [3]]]))
    assert all("posted a receive for 3" in h["error"] for _, h, _ in router.outbox)


def test_relay_collectives_agree_or_say_who_called_what():
    router = relay.Router(2)
    router.handle(0, *_frame("allreduce", [np.array([1.0, 2.0])], reduce="SUM"))
    router.handle(1, *_frame("allreduce", [np.array([10.0, 20.0])], reduce="SUM"))
    assert [np.frombuffer(p).tolist() for _, _, p in router.outbox] == [[11.0, 22.0]] * 2
    router.outbox.clear()
    router.handle(0, *_frame("allreduce", [np.ones(3)], seq=2, reduce="SUM"))
    router.handle(1, *_frame("broadcast", [np.ones(2)], seq=2, root=0))
    assert all("rank 0: allreduce of 3 float64; rank 1: broadcast of 2 float64" in h["error"]
               for _, h, _ in router.outbox)


# --------------------------------------------------------------------------- the sandbox

def _in_sandbox(code: str, hide: list[str] = ()) -> str:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            isolate.enter(list(hide))
            inner = os.fork()
            if inner == 0:
                isolate.finish()
                out = {}
                try:
                    exec(code, {"out": out, "os": os})
                except Exception as exc:  # noqa: BLE001
                    out["error"] = repr(exc)
                os.write(w, repr(out).encode())
                os._exit(0)
            os.waitpid(inner, 0)
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return data.decode()


@pytest.mark.skipif(bool(SANDBOX), reason=f"no sandbox on this machine: {SANDBOX}")
def test_sandbox_no_network_read_only_hidden_folders_own_pids(tmp_path):
    secret = tmp_path / "class"
    secret.mkdir()
    (secret / "alice.ipynb").write_text("{}")
    code = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", 22), timeout=1); out["net"] = "open"
except OSError as e:
    out["net"] = type(e).__name__
try:
    open("/usr/dpcourse-probe", "w"); out["write"] = "wrote"
except OSError as e:
    out["write"] = e.errno
open("/tmp/scratch-ok", "w").write("x"); out["scratch"] = open("/tmp/scratch-ok").read()
out["hidden"] = [os.listdir(p) if os.path.isdir(p) else "gone" for p in ({str(secret)!r}, {str(ROOT / "instructor")!r})]
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
try:
    os.kill(1, 0); out["caps"] = "kill-self-ok"
except OSError as e:
    out["caps"] = str(e)
"""
    out = eval(_in_sandbox(code, [str(secret), str(ROOT / "instructor")]))
    assert "error" not in out, out
    assert out["net"] != "open" and out["write"] == 30 and out["scratch"] == "x"  # EROFS
    assert out["hidden"] == ["gone", []] and out["pids"] == [1]  # under /tmp: a fresh /tmp; elsewhere: covered
    assert (secret / "alice.ipynb").exists() and not Path("/usr/dpcourse-probe").exists()


# --------------------------------------------------------------------------- verdicts that do not depend on the draw

def _judge04(params: dict, draw: int, result) -> str:
    from dpcourse.grading.suites import ex04_allreduce as ex04

    rng = np.random.default_rng(draw)
    inputs = ex04.SUITE.tests[0].inputs(params, rng)
    outs = [{"tensor": result(inputs, r), "returned_same": True} for r in range(params["world_size"])]
    stats = [{"bytes_sent": 0}] * params["world_size"]
    try:
        ex04.judge(outs, params, Judged(0, inputs, stats))
    except Fail as fail:
        return str(fail)
    return ""


@pytest.mark.parametrize("world, dtype", [(3, "float64"), (4, "float32"), (5, "float64")])
def test_ex04_verdicts_are_the_same_on_every_draw(world, dtype):
    params = {"world_size": world, "shape": [257], "dtype": dtype}
    other = "float32" if dtype == "float64" else "float16"

    def ring_order(inputs, r):  # an honest sum, added in the order rank r's ring adds it
        order = [(r + k) % world for k in range(world)]
        total = np.zeros_like(inputs[0])
        for k in order:
            total = (total + inputs[k]).astype(dtype)
        return total

    def downcast(inputs, r):  # the same sum through a narrower communication buffer
        return sum(x.astype(other) for x in inputs).astype(dtype)

    def missing_term(inputs, r):  # one rank's contribution left out
        return sum(inputs[1:]).astype(dtype)

    for draw in range(8):
        assert _judge04(params, draw, ring_order) == "", draw
        for wrong in (downcast, missing_term):
            message = _judge04(params, draw, wrong)
            assert "relative error" in message and "allowed" in message, (draw, wrong.__name__)


def _judge05(draw: int, dtype: str, drop_rank: bool = False) -> str:
    """Grade what average_gradients would leave if it averaged each rank's shard gradient (in ``dtype``)."""
    import torch
    from torch import nn

    from dpcourse.grading.suites import ex05_ddp_by_hand as ex05

    params = {"world_size": 3, "kind": "average"}
    inputs = ex05.inputs(params, np.random.default_rng(draw))
    grads = []
    for r, mine in enumerate(inputs):
        model = ex05._model(mine["state"]).to(getattr(torch, dtype))
        x = torch.as_tensor(mine["x"][0]).to(getattr(torch, dtype))
        nn.functional.cross_entropy(model(x), torch.as_tensor(mine["y"][0])).backward()
        grads.append([None if not p.requires_grad else
                      (torch.zeros_like(p) if p.grad is None else p.grad).double().numpy() for p in model.parameters()])
    used = grads[1:] if drop_rank else grads
    mean = [None if g[0] is None else sum(x[i] for x in used) / 3 for i, g in enumerate(zip(*grads))]
    outs = [{"grads": mean} for _ in range(3)]
    per_param = sum(1 for g in mean if g is not None)
    seq = [["mark", "average_gradients"]] + [["allreduce", 1]] * per_param + [["mark", "done"]]
    try:
        ex05.judge_average(outs, params, Judged(0, inputs, [{"sequence": seq}] * 3))
    except Fail as fail:
        return str(fail)
    return ""


def test_ex05_verdicts_are_the_same_on_every_draw():
    for draw in range(8):
        assert _judge05(draw, "float64") == "", draw  # shard by shard, another summation order: still right
        assert "relative error" in _judge05(draw, "float32"), draw  # a float32 step anywhere: wrong every time
        assert "relative error" in _judge05(draw, "float64", drop_rank=True), draw  # a missing term


def test_ex04_diagnoses_fit_the_outputs_and_only_those():
    from dpcourse.grading.suites import ex04_allreduce as ex04
    from dpcourse.grading.suites._common import chunks

    params = {"world_size": 3, "shape": [10], "dtype": "float64"}
    inputs = ex04.SUITE.tests[0].inputs(params, np.random.default_rng(0))
    total = sum(inputs)
    bounds = chunks(10, 3)[0]

    def no_allgather(r):  # rank r holds the full sum in chunk (r + 1) % 3 only, partial sums elsewhere
        out = inputs[r].copy()
        a, b = bounds[(r + 1) % 3]
        out[a:b] = total[a:b]
        return out

    cases = {"missing all-gather": no_allgather, "sum vs average": lambda r: total / 3,
             "missing reduce-scatter": lambda r: inputs[(r - 1) % 3].copy(), None: lambda r: total.copy()}
    for name, make in cases.items():
        raw = [{"tensor": make(r), "returned_same": True} for r in range(3)]
        ctx = Judged(0, inputs, [{"bytes_sent": 0}] * 3)
        fits = {d.name for d in ex04.SUITE.diagnoses if d.applies(raw, params, ctx)}
        assert fits == ({name} if name else set()), (name, fits)


def _planted_ring():
    """The planted textbook ring (tests/planted/04_good_two_loops.py) as a live function, the way check() gets one."""
    import torch
    import torch.distributed as dist

    namespace = {"torch": torch, "dist": dist}
    exec(planted_source(PLANTED / "04_good_two_loops.py"), namespace)
    return namespace["ring_all_reduce"]


def test_without_a_sandbox_the_grader_says_so_once_and_grades_as_before(capfd):
    from dpcourse.grading import sandbox
    from dpcourse.grading.verdict import judge

    suite = get_suite("04", hidden=False)
    saved = dict(isolate._PROBE), list(sandbox._WARNED)
    isolate._PROBE["why"], sandbox._WARNED[:] = "switched off by this test", []
    ring = _planted_ring()
    try:
        jobs = [sandbox.Job(t, suite.names, 0, 60, objects={"ring_all_reduce": ring}) for t in suite.tests[:2]]
        verdicts = [judge(done) for done in sandbox.run_jobs(jobs)]
    finally:
        isolate._PROBE.clear()
        isolate._PROBE.update(saved[0])
        sandbox._WARNED[:] = saved[1]
    assert all(v.passed for v in verdicts), [v.message for v in verdicts]
    err = capfd.readouterr().err
    assert err.count("no sandbox here (switched off by this test)") == 1


def _leaves(obj) -> list[np.ndarray]:
    if isinstance(obj, dict):
        return [leaf for key in sorted(obj) for leaf in _leaves(obj[key])]
    if isinstance(obj, (list, tuple)):
        return [leaf for item in obj for leaf in _leaves(item)]
    return [np.ravel(np.asarray(obj, dtype=np.float64))]


def test_every_rank_gets_an_input_of_its_own_on_every_draw():
    """No verdict may hinge on two ranks drawing the same tensor (a broadcast from rank 1 that equals rank 0's)."""
    for ex in ("03", "04", "05"):
        for test in get_suite(ex).tests:
            if test.inputs is None or test.world_size < 2:
                continue
            for draw in range(8):
                items = test.inputs(test.params, np.random.default_rng(draw))
                assert len(items) == test.world_size, test.name
                flat = [np.concatenate(_leaves(item)) for item in items]
                for a in range(len(flat)):
                    for b in range(a + 1, len(flat)):
                        assert not np.array_equal(flat[a], flat[b]), (ex, test.name, draw, a, b)


def test_a_course_under_tmp_stays_visible_in_the_sandbox(tmp_path, monkeypatch):
    """A clone (or venv) inside /tmp is bound back into the rank's fresh /tmp: its top folder is kept."""
    from dpcourse.grading import isolate

    inside = tmp_path / "course" / "lib"
    inside.mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(inside)])
    if not os.path.realpath(inside).startswith("/tmp/"):
        pytest.skip("pytest's temporary folder is not under /tmp here")
    top = "/tmp/" + os.path.realpath(inside)[len("/tmp/"):].split("/")[0]
    assert top in isolate._kept()
