"""Run a function on several worker processes, each a rank of a process group, from a notebook cell.

    >>> def hello():
    ...     import torch.distributed as dist
    ...     return dist.get_rank()
    >>> launch(hello, 2)
    [0, 1]

How it works, in one paragraph: the parent (your notebook kernel) makes a fresh temporary folder
for the ranks to meet in (a FileStore: no port to pick, so launches never collide), then forks one
child per rank. Each child points its stdout and stderr at a pipe, joins the process group through
the store, runs ``fn(*args)`` and sends back
its result (or its traceback) through a second pipe. The parent prints every child's output with
a ``[rank r]`` prefix, and kills the whole group on the first error, on ``timeout`` or on
interrupt. After CUDA has been used in the parent, forking is unsafe, so the children are started
fresh and ``fn`` travels pickled by value (cloudpickle) instead. The process plumbing (forking,
framed messages, reading many pipes at once, killing a process tree) is :mod:`dpcourse.processes`.
"""

from __future__ import annotations

import datetime
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from dpcourse import processes

__all__ = ["launch", "LaunchError", "WorkerError", "LaunchTimeout", "rank", "world_size", "device"]

_DEVICE: str = "cpu"
_LOCK = threading.Lock()  # one launch at a time per process: forking while another thread forks is unsafe


class LaunchError(RuntimeError):
    """A launch that could not finish: a worker failed, hung or died."""


class WorkerError(LaunchError):
    """A worker raised an exception. ``rank`` says which; ``worker_traceback`` holds its traceback."""

    def __init__(self, message: str, rank: int, worker_traceback: str):
        super().__init__(message)
        self.rank = rank
        self.worker_traceback = worker_traceback


class LaunchTimeout(LaunchError):
    """Workers were still running when the launch's timeout ran out. ``ranks`` lists them."""

    def __init__(self, message: str, ranks: list[int]):
        super().__init__(message)
        self.ranks = ranks


# --------------------------------------------------------------------------- helpers for workers

def rank() -> int:
    """This process's rank (0 outside a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks in the default group (1 outside a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def device() -> "torch.device":  # noqa: F821 (torch is imported lazily)
    """The device this rank computes on: ``cuda:<local rank>`` under NCCL, else ``cpu``."""
    import torch

    return torch.device(_DEVICE)


# --------------------------------------------------------------------------- the parent side

@dataclass
class _Worker:
    rank: int
    pid: int
    out_fd: int
    err_fd: int
    result_fd: int
    # Our end of the pipe to the worker's watchdog thread, which serves two requests: each b"s" we
    # write asks it to print where the worker is stuck (on a timeout), and closing the pipe releases
    # the worker to exit. One pipe carries both because its end-of-file also comes if we die.
    watchdog_fd: int
    proc: subprocess.Popen | None = None
    result: bytearray = field(default_factory=bytearray)  # grows in place: a bytes += would copy it all each time
    done: bool = False
    exit_status: int | None = None
    partial: dict = field(default_factory=lambda: {"out": b"", "err": b""})


def choose_backend(backend: str | None, world_size: int) -> str:
    """The backend a launch of ``world_size`` ranks uses: ``backend`` checked, or NCCL when there is a GPU
    per rank, else gloo. A one-line :class:`LaunchError` says what to change when it can't work."""
    import torch
    import torch.distributed as dist

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if backend is None:
        backend = "nccl" if gpus >= world_size and dist.is_nccl_available() else "gloo"
    backend = backend.lower()
    if backend == "nccl":
        if not dist.is_nccl_available() or gpus == 0:
            raise LaunchError("backend 'nccl' needs CUDA GPUs and none were found: use backend='gloo'.")
        if world_size > gpus:
            raise LaunchError(
                f"backend 'nccl' needs one GPU per rank: world_size={world_size} but only {gpus} GPU(s) "
                "found; use backend='gloo' or a smaller world_size."
            )
    elif backend == "gloo":
        if not dist.is_gloo_available():
            raise LaunchError("this torch build has no gloo backend; install a standard torch build.")
    elif backend != "mpi":
        raise LaunchError(f"unknown backend {backend!r}: use 'gloo' or 'nccl' (or None to choose).")
    return backend


