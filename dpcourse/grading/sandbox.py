"""Run one test of a learner's code in processes that cannot hang, flood, fool or see the grader.

For each job the grader starts a *harness* process in a session of its own (forked by a clean job
starter, ``_Zygote``, a fresh interpreter that never saw the other submissions or the hidden tests;
``check()`` forks it from the notebook, whose live functions it needs). The harness never runs
learner code. It forks one process per rank; each rank enters its sandbox (``isolate``), limits its
memory (``RLIMIT_AS``: ``memory_mb`` on top of what torch already maps), executes the learner's
cells, receives its own input, joins the grader's process group (``relay``) and runs the test's
``run`` half. The harness carries the ranks' messages, counts them, and writes every rank's raw
outputs, the counts and what the sandbox saw as JSON (arrays as base64) to a pipe. The grader reads
at most ``output_cap`` bytes of printed output, kills the whole session when the result is in or the
wall-clock limit passes, and decodes the result without ``pickle``: nothing a learner's process
sends can execute code in the grader. Starting, reading and killing processes is :mod:`dpcourse.processes`.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dpcourse import processes
from dpcourse.grading.framework import Context, Test

__all__ = ["Job", "Finished", "run_jobs", "encode", "decode", "LEARNER_MODULE", "protect", "start_zygote",
           "stop_zygote", "load_only"]

LEARNER_MODULE = "__learner__"
_RESULT_CAP = 64 << 20
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
    cells: list[tuple[str, str]] | None = None  # (label, source) executed in order, on every rank
    objects: dict[str, Any] | None = None  # check(): the learner's live functions (inherited by fork)
    reference_modules: tuple[str, ...] = ()
    output_cap: int = 20_000
    tag: Any = None
    inputs: list[Any] | None = None  # each rank's input, drawn here by run_jobs (the judge reads them)


@dataclass
class Finished:
    """What came back: ``status`` is ok, error, timeout, died or bad-result.

    ``stats`` (per rank: operations and bytes), ``log`` (refusals, disagreements), ``blocked`` (what
    each rank waited for when time ran out) come from the harness's relay; ``events`` are the
    sandbox's reports of what the code tried (a socket, a write outside its folder, ...)."""

    job: Job
    status: str
    raw: Any = None
    error: dict | None = None
    output: str = ""
    output_bytes: int = 0
    seconds: float = 0.0
    exit_detail: str = ""
    stats: list = field(default_factory=list)
    log: list = field(default_factory=list)
    events: list = field(default_factory=list)
    blocked: dict = field(default_factory=dict)


@dataclass
class _Running:
    job: Job
    pid: int
    out_fd: int
    res_fd: int
    deadline: float
    start: float
    workdir: str
    out: processes.Capped  # what it printed (the first output_cap bytes)
    res: processes.Capped = field(default_factory=lambda: processes.Capped(_RESULT_CAP))  # its result, framed


_HIDE: list[str] = []  # folders no graded code may see (submissions, reports, hidden tests)


def protect(paths: list[Any]) -> None:
    """Cover ``paths`` (folders) with an empty folder in every sandboxed rank from now on."""
    for p in paths:
        if p:
            real = os.path.realpath(str(p))
            if real not in _HIDE and real != "/" and not _keep_visible(real):
                _HIDE.append(real)


def load_only(learner: Any, params: dict, ctx: Context) -> None:
    """The ``run`` of a job that only checks that the graded cells execute."""
    return None


def _sandbox_ok() -> bool:
    from dpcourse.grading import isolate

    why = isolate.available()
    if why and not _WARNED:
        _WARNED.append(why)
        print(f"dpcourse: no sandbox here ({why}): graded code runs with this process's own access to the network "
              "and the files (as before). Run as root or enable user namespaces to isolate it.", file=sys.stderr)
    return not why


_WARNED: list[str] = []


