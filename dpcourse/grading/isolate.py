"""A sandbox for one rank of one graded test, built from Linux namespaces (what bubblewrap uses).

Each rank of a graded run gets, where the kernel allows it:

* its own network namespace with no interface up: no connection anywhere, not even to 127.0.0.1
  (its only link is the pipe to the grader's harness, opened before);
* its own mount namespace: every mount read-only, a fresh empty ``/tmp`` (its scratch folder, the
  working directory) and ``/dev/shm``, and empty folders mounted over the submissions, the reports
  and the instructor's hidden tests;
* its own PID, IPC and UTS namespaces: it sees only itself and cannot signal or trace anything else;
* no capabilities (so it cannot undo any of this) and ``no_new_privs``.

``bwrap --ro-bind / / --dev /dev --proc /proc --unshare-all --tmpfs /tmp CMD`` gives the same, for a
command; doing it here keeps the ``fork`` of a process that has torch loaded already (starting a
fresh interpreter per rank would cost seconds per test). Where it cannot be done (no permission,
no user namespaces) :func:`available` says why, once, and graded code runs as before.

An audit hook (:func:`watch`) names what the code tried: a socket, a write outside its scratch
folder, a read of a hidden path, a signal to another process. It reports each attempt to the harness
before the kernel refuses it; Python cannot remove an audit hook once added.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, Callable

__all__ = ["available", "enter", "finish", "watch"]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
          "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24

_libc = ctypes.CDLL(None, use_errno=True)
_STATE: dict[str, Any] = {}


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _mounts() -> list[tuple[str, int]]:
    """(mount point, flags to keep) of every mount, parents first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            point = parts[4].encode().decode("unicode_escape")
            flags = 0
            for opt in parts[5].split(","):
                flags |= _FLAGS.get(opt, 0)
            out.append((point, flags))
    return out


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _loopback_up() -> None:
    """Bring up ``lo`` in the new network namespace (ranks that meet over gloo need 127.0.0.1, nothing else)."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14s", b"lo", 0x1 | 0x8 | 0x40, b"")  # IFF_UP | IFF_LOOPBACK | IFF_RUNNING
        fcntl.ioctl(s.fileno(), 0x8914, ifreq)  # SIOCSIFFLAGS


_SCRATCH = ("/tmp", "/dev/shm", "/var/tmp")


def _kept() -> list[str]:
    """Top folders inside a scratch folder that this rank still needs: the interpreter, the course, cwd.

    A course cloned (or a virtual environment made) under /tmp would vanish under the fresh /tmp;
    these folders are bound back, read-only, into the new one.
    """
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wanted = {sys.prefix, sys.base_prefix, here, os.getcwd(), *(p for p in sys.path if p and os.path.isdir(p))}
    roots = set()
    for path in (os.path.realpath(w) for w in wanted):
        for scratch in _SCRATCH:
            if path.startswith(scratch + "/"):
                roots.add(os.path.join(scratch, path[len(scratch) + 1:].split("/")[0]))
    return sorted(roots)


def _bind_back(opened: dict[str, int], scratch: str) -> None:
    """Bind the kept folders of ``scratch`` (opened before it was covered) back, read-only."""
    for root, fd in opened.items():
        if root.startswith(scratch + "/"):
            os.makedirs(root, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", root, None, MS_BIND | MS_REC)
            _mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def enter(hide: list[str] = (), shared: str | None = None, loopback: bool = False) -> None:
    """In a forked rank, before any learner code: new namespaces and a read-only world.

    Must be followed by a ``fork``: the child is PID 1 of the new PID namespace and calls
    :func:`finish`. ``hide``: folders to cover with an empty one. ``shared``: a folder all ranks of
    the test share, seen at ``/tmp/shared`` (for checkpoints).
    """
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
    if uid != 0:
        flags |= CLONE_NEWUSER
    _check(_libc.unshare(flags), "unshare")
    if uid != 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    if loopback:
        _loopback_up()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for point, keep in _mounts():
        if point.startswith(("/proc/", "/sys/")) or point in ("/proc", "/sys"):
            continue
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
        except OSError:
            pass  # a mount we may not touch stays as it is (it is not ours to write to anyway)
    if shared:  # parked on /dev/shm (replaced below) while /tmp gets its fresh tmpfs, then moved into it
        _mount(shared, "/dev/shm", None, MS_BIND)
        _mount(None, "/dev/shm", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)  # writable, unlike its source
    opened = {root: os.open(root, os.O_PATH | os.O_DIRECTORY) for root in _kept() if os.path.isdir(root)}
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=512m")
    _bind_back(opened, "/tmp")
    if shared:
        os.mkdir("/tmp/shared")
        _mount("/dev/shm", "/tmp/shared", None, MS_MOVE)
    for folder in ("/dev/shm", "/var/tmp"):
        if os.path.isdir(folder):
            _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=512m")
            _bind_back(opened, folder)
    for fd in opened.values():
        os.close(fd)
    for folder in hide:
        if os.path.isdir(folder):
            _mount("tmpfs", folder, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=555")
    _STATE.update(hide=[os.path.realpath(h) for h in hide], entered=True)


def finish() -> None:
    """In PID 1 of the new namespace: our own /proc, then give up every capability for good."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        pass
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    for cap in range(64):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    _check(_libc.capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")


_PROBE: dict[str, str] = {}


def available() -> str:
    """"" when a rank can be sandboxed here; else why not (probed once, in a throwaway child)."""
    if "why" not in _PROBE:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            msg = ""
            try:
                enter([])
                inner = os.fork()
                if inner == 0:
                    try:
                        finish()
                        import socket

                        try:
                            socket.create_connection(("127.0.0.1", 9), timeout=1).close()
                            msg = "the network is still reachable"
                        except OSError:
                            pass
                        try:
                            open("/usr/.dpcourse-probe", "w").close()
                            msg = "the file system is still writable"
                        except OSError:
                            pass
                    except Exception as exc:  # noqa: BLE001
                        msg = str(exc)
                    os.write(w, msg.encode() or b"ok")
                    os._exit(0)
                os.waitpid(inner, 0)
            except Exception as exc:  # noqa: BLE001
                os.write(w, str(exc).encode()[:500] or b"failed")
            os._exit(0)
        os.close(w)
        chunks = []
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        os.waitpid(pid, 0)
        text = b"".join(chunks).decode(errors="replace")
        _PROBE["why"] = "" if text == "ok" else (text or "the probe did not report")
    return _PROBE["why"]


# --------------------------------------------------------------------------- naming what the code tried

def _own(pid: int) -> bool:
    """``pid`` is this process or one it started (the only ones it may signal)."""
    me = os.getpid()
    for _ in range(64):
        if pid == me:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return pid == me
    return False


def watch(report: Callable[[str], None], scratch: tuple[str, ...] = ("/tmp", "/dev/shm")) -> None:
    """Report (once each) attempts to reach out of the sandbox; the kernel refuses them anyway."""
    hidden = tuple(_STATE.get("hide", []))
    seen: set[str] = set()

    def say(text: str) -> None:
        if text not in seen and len(seen) < 20:
            seen.add(text)
            report(text)

    def hook(event: str, args: tuple) -> None:
        try:
            if event == "socket.connect" or event == "socket.sendto":
                sock, address = args[0], args[1]
                if getattr(sock, "family", None) != 1:  # AF_UNIX socketpairs are the harness's own
                    say(f"opened a network connection to {address!r}")
            elif event == "socket.bind":
                if getattr(args[0], "family", None) != 1:
                    say(f"opened a network socket on {args[1]!r}")
            elif event == "open":
                path, mode, flags = args[0], args[1], args[2]
                if not isinstance(path, (str, bytes)):
                    return
                path = os.fsdecode(path)
                full = os.path.realpath(path)
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                          (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
                if any(full == h or full.startswith(h.rstrip("/") + "/") for h in hidden):
                    say(f"read {path} (another submission, the reports or the hidden tests)")
                elif writing and not any(full == s or full.startswith(s + "/") for s in scratch) \
                        and not full.startswith("/dev/"):
                    say(f"wrote to {path} (outside its scratch folder)")
            elif event in ("os.kill", "os.killpg"):
                pid = args[0]
                if isinstance(pid, int) and pid == os.getppid():
                    say(f"tried to kill its parent process (the grader's harness) with signal {args[1]}")
                elif isinstance(pid, int) and pid != 0 and not _own(abs(pid)):
                    say(f"tried to kill process {pid}, which it did not start, with signal {args[1]}")
        except Exception:  # noqa: BLE001  a hook must never break the code it watches
            pass

    sys.addaudithook(hook)