def _validate(fn: Any, world_size: Any, timeout: Any) -> None:
    if not callable(fn):
        raise TypeError(f"launch() needs a function to run, got {type(fn).__name__}: pass fn, not fn().")
    if isinstance(world_size, bool) or not isinstance(world_size, int):
        raise TypeError(f"world_size must be a whole number, got {world_size!r}.")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}.")
    cap = max(64, 8 * (os.cpu_count() or 1))
    if world_size > cap:
        raise ValueError(f"world_size={world_size} is more processes than this machine can host; use at most {cap}.")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = 60.0,
    backend: str | None = None,
    threads: int = 1,
    env: dict[str, str] | None = None,
    start_method: str = "auto",
    network: "Link | str | None" = None,  # noqa: F821 (dpcourse.network.Link)
) -> list[Any]:
    """Run ``fn(*args)`` on ``world_size`` workers and return their results in rank order.

    Each worker starts with the default process group initialised (``nccl`` when there are at least
    ``world_size`` GPUs, else ``gloo``) and its device chosen (see :func:`device`). Output is
    printed with a ``[rank r]`` prefix. The first worker to raise stops all of them and the launch
    raises :class:`WorkerError` with that rank's traceback; workers still running after ``timeout``
    seconds are stopped and :class:`LaunchTimeout` names them. ``threads`` sets torch's intra-op
    threads per worker; ``env`` adds environment variables for the workers. ``start_method`` is
    ``"fork"`` (fast; the default), ``"spawn"`` (fresh interpreters, ``fn`` pickled by value; the
    default once CUDA is initialised here, where forking would break CUDA in the workers) or
    ``"auto"``. ``network`` runs the ranks on a simulated link (a preset's name from
    ``dpcourse.links()`` or a ``dpcourse.Link``): every message then takes as long as that link
    says, while the results stay bit-identical (see :mod:`dpcourse.network`).
    """
    _validate(fn, world_size, timeout)
    from dpcourse.network import resolve

    link = resolve(network)
    if link is not None and backend not in (None, "gloo"):
        raise LaunchError(f"network= simulates a link over gloo on CPU; backend={backend!r} can't carry it: "
                          "drop backend= or network=.")
    backend = choose_backend("gloo" if link is not None else backend, world_size)
    if link is not None:
        print(f"[network] {world_size} rank(s) on {link}", flush=True)

    import torch

    if start_method not in ("auto", "fork", "spawn"):
        raise ValueError(f"start_method must be 'auto', 'fork' or 'spawn', got {start_method!r}.")
    if start_method == "fork" and torch.cuda.is_initialized():
        raise LaunchError("CUDA is initialised in this process, and forked workers cannot use it: "
                          "use start_method='auto' (or 'spawn').")
    use_spawn = start_method == "spawn" or (start_method == "auto" and torch.cuda.is_initialized())
    if not use_spawn:
        processes.preload_torch()
    start = _start_spawned if use_spawn else _start_forked
    with _LOCK:
        # The ranks meet through a file in a fresh temporary folder: no port to choose, so launches
        # running at the same moment (two notebooks, parallel tests) never collide.
        rendezvous = tempfile.mkdtemp(prefix="dpcourse-")
        config = dict(world_size=world_size, backend=backend, store=os.path.join(rendezvous, "store"),
                      timeout=timeout, threads=threads, env=dict(env or {}), network=link)
        workers: list[_Worker] = []
        try:
            for r in range(world_size):
                inherited = [fd for w in workers for fd in (w.out_fd, w.err_fd, w.result_fd, w.watchdog_fd)]
                workers.append(start(fn, args, r, config, inherited))
            return _supervise(workers, timeout)
        finally:
            _kill_all(workers)
            shutil.rmtree(rendezvous, ignore_errors=True)


def _start_forked(fn: Callable, args: tuple, r: int, config: dict, inherited: list[int]) -> _Worker:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    dog_r, dog_w = os.pipe()
    pid = processes.fork(lambda: _worker_main(fn, args, r, config, out_w, err_w, res_w, dog_r),
                         close=(out_r, err_r, res_r, dog_w, *inherited))  # other ranks' pipes are not ours
    for fd in (out_w, err_w, res_w, dog_r):
        os.close(fd)
    return _Worker(r, pid, out_r, err_r, res_r, dog_w)