def _spec(job: Job, workdir: str, sandbox: bool) -> dict:
    t = job.test
    run = t.run if "<" not in getattr(t.run, "__qualname__", "<") else load_only  # a lambda cannot travel
    return {"run": f"{run.__module__}:{run.__qualname__}", "name": t.name, "params": t.params,
            "allowed": sorted(t.allowed) if t.allowed is not None else None, "allowed_what": t.allowed_what,
            "shared": t.shared_scratch, "per_rank": t.per_rank, "names": list(job.names), "seed": job.seed,
            "timeout": job.timeout,
            "memory_mb": job.memory_mb, "cells": job.cells, "refs": list(job.reference_modules),
            "output_cap": job.output_cap, "workdir": workdir, "sandbox": sandbox, "hide": list(_HIDE)}


def _keep_visible(path: str) -> bool:
    """A folder we may not hide: it holds Python, torch or this package."""
    import torch

    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds dpcourse/
    needed = [sys.prefix, sys.base_prefix, os.path.dirname(torch.__file__), package]
    needed += [p for p in sys.path if p and ("-packages" in p or p.startswith((sys.prefix, sys.base_prefix)))]
    return any(os.path.realpath(n) == path or os.path.realpath(n).startswith(path.rstrip("/") + "/") for n in needed)


def _job_from_spec(spec: dict) -> tuple[Job, str, bool, list[str]]:
    import importlib

    module, _, qual = spec["run"].partition(":")
    run: Any = importlib.import_module(module)
    for part in qual.split("."):
        run = getattr(run, part)
    test = Test(spec["name"], run, lambda *a: None, spec["params"],
                allowed=None if spec["allowed"] is None else frozenset(spec["allowed"]),
                allowed_what=spec["allowed_what"], shared_scratch=spec["shared"], per_rank=spec["per_rank"])
    job = Job(test, tuple(spec["names"]), spec["seed"], spec["timeout"], spec["memory_mb"],
              cells=[tuple(c) for c in spec["cells"] or []], reference_modules=tuple(spec["refs"]),
              output_cap=spec["output_cap"])
    return job, spec["workdir"], spec["sandbox"], spec["hide"]


class _Zygote:
    """A fresh interpreter that starts each job's harness (a fork of itself): it never saw the grader's memory.

    Learner code runs in processes forked from it, so it finds nothing in memory but its own job: no
    other student's code, no hidden test, no other test's inputs. Started once per grading process
    (one torch import), ended with it."""

    def __init__(self, fork: bool = False) -> None:
        import subprocess

        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = None
        if fork:  # a fork of a process that has read nothing yet (see start_zygote): no torch import to pay again
            def child() -> None:
                self.sock.close()
                _zygote_main(theirs.detach())

            self.pid = processes.fork(child)
        else:
            self.proc = processes.spawn(_zygote_main, theirs.fileno(), stdin=subprocess.DEVNULL)
            self.pid = self.proc.pid
        theirs.close()

    def launch(self, spec: dict, fds: list[int]) -> int:
        """Start one job's harness, handing it ``fds`` (its output, result and input pipes); its pid."""
        socket.send_fds(self.sock, [b"j"], fds)  # the pipes travel with this first byte
        processes.write_frame(self.sock.fileno(), json.dumps(spec).encode())
        reply = processes.read_frame(self.sock.fileno())
        if reply is None:
            raise RuntimeError("the grader's job starter stopped")
        return int(reply)

    def stop(self) -> None:
        self.sock.close()
        processes.kill_and_reap([self.pid])
        if self.proc is not None:  # reaped above: tell Popen, so that it never waits for it again
            self.proc.returncode = -signal.SIGKILL


def _zygote_main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    processes.die_with_parent()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the harnesses it starts are reaped automatically
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload_torch()
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(sock, 1, 3)
            data = processes.read_frame(fd) if len(fds) == 3 else None
        except OSError:
            return
        if data is None:  # the grader has gone
            return
        job, workdir, sandbox, hide = _job_from_spec(json.loads(data))

        def harness() -> None:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _runner_main(job, *fds, workdir, sandbox, hide)

        pid = processes.fork(harness)
        for fd_ in fds:
            os.close(fd_)
        processes.write_frame(fd, str(pid).encode())


