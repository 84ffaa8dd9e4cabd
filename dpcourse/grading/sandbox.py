"""Run one test of a learner's code in a child process that cannot hang, flood or fool the grader.

For each job the grader forks a *shield* process that starts a new session and forks the *runner*,
so the learner's parent is the shield, never the grader. The runner limits its memory
(``RLIMIT_AS``: ``memory_mb`` on top of what is mapped when it starts, torch included), works in a temporary directory, executes the learner's code, runs the test's
``run`` half and writes the raw outputs as JSON (arrays as base64) to a pipe. The grader reads
at most ``output_cap`` bytes of printed output, kills the whole session when the result is in or
the wall-clock limit passes, and decodes the result without ``pickle``: nothing the learner's
process sends can execute code in the grader.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import resource
import selectors
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dpcourse.grading.framework import Context, Test, _instrument
from dpcourse.launch import _die_with_parent

__all__ = ["Job", "Finished", "run_jobs", "encode", "decode", "LEARNER_MODULE"]

LEARNER_MODULE = "__learner__"
_RESULT_CAP = 64 << 20
_LENGTH = struct.Struct("!Q")  # the result travels as its length, then the JSON bytes
_DTYPES = {"<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1", "<c8", "<c16"}


# --------------------------------------------------------------------------- raw outputs <-> bytes

def _enc(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_enc(x) for x in obj]
    if isinstance(obj, dict):
        return {"__dict__": [[str(k), _enc(v)] for k, v in obj.items()]}
    if type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        t = obj.detach().cpu()
        obj = t.float().numpy() if str(t.dtype) == "torch.bfloat16" else t.numpy()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {"__nd__": [a.dtype.str, list(a.shape), base64.b64encode(a.tobytes()).decode()]}
    return {"__repr__": repr(obj)[:200]}


def encode(obj: Any) -> bytes:
    """Raw outputs as JSON bytes (tensors and arrays travel as dtype, shape and base64 data)."""
    return json.dumps(_enc(obj)).encode()


def _dec(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_dec(x) for x in obj]
    if isinstance(obj, dict):
        if "__nd__" in obj:
            dtype, shape, data = obj["__nd__"]
            if dtype not in _DTYPES:
                raise ValueError(f"unexpected array type {dtype!r}")
            return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape).copy()
        if "__dict__" in obj:
            return {k: _dec(v) for k, v in obj["__dict__"]}
        if "__repr__" in obj:
            return _Opaque(str(obj["__repr__"]))
        raise ValueError("unexpected object in result")
    return obj


@dataclass(frozen=True)
class _Opaque:
    """A returned value that could not travel as data; only its repr came back."""

    text: str


def decode(data: bytes) -> Any:
    """Inverse of :func:`encode`; raises ``ValueError`` on anything else."""
    return _dec(json.loads(data.decode()))


# --------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One test against one submission: either source ``cells`` to execute, or live ``objects``."""

    test: Test
    names: tuple[str, ...]
    seed: int
    timeout: float
    memory_mb: int = 4096
    cells: list[tuple[str, str]] | None = None  # (label, source) executed in order
    objects: dict[str, Any] | None = None  # check(): the learner's live functions (inherited by fork)
    reference_modules: tuple[str, ...] = ()
    output_cap: int = 20_000
    tag: Any = None


@dataclass
class Finished:
    """What came back: ``status`` is ok, error, timeout, died or bad-result."""

    job: Job
    status: str
    raw: Any = None
    error: dict | None = None
    output: str = ""
    output_bytes: int = 0
    seconds: float = 0.0
    exit_detail: str = ""


@dataclass
class _Running:
    job: Job
    pid: int
    out_fd: int
    res_fd: int
    deadline: float
    start: float
    workdir: str
    out: bytearray = field(default_factory=bytearray)
    out_bytes: int = 0
    res: bytearray = field(default_factory=bytearray)
    res_open: bool = True
    out_open: bool = True