def _start_spawned(fn: Callable, args: tuple, r: int, config: dict, inherited: list[int]) -> _Worker:
    try:
        import cloudpickle
    except ImportError as exc:  # pragma: no cover - cloudpickle is a dependency
        raise LaunchError("CUDA is already in use in this kernel, and starting fresh workers needs "
                          "cloudpickle: pip install cloudpickle, or restart the kernel and launch first.") from exc
    try:
        payload = cloudpickle.dumps((fn, args, r, config))
    except Exception as exc:
        raise LaunchError(f"could not send fn and its arguments to fresh workers ({exc}); "
                          "restart the kernel and launch before using CUDA in this notebook.") from None
    res_r, res_w = os.pipe()
    dog_r, dog_w = os.pipe()
    proc = processes.spawn(_spawned_main, res_w, dog_r, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(res_w)
    os.close(dog_r)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(payload)
    proc.stdin.close()
    return _Worker(r, proc.pid, os.dup(proc.stdout.fileno()), os.dup(proc.stderr.fileno()), res_r, dog_w, proc=proc)


def _supervise(workers: list[_Worker], timeout: float) -> list[Any]:
    pipes = processes.Pipes()
    for w in workers:
        for fd, kind in ((w.out_fd, "out"), (w.err_fd, "err"), (w.result_fd, "res")):
            pipes.add(fd, (w, kind))
    deadline = time.monotonic() + timeout
    try:
        while any(not w.done for w in workers):
            left = deadline - time.monotonic()
            if left <= 0:
                _raise_timeout(workers, pipes, timeout)
            for (w, kind), chunk in pipes.read(min(left, 0.2)):
                _take((w, kind), chunk)
                if kind == "res" and (not chunk or processes.unframe(w.result) is not None):
                    pipes.remove(w.result_fd)  # the whole answer (or end-of-file): no waiting for more
                    w.done = True
                    _raise_if_failed(w, workers)
            for w in workers:  # a worker that died without closing its pipes cleanly
                if not w.done and processes.has_exited(w.pid):
                    _kill_and_reap([w])
                    pipes.drain(0.3, _take, fds=(w.out_fd, w.err_fd, w.result_fd))
                    w.done = True
                    _raise_if_failed(w, workers)
        for w in workers:  # everyone has answered: let them go, and pick up their last output
            _release(w)
        pipes.drain(0.5, _take)
        return [_decode(w)[1] for w in workers]
    finally:
        pipes.close()


def _take(tag: tuple[_Worker, str], chunk: bytes) -> None:
    """Keep a piece of a worker's result, or print a piece of its output (empty: the pipe ended)."""
    w, kind = tag
    if kind == "res":
        w.result += chunk
    else:
        _emit(w, kind, chunk, final=not chunk)


def _emit(w: _Worker, kind: str, chunk: bytes, final: bool = False) -> None:
    """Print a worker's output line by line, each line prefixed with its rank."""
    lines = (w.partial[kind] + chunk).split(b"\n")
    w.partial[kind] = lines.pop()  # an unfinished last line waits for the rest
    if final and w.partial[kind]:
        lines.append(w.partial[kind])
        w.partial[kind] = b""
    if lines:
        stream = sys.stdout if kind == "out" else sys.stderr
        stream.write("".join(f"[rank {w.rank}] {line.decode(errors='replace')}\n" for line in lines))
        stream.flush()


def _decode(w: _Worker) -> tuple[str, Any]:
    body = processes.unframe(w.result)
    if not body:  # nothing whole came back: the worker died first
        return "died", None
    return ("error" if body[:1] == b"e" else "ok"), pickle.loads(body[1:])


def _raise_if_failed(w: _Worker, workers: list[_Worker]) -> None:
    """Return if ``w`` sent back a result; otherwise stop every worker and raise what ``w`` raised, or how it died."""
    status, value = _decode(w)
    if status == "ok":
        return
    if status == "error":
        _kill_all(workers)
        exc_type, message, tb = value
        first = message.strip().splitlines()[0] if message.strip() else ""
        text = f"rank {w.rank} raised {exc_type}: {first}"
        if tb:
            text += f"\n\n--- traceback of rank {w.rank} ---\n{tb.rstrip()}"
        raise WorkerError(text, w.rank, tb) from None
    end = time.monotonic() + 2.0  # its pipe closed as it died: give it a moment to finish dying
    while not processes.has_exited(w.pid) and time.monotonic() < end:
        time.sleep(0.01)
    _kill_all(workers)
    how = processes.describe_exit(w.exit_status)
    raise LaunchError(f"rank {w.rank} died without returning ({how}); the other ranks were stopped.") from None


def _raise_timeout(workers: list[_Worker], pipes: processes.Pipes, timeout: float) -> None:
    running = [w for w in workers if not w.done]
    for w in running:  # ask each hung worker where it is stuck: its watchdog prints the stack
        try:
            os.write(w.watchdog_fd, b"s")
        except OSError:
            pass
    pipes.drain(0.5, _take)
    _kill_all(workers)
    ranks = [w.rank for w in running]
    raise LaunchTimeout(
        f"timed out after {timeout:g} s: rank(s) {ranks} still running (stacks printed above). "
        "Often a deadlock (ranks calling collectives in a different order, a recv with no matching send) "
        "or an endless loop.",
        ranks,
    ) from None


def _release(w: _Worker) -> None:
    """Let the worker exit: its watchdog sees the pipe close."""
    try:
        os.close(w.watchdog_fd)
    except OSError:
        pass
    w.watchdog_fd = -1


def _kill_and_reap(workers: list[_Worker]) -> None:
    """Kill the workers with everything they started (a background process, a forked child); reap them."""
    live = [w for w in workers if w.exit_status is None]
    for w, status in zip(live, processes.kill_and_reap([w.pid for w in live])):
        w.exit_status = 0 if status is None else status
        if w.proc is not None:  # reaped here: tell Popen, so that it never waits for it again
            w.proc.returncode = os.waitstatus_to_exitcode(w.exit_status)


def _kill_all(workers: list[_Worker]) -> None:
    """Stop every worker and everything it started, reap them, close their pipes. Safe to call twice."""
    end = time.monotonic() + 1.0
    for w in workers:  # released workers exit on their own within moments
        while w.watchdog_fd == -1 and not processes.has_exited(w.pid) and time.monotonic() < end:
            time.sleep(0.005)
    _kill_and_reap(workers)
    for w in workers:
        if w.proc is not None:
            for stream in (w.proc.stdout, w.proc.stderr):
                if stream:
                    stream.close()
        for attr in ("out_fd", "err_fd", "result_fd", "watchdog_fd"):
            fd = getattr(w, attr)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(w, attr, -1)


# --------------------------------------------------------------------------- the worker side

def _send(res_fd: int, kind: bytes, body: bytes) -> None:
    processes.write_frame(res_fd, kind, body)  # kind: b"r" a result, b"e" an error
    os.close(res_fd)


def _run(fn: Callable, args: tuple, r: int, config: dict, res_fd: int, watchdog_fd: int) -> None:
    global _DEVICE
    os.environ.update(config["env"])
    os.environ.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(config["world_size"]),
                      LOCAL_WORLD_SIZE=str(config["world_size"]),
                      OMP_NUM_THREADS=str(config["threads"]))
    released = _start_watchdog(watchdog_fd)
    import torch
    import torch.distributed as dist

    torch.set_num_threads(config["threads"])  # first thing after a fork: OpenMP is not fork-safe
    if "TORCH_DISTRIBUTED_DEBUG" in config["env"]:  # torch read it when the parent imported it
        dist.set_debug_level_from_env()
    try:
        timeout = datetime.timedelta(seconds=config["timeout"] + 30)  # the launcher's clock goes first
        store = dist.FileStore(config["store"], config["world_size"])
        if config["backend"] == "nccl":
            torch.cuda.set_device(r)
            _DEVICE = f"cuda:{r}"
        backend = config["backend"]
        if config.get("network") is not None:
            from dpcourse.network import use_link

            backend = use_link(config["network"], r)
        dist.init_process_group(backend, store=store, rank=r, world_size=config["world_size"],
                                timeout=timeout)
        result = fn(*args)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt in a worker are failures too
        sys.stdout.flush()
        sys.stderr.flush()
        # the traceback starts at fn: the launcher's own frame is noise to a learner
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__.tb_next)
        tb = "".join(_short_paths(te).format())
        _send(res_fd, b"e", pickle.dumps((type(exc).__name__, str(exc), tb)))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if isinstance(result, torch.Tensor) and result.device.type != "cpu":
        result = result.cpu()
    try:
        body = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        msg = (f"the return value of rank {r} ({type(result).__name__}) cannot be sent back: {exc}. "
               "Return plain Python values, numpy arrays or CPU tensors.")
        _send(res_fd, b"e", pickle.dumps(("ValueError", msg, "")))
    else:
        _send(res_fd, b"r", body)
    released.wait()  # until every rank has answered, so no peer loses a message in flight