_ZYGOTE: list[_Zygote] = []


def _zygote() -> _Zygote:
    if not _ZYGOTE:
        import atexit

        _ZYGOTE.append(_Zygote())
        atexit.register(stop_zygote)
    return _ZYGOTE[0]


def start_zygote() -> None:
    """Fork the job starter now, from this process as it is: call it before any submission or hidden test is
    read (``dpcourse grade`` does, first thing). Later jobs then cost a fork, not a fresh interpreter."""
    if not _ZYGOTE:
        import atexit

        _preload_torch()
        _sandbox_ok()
        _ZYGOTE.append(_Zygote(fork=True))
        atexit.register(stop_zygote)


def stop_zygote() -> None:
    while _ZYGOTE:
        _ZYGOTE.pop().stop()


def _preload_torch() -> None:
    import torch  # noqa: F401  imported once here, so that every forked child starts with it loaded
    import torch.distributed  # noqa: F401
    import torch.optim  # noqa: F401

    from dpcourse.grading import isolate, relay  # noqa: F401

    processes.preload_torch()  # torch._dynamo, which DDP would otherwise import again in every rank: ~2 s per test
    relay.define_group_class()


def _start(job: Job, inherited: list[int] = ()) -> _Running:
    workdir = tempfile.mkdtemp(prefix="dpcourse-grade-")
    os.chmod(workdir, 0o755)
    out_r, out_w = os.pipe()
    res_r, res_w = os.pipe()
    inp_r, inp_w = os.pipe()
    sandbox = _sandbox_ok()
    theirs = [out_w, res_w, inp_r]
    if job.objects is None:  # a submission's cells: started by the clean job starter
        pid = _zygote().launch(_spec(job, workdir, sandbox), theirs)
    else:  # check(): forked from here, where the learner's live functions are; it never runs them itself
        pid = processes.fork(lambda: _runner_main(job, *theirs, workdir, sandbox, list(_HIDE)),
                             close=(out_r, res_r, inp_w, *inherited))  # other jobs' pipes are none of its business
    for fd in theirs:
        os.close(fd)
    try:
        processes.write_frame(inp_w, encode(job.inputs if job.inputs is not None else [None] * job.test.world_size))
    except OSError:
        pass
    os.close(inp_w)
    now = time.monotonic()
    return _Running(job, pid, out_r, res_r, now + job.timeout, now, workdir, processes.Capped(job.output_cap))