def _start(job: Job, inherited: list[int] = ()) -> _Running:
    workdir = tempfile.mkdtemp(prefix="dpcourse-grade-")
    out_r, out_w = os.pipe()
    res_r, res_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the shield: never returns
        code = 70
        try:
            for fd in (out_r, res_r, *inherited):  # other jobs' pipes are none of the learner's business
                try:
                    os.close(fd)
                except OSError:
                    pass
            os.setsid()
            _die_with_parent()
            runner = os.fork()
            if runner == 0:
                try:
                    _runner_main(job, out_w, res_w, workdir)
                finally:
                    os._exit(71)
            os.close(out_w)
            os.close(res_w)
            _, status = os.waitpid(runner, 0)
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else min(code, 127)
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(res_w)
    now = time.monotonic()
    return _Running(job, pid, out_r, res_r, now + job.timeout, now, workdir)


def _runner_main(job: Job, out_fd: int, res_fd: int, workdir: str) -> None:
    """The learner's side: limits, learner code, the test's ``run`` half, raw outputs to ``res_fd``."""
    _die_with_parent()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    sys.stdout = open(1, "w", closefd=False, errors="replace", buffering=1)
    sys.stderr = open(2, "w", closefd=False, errors="replace", buffering=1)
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    limit = _address_space() + (job.memory_mb << 20)  # on top of what torch and friends already map
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(workdir)
    try:
        import torch

        torch.set_num_threads(1)  # first thing after a fork: OpenMP is not fork-safe
        from dpcourse.launch import launch

        _instrument()
        _hide_references(job.reference_modules)
        # bound before the learner's code runs, so that patching these modules from a notebook changes nothing
        run, params, enc, write = job.test.run, job.test.params, encode, os.write
        ctx = Context(seed=job.seed, timeout=max(1.0, 0.75 * job.timeout - 1.0), launcher=launch)
        learner = _load_learner(job)
        payload = {"ok": run(learner, params, ctx)}
    except BaseException as exc:  # SystemExit too: a learner's sys.exit is a failure, not an exit
        enc, write = encode, os.write
        payload = {"error": _describe(exc)}
    try:
        data = enc(payload)
    except Exception as exc:
        data = encode({"error": {"type": "ValueError", "message": f"the result could not be sent back: {exc}",
                                 "traceback": ""}})
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[write(res_fd, view):]
    os.close(res_fd)
    os._exit(0)


def _address_space() -> int:
    """Bytes of address space this process maps now (libraries included)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _describe(exc: BaseException) -> dict:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    info = {"type": type(exc).__name__, "message": str(exc)[:4000], "traceback": tb[-4000:]}
    for attr in ("worker_traceback",):
        if getattr(exc, attr, None):
            info[attr] = str(getattr(exc, attr))[-4000:]
    if isinstance(exc, SyntaxError):
        info["where"] = f"{exc.filename}, line {exc.lineno}"
    return info


class MissingName(NameError):
    """The submission does not define a name the exercise grades."""


class UsesReference(ImportError):
    """The submission uses the course's reference implementation instead of its own code."""


class _Hidden(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise UsesReference(f"{self.__name__}.{name} is the course's reference implementation, "
                            "not available while grading: write your own code.")


def _hide_references(modules: tuple[str, ...]) -> None:
    import dpcourse

    for name in modules:
        if not name.startswith("dpcourse."):  # torch's own modules are needed by torch itself
            continue
        stub = _Hidden(name)
        sys.modules[name] = stub
        parent, _, attr = name.rpartition(".")
        if parent == "dpcourse":
            setattr(dpcourse, attr, stub)


def _load_learner(job: Job) -> types.SimpleNamespace:
    if job.objects is not None:
        namespace = dict(job.objects)
    else:
        module = types.ModuleType(LEARNER_MODULE)
        sys.modules[LEARNER_MODULE] = module
        namespace = module.__dict__
        for label, source in job.cells or []:
            exec(compile(source, label, "exec"), namespace)
    found = {}
    for name in job.names:
        if name not in namespace:
            raise MissingName(f"the submission does not define `{name}`: keep the name and signature given "
                              "in the exercise.")
        obj = namespace[name]
        origin = getattr(obj, "__module__", "") or ""
        bases = [getattr(c, "__module__", "") for c in getattr(obj, "__mro__", ())[1:]]
        for mod in [origin, *bases]:
            if any(mod == r or mod.startswith(r + ".") for r in job.reference_modules):
                raise UsesReference(f"`{name}` comes from {mod}, the course's reference implementation: "
                                    "write your own.")
        found[name] = obj
    return types.SimpleNamespace(**found)


# --------------------------------------------------------------------------- the grader's side

def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, state) of every process we can see."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[3]), fields[0])
    return table