def _shown_path(filename: str) -> str:
    """A file name as a traceback should show it to anyone: no path of the machine it ran on.

    A notebook cell becomes ``Cell In[7]`` (as IPython shows it), an installed package's file starts
    at the package (``torch/distributed/distributed_c10d.py``), and this course's own files start at
    ``dpcourse/``.
    """
    try:
        from IPython import get_ipython

        shell = get_ipython()
        named = shell.compile.format_code_name(filename) if shell is not None else None
        if named:
            return " ".join(named)
    except Exception:  # no IPython, or an IPython without this API: keep going
        pass
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    if filename.startswith(package_parent):
        return filename[len(package_parent):]
    return filename


def _short_paths(obj: Any) -> Any:
    """``obj`` (a StackSummary, a list of frames or a TracebackException, with its causes) with
    :func:`_shown_path` file names; the source lines are read first, from the real files."""
    seen: set[int] = set()

    def fix(stack: Any) -> None:
        for frame in stack:
            frame.line  # noqa: B018  (loads the source line while the real path still names the file)
            frame.filename = _shown_path(frame.filename)

    def walk(te: Any) -> None:
        if te is None or id(te) in seen:
            return
        seen.add(id(te))
        fix(te.stack)
        walk(te.__cause__)
        walk(te.__context__)
        for sub in getattr(te, "exceptions", None) or []:
            walk(sub)

    if isinstance(obj, traceback.TracebackException):
        walk(obj)
        return obj
    stack = traceback.StackSummary.from_list(obj)
    fix(stack)
    return stack