def _runner_main(job: Job, out_fd: int, res_fd: int, inp_fd: int, workdir: str, sandbox: bool,
                 hide: list[str]) -> None:
    """The harness of one test (trusted: no learner code runs here): starts the ranks, hands each its
    input, carries their process-group traffic (``relay.Router``) and reports what came back."""
    from dpcourse.grading import relay

    os.setsid()  # a session of its own: the grader ends it, and everything in it, at once
    processes.die_with_parent()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    test, n = job.test, job.test.world_size
    shared = None
    if test.shared_scratch:
        shared = os.path.join(workdir, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
    pairs = [relay.pair() for _ in range(n)]

    def rank(r: int) -> None:  # in the forked rank: of all the harness holds, only its own socket stays open
        for i, (mine, theirs) in enumerate(pairs):
            mine.close()
            if i != r:
                theirs.close()
        os.close(res_fd)
        os.close(inp_fd)
        _rank_main(job, r, n, pairs[r][1], out_fd, workdir, shared, sandbox, hide)

    pids = [processes.fork(lambda r=r: rank(r), code_on_error=71) for r in range(n)]
    os.close(out_fd)
    socks = []
    for mine, theirs in pairs:
        theirs.close()
        socks.append(mine)
    blob = processes.read_frame(inp_fd)
    os.close(inp_fd)
    try:
        inputs = decode(blob) if blob is not None else [None] * n
    except ValueError:
        inputs = [None] * n
    router = relay.Router(n, test.allowed, test.allowed_what)
    for r, s in enumerate(socks):
        try:
            relay.send_frame(s, {"type": "input"}, encode(inputs[r] if r < len(inputs) else None))
        except OSError:
            pass
    results: list[Any] = [None] * n
    errors: dict[int, Any] = {}
    events: list[str] = []
    done: set[int] = set()
    sel = selectors.DefaultSelector()
    for r, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, r)
    deadline = time.monotonic() + max(0.5, job.timeout - 1.0)
    status, stop_at, last_message = "ok", None, time.monotonic()
    while len(done) < n:
        now = time.monotonic()
        if now >= deadline:
            status = "timeout"
            break
        if test.per_rank and _stuck(router, n, done, now - last_message):
            status = "stuck"
            break
        if stop_at is not None and now >= stop_at:
            break
        for key, _ in sel.select(min(deadline - now, 0.5)):
            r = key.data
            last_message = time.monotonic()
            try:
                header, payload = relay.recv_frame(key.fileobj)
            except (EOFError, ValueError, OSError):
                sel.unregister(key.fileobj)
                if r not in done:
                    errors[r] = {"died": _exit_of(pids[r])}
                    done.add(r)
                continue
            kind = header.get("type")
            if kind == "event":
                text = f"rank {r} {str(header.get('text'))[:300]}" if n > 1 else f"it {str(header.get('text'))[:300]}"
                if len(events) < 20 and text not in events:
                    events.append(text)
            elif kind == "result" and r not in done:
                try:
                    results[r] = decode(payload)
                except (ValueError, UnicodeDecodeError):
                    errors[r] = {"type": "ValueError", "message": "the result could not be read back", "traceback": ""}
                done.add(r)
            elif kind == "error" and r not in done:
                try:
                    err = decode(payload)
                except (ValueError, UnicodeDecodeError):
                    err = None
                errors[r] = err if isinstance(err, dict) else {"type": "?", "message": "?", "traceback": ""}
                done.add(r)
            elif kind == "mark":
                router.mark(r, header.get("label"))
            elif "op" in header:
                router.handle(r, header, payload)
            for dst, h, p in router.outbox:
                try:
                    relay.send_frame(socks[dst], h, p)
                except OSError:
                    pass
            router.outbox.clear()
        if errors and stop_at is None:
            stop_at = time.monotonic() + 0.3  # let the other ranks report the same failure, then stop
    blocked = router.blocked() if status in ("timeout", "stuck") else {}
    processes.kill_and_reap(pids)
    report: dict[str, Any] = {"status": status, "stats": router.result_stats(), "log": router.log, "events": events,
                              "blocked": {str(k): v for k, v in blocked.items()}}
    if status == "ok" and errors:
        r = min(errors, key=lambda k: ("died" in (errors[k] or {}), k))  # a raised error says more than a death
        err = errors[r]
        if "died" in err:
            report.update(status="died", detail=err["died"])
        else:
            err = dict(err)
            if n > 1:
                err["message"] = f"rank {r}: {err.get('message', '')}"
            report.update(status="error", error=err)
    elif status == "ok":
        report["ranks"] = results
    processes.write_frame(res_fd, encode(report))
    os.close(res_fd)


def _stuck(router: Any, n: int, done: set[int], quiet: float) -> bool:
    """No rank can make progress: every rank still running waits on the network, and nothing has moved for a
    while (a moment when some rank has already returned: it will never send what the others wait for)."""
    live = [r for r in range(n) if r not in done]
    waiting = router.blocked()
    if not live or not all(r in waiting for r in live):
        return False
    return quiet >= (1.0 if done else 5.0)


def _exit_of(pid: int) -> str:
    """How a rank ended (it closed its pipe without a result)."""
    status = processes.wait_for_exit(pid, 1.0)
    if status is None:
        return "closed its pipe and kept running"
    return processes.describe_exit(status, sigkill_hint="often out of memory, or the code killed its parent")


