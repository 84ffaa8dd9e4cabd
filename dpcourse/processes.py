"""Child processes for the launcher and the grader: start them, talk to them, read them, end them.

``dpcourse.launch`` (a notebook's ranks) and ``dpcourse.grading.sandbox`` (a learner's code under
test) both start children, read what they print and send back without ever blocking on one of them,
and must leave nothing running when they are done. This is that plumbing, written once:

- starting: :func:`fork`, :func:`spawn`, :func:`die_with_parent`, :func:`preload_torch`;
- messages: :func:`write_frame`, :func:`read_frame`, :func:`unframe` (a length, then that many bytes);
- reading: :class:`Pipes` (one select loop over many pipes) and :class:`Capped` (a flood costs no memory);
- ending: :func:`kill_tree`, :func:`kill_and_reap`, :func:`has_exited`, :func:`wait_for_exit`,
  :func:`describe_exit`, :func:`become_subreaper`, :func:`kill_other_children`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
from typing import Any, Callable, Collection, Iterator, Sequence

import psutil

# --------------------------------------------------------------------------- starting

def fork(child: Callable[[], Any], close: Collection[int] = (), code_on_error: int = 70) -> int:
    """Fork and return the child's pid. The child closes ``close`` (the parent's ends of its pipes,
    other children's pipes), runs ``child()`` and exits: 0 if it returned, ``code_on_error`` if it raised.
    It never returns into the caller's code, which belongs to the parent."""
    sys.stdout.flush()  # or the child would print the parent's buffered output a second time
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = code_on_error
    try:
        for fd in close:
            try:
                os.close(fd)
            except OSError:
                pass
        child()
        code = 0
    finally:
        os._exit(code)


def spawn(main: Callable[..., Any], *fds: int, **popen: Any) -> subprocess.Popen:
    """Run ``main(*fds)`` in a fresh interpreter (it shares no memory with this one), handing it ``fds``.
    ``main`` must be importable by name; ``popen`` goes to :class:`subprocess.Popen`."""
    code = f"import sys; from {main.__module__} import {main.__name__} as main; main(*map(int, sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, fds)], pass_fds=fds, **popen)


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies, so that no child outlives a killed kernel."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@functools.cache
def preload_torch() -> None:
    """Import, once and here, what DDP's constructor imports lazily (``torch._dynamo``: seconds of work).
    Children forked afterwards inherit it; otherwise every rank of every launch would import it again."""
    try:
        import torch._dynamo  # noqa: F401
        import torch.distributed.tensor.parallel.ddp  # noqa: F401
    except Exception:  # a torch build without them simply pays later, in the children
        pass


# --------------------------------------------------------------------------- messages

FRAME = struct.Struct("!Q")  # a message is its length, then its bytes: the reader knows when it is whole


def write_frame(fd: int, *parts: bytes) -> None:
    """Write one message made of ``parts`` to ``fd`` (the parts are written in turn, never joined:
    a result can be large)."""
    for part in (FRAME.pack(sum(len(p) for p in parts)), *parts):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def unframe(buffer: bytes | bytearray) -> memoryview | None:
    """The message at the start of ``buffer`` (a view into it) once it has arrived whole, else None.

    A reader must stop at a whole message rather than wait for end-of-file: a process the child
    started may have inherited the pipe and hold it open long after the child is gone."""
    if len(buffer) < FRAME.size:
        return None
    (n,) = FRAME.unpack_from(buffer)
    return memoryview(buffer)[FRAME.size:FRAME.size + n] if len(buffer) >= FRAME.size + n else None


def read_frame(fd: int) -> bytes | None:
    """Read one whole message from ``fd`` (blocking); None if the writer went away before the end."""
    head = _read_exactly(fd, FRAME.size)
    return None if head is None else _read_exactly(fd, FRAME.unpack(head)[0])