def _tree(roots: set[int], sid: int | None = None) -> set[int]:
    """``roots``, their live descendants, and (with ``sid``) every live member of that session."""
    table = _processes()
    found = {p for p in roots if p in table and table[p][2] != "Z"}
    found |= {p for p, (_, s, state) in table.items() if sid is not None and s == sid and state != "Z"}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, state) in table.items():
            if ppid in found and pid not in found and state != "Z":
                found.add(pid)
                grew = True
    return found


def kill_tree(roots: set[int], sid: int | None = None) -> None:
    """Freeze, then kill, ``roots`` and everything they started (stopped processes cannot fork away)."""
    stopped: set[int] = set()
    for _ in range(20):
        pids = _tree(roots | stopped, sid) - stopped
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except (ProcessLookupError, PermissionError):
                pass
        stopped |= pids
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in stopped - roots:  # orphans re-parented to us (when we are a subreaper)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _kill_session(run: _Running, grace: float = 0.0) -> str:
    """Kill the shield, the runner and everything they started; reap what we can; describe the exit."""
    status = None
    end = time.monotonic() + grace
    while status is None:
        try:
            pid, st = os.waitpid(run.pid, os.WNOHANG)
            if pid:
                status = st
        except ChildProcessError:
            break
        if time.monotonic() >= end:
            break
        time.sleep(0.01)
    kill_tree({run.pid}, sid=run.pid)
    if status is None:
        try:
            _, status = os.waitpid(run.pid, 0)
        except ChildProcessError:
            status = None
    for fd in (run.out_fd, run.res_fd):
        try:
            os.close(fd)
        except OSError:
            pass
    if status is None:
        return "no exit status"
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return "killed - did the code kill its parent process?"
    if code >= 128:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        hint = " - often out of memory, or the code killed its parent" if code - 128 == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def _finish(run: _Running, timed_out: bool) -> Finished:
    detail = _kill_session(run, grace=0.0 if timed_out or run.res else 1.0)
    shutil.rmtree(run.workdir, ignore_errors=True)
    seconds = time.monotonic() - run.start
    output = run.out.decode(errors="replace")
    if run.out_bytes > len(run.out):
        output += f"\n... output cut: {run.out_bytes:,} bytes printed, first {len(run.out):,} kept"
    done = Finished(run.job, "ok", output=output, output_bytes=run.out_bytes, seconds=seconds, exit_detail=detail)
    if timed_out:
        done.status = "timeout"
        return done
    if not run.res:
        done.status = "died"
        return done
    try:
        if not _framed(run.res):
            raise ValueError("cut short")
        payload = decode(bytes(run.res[_LENGTH.size:_LENGTH.size + _LENGTH.unpack_from(run.res)[0]]))
        if not isinstance(payload, dict) or set(payload) not in ({"ok"}, {"error"}):
            raise ValueError("unexpected shape")
    except Exception:
        done.status = "bad-result"
        return done
    if "error" in payload:
        done.status = "error"
        done.error = payload["error"] if isinstance(payload["error"], dict) else {"type": "?", "message": "?"}
    else:
        done.raw = payload["ok"]
    return done