def _start_watchdog(watchdog_fd: int) -> threading.Event:
    """A thread that prints the main thread's stack when the parent asks (on a hang), and sets
    the returned event when the parent lets this worker go (closes the pipe)."""
    released = threading.Event()
    main = threading.main_thread().ident

    def watch() -> None:
        while os.read(watchdog_fd, 1) == b"s":
            frame = sys._current_frames().get(main)
            stack = traceback.extract_stack(frame) if frame is not None else []
            inside = [i for i, f in enumerate(stack) if f.name == "_run" and f.filename == __file__]
            # from the frame after the launcher's own _run (the learner's function) on
            stack = [f for f in stack[inside[-1] + 1 if inside else 0:] if "c10d_logger" not in f.filename]
            sys.stderr.write("stuck here (most recent call last):\n" + "".join(_short_paths(stack).format()))
            sys.stderr.flush()
        released.set()

    threading.Thread(target=watch, name="dpcourse-watchdog", daemon=True).start()
    return released


def _redirect(out_fd: int, err_fd: int) -> None:
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.close(out_fd)
    os.close(err_fd)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr


def _worker_main(fn: Callable, args: tuple, r: int, config: dict, out_fd: int, err_fd: int,
                 res_fd: int, watchdog_fd: int) -> None:
    os.setpgid(0, 0)  # our own process group: the parent can kill us and anything we start
    processes.die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _redirect(out_fd, err_fd)
    try:
        _run(fn, args, r, config, res_fd, watchdog_fd)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)


def _spawned_main(res_fd: int, watchdog_fd: int) -> None:
    """Entry point of a worker started fresh (used once CUDA is initialised in the parent)."""
    processes.die_with_parent()
    fn, args, r, config = pickle.loads(sys.stdin.buffer.read())
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.__stderr__ = sys.stderr
    try:
        _run(fn, args, r, config, res_fd, watchdog_fd)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
