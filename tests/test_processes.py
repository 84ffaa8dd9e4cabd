"""The process toolkit the launcher and the sandbox share, tested with real processes and pipes."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
from processes import alive, children

from dpcourse import processes

# --------------------------------------------------------------------------- messages


def test_a_message_is_whole_only_when_its_last_byte_has_arrived():
    r, w = os.pipe()
    try:
        processes.write_frame(w, b"kind:", bytes(range(256)) * 3)
        sent = os.read(r, 1 << 16)
    finally:
        os.close(r)
        os.close(w)
    assert len(sent) == processes.FRAME.size + 5 + 768
    buffer = bytearray()
    for i, byte in enumerate(sent):  # one byte at a time, as a slow pipe might deliver it
        assert processes.unframe(buffer) is None, f"whole after only {i} of {len(sent)} bytes"
        buffer.append(byte)
    assert bytes(processes.unframe(buffer)) == b"kind:" + bytes(range(256)) * 3
    buffer += b"the next message"  # bytes after the message are not part of it
    assert bytes(processes.unframe(buffer)) == b"kind:" + bytes(range(256)) * 3


def test_a_message_larger_than_the_pipe_comes_back_whole():
    body = os.urandom(3 << 20)  # far more than a pipe holds: the writer blocks until the reader reads
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (processes.write_frame(w, body[:7], body[7:]), os.close(w)))
    writer.start()
    try:
        assert processes.read_frame(r) == body
        assert processes.read_frame(r) is None  # the writer is gone: no further message
    finally:
        writer.join()
        os.close(r)


def test_a_message_cut_short_reads_as_none():
    r, w = os.pipe()
    os.write(w, processes.FRAME.pack(100) + b"only ten b")
    os.close(w)
    assert processes.read_frame(r) is None
    os.close(r)
    assert processes.unframe(processes.FRAME.pack(100) + b"only ten b") is None
    assert processes.unframe(b"\x00\x00") is None  # not even a whole length


def test_an_empty_message_is_a_message():
    assert processes.unframe(processes.FRAME.pack(0)) == b""


# --------------------------------------------------------------------------- reading


def _child_writing(data: bytes, chunks: int = 1) -> tuple[int, int]:
    """A forked child that writes ``data`` in ``chunks`` pieces to a pipe; (its pid, our read end)."""
    r, w = os.pipe()

    def child() -> None:
        step = -(-len(data) // chunks)
        for i in range(0, len(data), step):
            os.write(w, data[i:i + step])

    pid = processes.fork(child, close=(r,))
    os.close(w)
    return pid, r


def test_pipes_read_several_children_to_the_end(no_leftover_processes):
    sent = {"a": b"alpha " * 5000, "b": b"", "c": b"gamma\n" * 3}
    started = {tag: _child_writing(data, chunks=4) for tag, data in sent.items()}
    pipes = processes.Pipes()
    got: dict[str, bytearray] = {tag: bytearray() for tag in sent}
    ended: list[str] = []
    try:
        for tag, (_, fd) in started.items():
            pipes.add(fd, tag)
        while pipes.watching():
            for tag, chunk in pipes.read(5.0):
                got[tag] += chunk
                if not chunk:
                    ended.append(tag)
    finally:
        pipes.close()
        for pid, fd in started.values():
            os.close(fd)
            processes.wait_for_exit(pid, 10.0)
    assert {tag: bytes(data) for tag, data in got.items()} == sent
    assert sorted(ended) == ["a", "b", "c"]  # each end-of-file reported once


def test_a_removed_pipe_is_read_no_more(no_leftover_processes):
    pid, fd = _child_writing(b"never read")
    pipes = processes.Pipes()
    try:
        pipes.add(fd, "x")
        processes.wait_for_exit(pid, 10.0)
        pipes.remove(fd)
        pipes.remove(fd)  # twice is fine
        assert not pipes.watching()
        assert list(pipes.read(0.0)) == []
    finally:
        pipes.close()
        os.close(fd)


def test_drain_reads_only_the_pipes_asked_for(no_leftover_processes):
    (pid_a, fd_a), (pid_b, fd_b) = _child_writing(b"A" * 1000), _child_writing(b"B" * 1000)
    pipes = processes.Pipes()
    got: list[tuple[str, bytes]] = []
    try:
        pipes.add(fd_a, "a")
        pipes.add(fd_b, "b")
        pipes.drain(30.0, lambda tag, chunk: got.append((tag, chunk)), fds=[fd_a])
        assert not pipes.watching([fd_a]) and pipes.watching([fd_b])
    finally:
        pipes.close()
        for pid, fd in ((pid_a, fd_a), (pid_b, fd_b)):
            os.close(fd)
            processes.wait_for_exit(pid, 10.0)
    assert {tag for tag, _ in got} == {"a"}
    assert b"".join(chunk for _, chunk in got) == b"A" * 1000


def test_a_flood_is_cut_at_the_cap_and_counted(no_leftover_processes):
    flood = b"".join(b"line %d\n" % i for i in range(100_000))
    pid, fd = _child_writing(flood, chunks=50)
    out = processes.Capped(1000)
    pipes = processes.Pipes()
    try:
        pipes.add(fd, "out")
        pipes.drain(60.0, lambda _, chunk: out.add(chunk))
    finally:
        pipes.close()
        os.close(fd)
        processes.wait_for_exit(pid, 10.0)
    assert bytes(out.data) == flood[:1000]
    assert out.total == len(flood)
    assert out.text().startswith("line 0\nline 1\n")
    assert out.text().endswith(f"\n... output cut: {len(flood):,} bytes printed, first 1,000 kept")


def test_output_under_the_cap_is_kept_whole_without_a_note():
    out = processes.Capped(100)
    out.add(b"hello ")
    out.add("wörld\n".encode())
    assert out.text() == "hello wörld\n" and out.total == len(out.data)


# --------------------------------------------------------------------------- starting


def test_fork_closes_what_it_is_told_and_exits_with_the_right_code(no_leftover_processes):
    r, w = os.pipe()
    pid = processes.fork(lambda: None, close=(w,))
    os.close(w)
    assert os.read(r, 1) == b""  # end-of-file: no one holds the write end any more
    os.close(r)
    assert processes.describe_exit(processes.wait_for_exit(pid, 30.0)) == "exit code 0"

    def fails() -> None:
        raise RuntimeError("planted")

    pid = processes.fork(fails, code_on_error=71)
    assert processes.describe_exit(processes.wait_for_exit(pid, 30.0)) == "exit code 71"


def test_spawn_runs_a_function_in_a_fresh_interpreter_with_the_fds_it_is_given(no_leftover_processes):
    import faulthandler

    # dump_traceback(fd) is a function that writes to a descriptor it is handed, and it imports
    # nothing: the child shows where it runs (the ``-c`` line that calls it) through our pipe
    r, w = os.pipe()
    proc = processes.spawn(faulthandler.dump_traceback, w)
    os.close(w)
    try:
        shown = bytearray()
        while chunk := os.read(r, 1 << 16):
            shown += chunk
    finally:
        os.close(r)
        assert proc.wait(timeout=60) == 0
    assert b'File "<string>", line 1' in shown and proc.pid != os.getpid()


# --------------------------------------------------------------------------- ending


def _sleeper_family(escape: bool) -> tuple[int, int]:
    """A child in a session of its own that starts a sleeping grandchild and tells us its pid. With
    ``escape`` the child then exits, so the grandchild is an orphan in that session (a double fork)."""
    r, w = os.pipe()

    def child() -> None:
        os.setsid()
        grandchild = processes.fork(lambda: time.sleep(600))
        processes.write_frame(w, str(grandchild).encode())
        if not escape:
            time.sleep(600)

    pid = processes.fork(child, close=(r,))
    os.close(w)
    grandchild = int(processes.read_frame(r))
    os.close(r)
    return pid, grandchild


@pytest.mark.parametrize("escape", [False, True], ids=["in-the-tree", "double-forked"])
def test_killing_a_tree_leaves_no_grandchild_behind(escape, no_leftover_processes):
    pid, grandchild = _sleeper_family(escape)
    assert alive(grandchild)
    if escape:
        processes.wait_for_exit(pid, 30.0)
        processes.kill_tree(set(), leaders={pid})  # found through the session its parent led
    else:
        [status] = processes.kill_and_reap([pid])
        assert processes.describe_exit(status).startswith("killed by SIGKILL")
    assert not psutil.pid_exists(grandchild)  # killed and reaped: not even a zombie is left


def test_kill_other_children_spares_the_ones_kept(no_leftover_processes):
    keep = processes.fork(lambda: time.sleep(600))
    stray, grandchild = _sleeper_family(escape=False)
    try:
        processes.kill_other_children(keep={keep} | (children() - {stray}))
        assert not alive(stray) and not alive(grandchild)
        assert alive(keep)
    finally:
        processes.kill_and_reap([keep])


def test_has_exited_does_not_reap(no_leftover_processes):
    pid = processes.fork(lambda: os._exit(5))
    while not processes.has_exited(pid):
        time.sleep(0.01)
    assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # its status is still there to collect
    assert processes.describe_exit(processes.wait_for_exit(pid, 30.0)) == "exit code 5"
    assert processes.has_exited(pid)  # reaped now: no child of ours at all
    assert processes.wait_for_exit(pid, 0.0) is None


def test_a_running_child_has_not_exited(no_leftover_processes):
    pid = processes.fork(lambda: time.sleep(600))
    try:
        assert not processes.has_exited(pid)
        assert processes.wait_for_exit(pid, 0.0) is None
    finally:
        processes.kill_and_reap([pid])


@pytest.mark.parametrize("sig, expected", [
    (signal.SIGTERM, "killed by SIGTERM"),
    (signal.SIGHUP, "killed by SIGHUP"),
    (signal.SIGKILL, "killed by SIGKILL - often out of memory"),
])
def test_a_death_by_signal_is_named(sig, expected, no_leftover_processes):
    pid = processes.fork(lambda: os.kill(os.getpid(), sig))
    status = processes.wait_for_exit(pid, 30.0)
    assert processes.describe_exit(status) == expected
    if sig == signal.SIGKILL:  # the hint is the caller's to choose
        assert processes.describe_exit(status, sigkill_hint="or worse") == "killed by SIGKILL - or worse"


def test_exit_codes_and_no_status_are_described(no_leftover_processes):
    pid = processes.fork(lambda: os._exit(3))
    assert processes.describe_exit(processes.wait_for_exit(pid, 30.0)) == "exit code 3"
    assert processes.describe_exit(None) == "no exit status"