def _read_exactly(fd: int, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        chunk = os.read(fd, min(n - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


# --------------------------------------------------------------------------- reading

class Pipes:
    """The read ends of many children's pipes, each with a tag, watched together.

    One ``select`` serves them all and every read is non-blocking, so a child that prints nothing
    (or hangs) never stops us from reading the others, or from noticing that time is up."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()

    def add(self, fd: int, tag: Any) -> None:
        os.set_blocking(fd, False)
        self._sel.register(fd, selectors.EVENT_READ, tag)

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` (if we were); it stays open."""
        if fd in self._sel.get_map():
            self._sel.unregister(fd)

    def watching(self, fds: Collection[int] | None = None) -> bool:
        """Whether any pipe (of ``fds``, if given) is still open."""
        watched = self._sel.get_map()
        return bool(watched) if fds is None else any(fd in watched for fd in fds)

    def read(self, timeout: float, fds: Collection[int] | None = None) -> Iterator[tuple[Any, bytes]]:
        """Wait up to ``timeout`` s, then yield ``(tag, chunk)`` for each pipe (of ``fds``, if given)
        that has something. An empty chunk is end-of-file: that pipe is watched no more."""
        for key, _ in self._sel.select(timeout):
            if (fds is not None and key.fd not in fds) or self._sel.get_map().get(key.fd) is not key:
                continue  # not asked for, or removed while we handled an earlier pipe of this batch
            try:
                chunk = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:  # closed under us: as good as end-of-file
                chunk = b""
            if not chunk:
                self._sel.unregister(key.fd)
            yield key.data, chunk

    def drain(self, seconds: float, handle: Callable[[Any, bytes], None], fds: Collection[int] | None = None) -> None:
        """Pass every ``(tag, chunk)`` to ``handle`` until the pipes (``fds``, if given) reach
        end-of-file, or for ``seconds`` at most: what a child printed just before it ended."""
        end = time.monotonic() + seconds
        while self.watching(fds) and (left := end - time.monotonic()) > 0:
            for tag, chunk in self.read(min(left, 0.05), fds):
                handle(tag, chunk)

    def fileno(self) -> int:
        """The selector's own descriptor (for a forked child to close: it is none of its business)."""
        return self._sel.fileno()

    def close(self) -> None:
        self._sel.close()


class Capped:
    """The first ``cap`` bytes of a stream, and how many it carried in all: a flood costs no memory."""

    def __init__(self, cap: int):
        self.cap, self.data, self.total = cap, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def text(self) -> str:
        """What was kept, as text, with a last line that says so when the rest was cut."""
        text = self.data.decode(errors="replace")
        if self.total > len(self.data):
            text += f"\n... output cut: {self.total:,} bytes printed, first {len(self.data):,} kept"
        return text


# --------------------------------------------------------------------------- ending

def has_exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited. It is not reaped, so its pid (the id of the group and
    session it leads) cannot be given to another process yet: they can still be killed safely."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def wait_for_exit(pid: int, seconds: float) -> int | None:
    """Wait up to ``seconds`` for our child ``pid`` to exit; reap it and return its wait status
    (see :func:`describe_exit`), or None if it is still running or is no child of ours."""
    end = time.monotonic() + seconds
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() >= end:
            return None
        time.sleep(0.01)


def kill_tree(roots: Collection[int], leaders: Collection[int] = ()) -> dict[int, int]:
    """Kill ``roots``, everything they started, and every process in a group or session that one of
    ``leaders`` leads (a double fork leaves the tree, but not the session). Returns the wait status
    of each one that was ours to reap (a child, or an orphan re-parented to us as a subreaper).

    All of them are frozen (SIGSTOP) before any is killed, and the search repeats until it finds no
    one new: a stopped process cannot fork a child we would miss."""
    stopped: dict[int, None] = {}  # ordered: parents before their children
    for _ in range(20):
        found = [pid for pid in _tree([*roots, *stopped], leaders) if pid not in stopped]
        if not found:
            break
        _send_signal(found, signal.SIGSTOP)
        stopped.update(dict.fromkeys(found))
    _send_signal(stopped, signal.SIGKILL)
    # Parents are reaped before their children: a child of a dead parent is re-parented to us (when we
    # are a subreaper) by the time its parent's status can be collected.
    reaped = {pid: _reap(pid) for pid in stopped}
    return {pid: status for pid, status in reaped.items() if status is not None}


def kill_and_reap(pids: Sequence[int]) -> list[int | None]:
    """Kill our children ``pids``, everything they started and everything left in the groups and
    sessions they lead; reap them. Returns their wait statuses in order (None: no child of ours)."""
    statuses = kill_tree(pids, leaders=pids)
    return [statuses.get(pid) for pid in pids]


def kill_other_children(keep: Collection[int]) -> None:
    """Kill and reap every child of this process not in ``keep``, with all it started: processes that
    a learner's code left behind and that were re-parented to us (see :func:`become_subreaper`)."""
    kill_tree({p.pid for p in psutil.Process().children()} - set(keep))


def become_subreaper() -> bool:
    """Make orphans of our descendants re-parent to this process, so none can escape the clean-up."""
    try:
        return ctypes.CDLL("libc.so.6").prctl(36, 1) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def describe_exit(status: int | None, sigkill_hint: str = "often out of memory") -> str:
    """How a process ended, in words, from its wait status: ``exit code 3``, ``killed by SIGSEGV``.
    SIGKILL comes with ``sigkill_hint``: it is what the kernel sends when memory runs out."""
    if status is None:
        return "no exit status"
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name} - {sigkill_hint}" if -code == signal.SIGKILL else f"killed by {name}"


def _tree(roots: Collection[int], leaders: Collection[int]) -> list[int]:
    """``roots``, the members of the groups and sessions ``leaders`` lead, and all their descendants."""
    members = [pid for pid in psutil.pids() if _led_by(pid, leaders)] if leaders else []
    found: dict[int, None] = {}
    for top in [*roots, *members]:
        if top in found:  # and so are its descendants
            continue
        try:
            found.update(dict.fromkeys([top, *(child.pid for child in psutil.Process(top).children(recursive=True))]))
        except psutil.NoSuchProcess:  # gone already
            pass
    return list(found)


def _led_by(pid: int, leaders: Collection[int]) -> bool:
    try:
        return os.getpgid(pid) in leaders or os.getsid(pid) in leaders
    except OSError:  # gone already
        return False


def _send_signal(pids: Collection[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None