def _rank_main(job: Job, r: int, n: int, sock: socket.socket, out_fd: int, workdir: str, shared: str | None,
               sandbox: bool, hide: list[str]) -> None:
    """One rank: sandbox, limits, the learner's code, this rank's input, the test's ``run`` half."""
    from dpcourse.grading import isolate, relay

    os.setsid()  # a session of its own: kill(0, ...) from learner code reaches this rank only, never the harness
    processes.die_with_parent()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    if sandbox:
        isolate.enter(hide, shared, loopback=not job.test.per_rank)  # older suites start gloo ranks of their own
        inner = os.fork()
        if inner:  # stays outside, waits for PID 1 of the sandbox and ends as it did
            sock.close()
            _, status = os.waitpid(inner, 0)
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            os._exit(min(max(code, 0), 127))
        processes.die_with_parent()
        isolate.finish()
        home = "/tmp"
        scratch = "/tmp/shared" if shared else home
    else:
        home = os.path.join(workdir, f"rank{r}")
        os.mkdir(home)
        scratch = shared or home
    os.chdir(home)
    sys.stdout = open(1, "w", closefd=False, errors="replace", buffering=1)
    sys.stderr = open(2, "w", closefd=False, errors="replace", buffering=1)
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
    sys.dont_write_bytecode = True
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    limit = _address_space() + (job.memory_mb << 20)  # on top of what torch and friends already map
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    send, enc = relay.send_frame, encode
    lock = relay.WRITE_LOCK

    def report(text: str) -> None:
        with lock:
            send(sock, {"type": "event", "text": text})

    if sandbox:
        isolate.watch(report, ("/tmp", "/dev/shm", "/var/tmp"))
    try:
        import torch

        torch.set_num_threads(1)  # first thing after a fork: OpenMP is not fork-safe
        _hide_references(job.reference_modules)
        # bound before the learner's code runs, so that patching these modules from a notebook changes nothing
        from dpcourse.launch import launch as launcher

        run, params, install, receive = job.test.run, job.test.params, relay.install, relay.recv_frame
        learner = _load_learner(job)
        _, payload = receive(sock)
        ctx = Context(seed=job.seed, timeout=job.timeout, rank=r, world_size=n, input=decode(payload),
                      scratch=scratch, launcher=launcher)
        if job.test.per_rank:
            install(sock, r, n)
        header, body = {"type": "result"}, enc(run(learner, params, ctx))
    except BaseException as exc:  # SystemExit too: a learner's sys.exit is a failure, not an exit
        try:
            header, body = {"type": "error"}, enc(_describe(exc))
        except Exception:  # noqa: BLE001
            header, body = {"type": "error"}, enc({"type": "?", "message": "?", "traceback": ""})
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        with lock:
            send(sock, header, body)
    except Exception:  # noqa: BLE001
        pass
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

def _kill_session(run: _Running, grace: float = 0.0) -> str:
    """Kill the harness, its ranks and everything they started; reap what we can; describe the exit."""
    status = processes.wait_for_exit(run.pid, grace)  # the harness's own end, if it comes within the grace
    [killed] = processes.kill_and_reap([run.pid])  # and whatever it left running in its session
    status = killed if status is None else status
    for fd in (run.out_fd, run.res_fd):
        try:
            os.close(fd)
        except OSError:
            pass
    if status is not None and os.WIFSIGNALED(status):
        return "killed - did the code kill its parent process?"
    return processes.describe_exit(status)