def become_subreaper() -> bool:
    """Make orphans of our descendants re-parent to this process, so none can escape the clean-up."""
    try:
        return ctypes.CDLL("libc.so.6").prctl(36, 1) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _sweep_orphans(active: set[int]) -> None:
    """Kill our children that are no running job's shield: processes a learner left behind."""
    me = os.getpid()
    mine = {pid: state for pid, (ppid, _, state) in _processes().items() if ppid == me and pid not in active}
    strays = {pid for pid, state in mine.items() if state != "Z"}
    if strays:
        kill_tree(strays)
    for pid in mine:  # reap them, and the zombies of orphans that died on their own
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def run_jobs(jobs: list[Job], parallel: int = 1, on_done: Callable[[Finished], None] | None = None,
             sweep_orphans: bool = False) -> list[Finished]:
    """Run every job (``parallel`` at a time); results in job order. Leaves no process behind.

    ``sweep_orphans``: also kill any other child of this process after each job (for a grader that is a
    subreaper and starts nothing else; see :func:`become_subreaper`).
    """
    import torch  # noqa: F401  imported once here, so that every forked child starts with it loaded
    import torch.distributed  # noqa: F401
    import torch.optim  # noqa: F401

    from dpcourse.launch import _preload

    _preload()  # torch._dynamo, which each child's launch would otherwise import again: ~2 s per test

    pending = list(enumerate(jobs))[::-1]
    running: dict[int, tuple[int, _Running]] = {}  # fd -> (index, run)
    active: dict[int, _Running] = {}
    results: list[Finished | None] = [None] * len(jobs)
    sel = selectors.DefaultSelector()

    def close(index: int, timed_out: bool) -> None:
        run = active.pop(index)
        for fd in (run.out_fd, run.res_fd):
            if fd in running:
                sel.unregister(fd)
                del running[fd]
        results[index] = _finish(run, timed_out)
        if sweep_orphans:
            _sweep_orphans({r.pid for r in active.values()})
        if on_done:
            on_done(results[index])

    try:
        while pending or active:
            while pending and len(active) < max(1, parallel):
                index, job = pending.pop()
                run = _start(job, [*running, sel.fileno()])
                active[index] = run
                for fd in (run.out_fd, run.res_fd):
                    os.set_blocking(fd, False)
                    sel.register(fd, selectors.EVENT_READ, run)
                    running[fd] = (index, run)
            now = time.monotonic()
            wait = max(0.0, min(r.deadline for r in active.values()) - now)
            for key, _ in sel.select(timeout=min(wait, 0.5)):
                if key.fd not in running or running[key.fd][1] is not key.data:
                    continue  # its job was closed earlier in this batch
                index, run = running[key.fd]
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if key.fd == run.out_fd:
                    if chunk:
                        run.out_bytes += len(chunk)
                        room = run.job.output_cap - len(run.out)
                        if room > 0:
                            run.out += chunk[:room]
                    else:
                        sel.unregister(key.fd)
                        del running[key.fd]
                        run.out_open = False
                else:
                    if chunk and len(run.res) < _RESULT_CAP:
                        run.res += chunk
                    if not chunk or _framed(run.res):  # end-of-file, or the whole result: done
                        # (a process the learner left behind may hold the pipe open: no waiting for it)
                        sel.unregister(key.fd)
                        del running[key.fd]
                        run.res_open = False
                        _drain(run)
                        close(index, timed_out=False)
            now = time.monotonic()
            for index, run in list(active.items()):
                if now >= run.deadline:
                    close(index, timed_out=True)
        return [r for r in results if r is not None]
    finally:
        for index in list(active):
            close(index, timed_out=True)
        sel.close()


def _framed(data: bytearray) -> bool:
    return len(data) >= _LENGTH.size and len(data) >= _LENGTH.size + _LENGTH.unpack_from(data)[0]


def _drain(run: _Running) -> None:
    """Pick up printed output still in the pipe once the result is in."""
    if not run.out_open:
        return
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        try:
            chunk = os.read(run.out_fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except OSError:
            return
        if not chunk:
            return
        run.out_bytes += len(chunk)
        room = run.job.output_cap - len(run.out)
        if room > 0:
            run.out += chunk[:room]