def _finish(run: _Running, timed_out: bool) -> Finished:
    detail = _kill_session(run, grace=0.0 if timed_out or run.res.data else 1.0)
    shutil.rmtree(run.workdir, ignore_errors=True)
    seconds = time.monotonic() - run.start
    done = Finished(run.job, "ok", output=run.out.text(), output_bytes=run.out.total, seconds=seconds,
                    exit_detail=detail)
    if timed_out:
        done.status = "timeout"
        return done
    if not run.res.data:
        done.status = "died"
        return done
    try:
        body = processes.unframe(run.res.data)
        if body is None:
            raise ValueError("cut short")
        payload = decode(bytes(body))
        if not isinstance(payload, dict) or payload.get("status") not in ("ok", "error", "timeout", "died", "stuck"):
            raise ValueError("unexpected shape")
    except Exception:
        done.status = "bad-result"
        return done
    done.status = payload["status"]
    done.stats = payload.get("stats") or []
    done.log = [str(x) for x in payload.get("log") or []]
    done.events = [str(x) for x in payload.get("events") or []]
    done.blocked = payload.get("blocked") or {}
    if done.status == "error":
        err = payload.get("error")
        done.error = err if isinstance(err, dict) else {"type": "?", "message": "?"}
    elif done.status == "died":
        done.exit_detail = str(payload.get("detail") or detail)
    elif done.status == "ok":
        done.raw = payload.get("ranks")
    return done


def run_jobs(jobs: list[Job], parallel: int = 1, on_done: Callable[[Finished], None] | None = None,
             sweep_orphans: bool = False) -> list[Finished]:
    """Run every job (``parallel`` at a time); results in job order. Leaves no process behind.

    ``sweep_orphans``: also kill any other child of this process after each job (for a grader that is a
    subreaper and starts nothing else; see :func:`dpcourse.processes.become_subreaper`).
    """
    _preload_torch()
    for job in jobs:  # each rank's input, drawn here from fresh randomness; only that rank is sent its part
        if job.inputs is None and job.test.inputs is not None:
            rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
            job.inputs = list(job.test.inputs(job.test.params, rng))
    from dpcourse.grading import hidden

    protect([hidden.location()] + [os.path.dirname(os.path.abspath(str(job.tag.path))) for job in jobs
                                   if isinstance(getattr(job.tag, "path", None), (str, os.PathLike))])
    if any(job.objects is None for job in jobs):
        _zygote()
    zygotes = {z.pid for z in _ZYGOTE}

    pending = list(enumerate(jobs))[::-1]
    active: dict[int, _Running] = {}
    results: list[Finished | None] = [None] * len(jobs)
    pipes = processes.Pipes()

    def close(index: int, timed_out: bool) -> None:
        run = active.pop(index)
        pipes.remove(run.out_fd)
        pipes.remove(run.res_fd)
        results[index] = _finish(run, timed_out)
        if sweep_orphans:
            processes.kill_other_children({r.pid for r in active.values()} | zygotes)
        if on_done:
            on_done(results[index])

    try:
        while pending or active:
            while pending and len(active) < max(1, parallel):
                index, job = pending.pop()
                run = _start(job, [fd for r in active.values() for fd in (r.out_fd, r.res_fd)] + [pipes.fileno()])
                active[index] = run
                pipes.add(run.out_fd, (index, run, "out"))
                pipes.add(run.res_fd, (index, run, "res"))
            wait = max(0.0, min(r.deadline for r in active.values()) - time.monotonic())
            for (index, run, kind), chunk in pipes.read(min(wait, 0.5)):
                if kind == "out":
                    run.out.add(chunk)
                    continue
                run.res.add(chunk)
                if not chunk or processes.unframe(run.res.data) is not None:  # end-of-file, or the whole result
                    # (a process the learner left behind may hold the pipe open: no waiting for it)
                    pipes.remove(run.res_fd)
                    pipes.drain(0.2, lambda _, chunk: run.out.add(chunk), fds=[run.out_fd])  # its last output
                    close(index, timed_out=False)
            now = time.monotonic()
            for index, run in list(active.items()):
                if now >= run.deadline:
                    close(index, timed_out=True)
        return [r for r in results if r is not None]
    finally:
        for index in list(active):
            close(index, timed_out=True)
        pipes.close()
        if not sweep_orphans:  # a library caller (tests, check()) keeps no process of ours running afterwards;
            stop_zygote()      # the grade command (a one-shot process) keeps its starter for the next phase
