"""The launcher: results, output, failures, hangs, interrupts, bad input, and no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
import torch.distributed as dist
from processes import alive

import dpcourse
from dpcourse import LaunchError, LaunchTimeout, WorkerError, launch

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def _rank_and_sum(offset: int) -> tuple[int, int, float, str]:
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    return dist.get_rank(), dist.get_world_size(), t.item() + offset, str(dpcourse.device())


@pytest.mark.parametrize("n", [1, 2, 4])
def test_results_come_back_in_rank_order(n):
    results = launch(_rank_and_sum, n, 100, timeout=60)
    expected_sum = n * (n + 1) / 2 + 100
    assert results == [(r, n, expected_sum, "cpu") for r in range(n)]


def _print_rank() -> None:
    print(f"I am rank {dist.get_rank()}")
    print("second line", end="")  # an unfinished last line still arrives


def test_output_is_prefixed_with_rank(capfd):
    launch(_print_rank, 2, timeout=60)
    out = capfd.readouterr().out
    for r in range(2):
        assert f"[rank {r}] I am rank {r}\n" in out
        assert f"[rank {r}] second line\n" in out


def _fail_on_rank_one() -> None:
    if dist.get_rank() == 1:
        raise ValueError("planted failure")
    dist.barrier()  # rank 0 would wait forever for rank 1


def test_exception_names_rank_and_shows_traceback():
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        launch(_fail_on_rank_one, 2, timeout=30)
    assert time.monotonic() - start < 10  # the group is stopped at once, not at the timeout
    err = info.value
    assert err.rank == 1
    assert str(err).startswith("rank 1 raised ValueError: planted failure")
    assert "_fail_on_rank_one" in err.worker_traceback and "planted failure" in err.worker_traceback


def _mismatched_collectives() -> None:
    if dist.get_rank() == 0:
        dist.barrier()
    else:
        dist.broadcast(torch.zeros(1), src=0)


def test_hang_ends_at_timeout_naming_running_ranks(capfd):
    start = time.monotonic()
    with pytest.raises(LaunchTimeout) as info:
        launch(_mismatched_collectives, 2, timeout=3)
    elapsed = time.monotonic() - start
    assert 3 <= elapsed < 8
    assert info.value.ranks == [0, 1]
    assert "rank(s) [0, 1] still running" in str(info.value)
    err_text = capfd.readouterr().err  # each hung rank shows where it is stuck
    assert "[rank 0] stuck here" in err_text and "in _mismatched_collectives" in err_text


def _one_rank_finishes_early() -> None:
    if dist.get_rank() == 1:
        time.sleep(60)


def test_timeout_names_only_unfinished_ranks():
    with pytest.raises(LaunchTimeout) as info:
        launch(_one_rank_finishes_early, 3, timeout=2)
    assert info.value.ranks == [1]


def _killed_by_signal() -> None:
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()


def test_worker_killed_by_signal():
    with pytest.raises(LaunchError, match=r"rank 1 died without returning \(killed by SIGKILL"):
        launch(_killed_by_signal, 2, timeout=30)


def _exits() -> None:
    if dist.get_rank() == 0:
        sys.exit(3)
    dist.barrier()


def test_sys_exit_in_a_worker_is_an_error():
    with pytest.raises(WorkerError, match="rank 0 raised SystemExit: 3"):
        launch(_exits, 2, timeout=30)


def _hard_exit() -> None:
    os._exit(0)


def test_os_exit_without_result_is_an_error():
    with pytest.raises(LaunchError, match="died without returning"):
        launch(_hard_exit, 2, timeout=30)


def _leaves_a_child_behind() -> int:
    """Fork a sleeper that inherits the worker's pipes (and so would keep them open), then return."""
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    return pid


def test_a_child_left_behind_neither_delays_the_results_nor_survives():
    start = time.monotonic()
    pids = launch(_leaves_a_child_behind, 2, timeout=60)
    assert time.monotonic() - start < 30, "launch waited for the children's copies of its pipes"
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "a process a worker started outlived the launch"


def _unpicklable():
    return threading.Lock()


def test_unsendable_return_value_is_a_one_line_error():
    with pytest.raises(WorkerError) as info:
        launch(_unpicklable, 2, timeout=30)
    message = str(info.value)
    assert "cannot be sent back" in message and "\n" not in message


def _return_tensor() -> torch.Tensor:
    return torch.full((3,), float(dist.get_rank()))


def test_tensors_and_large_results_come_back():
    results = launch(_return_tensor, 2, timeout=30)
    assert [t.tolist() for t in results] == [[0.0] * 3, [1.0] * 3]
    big = launch(torch.randn, 2, 2_000_000, timeout=60)  # 8 MB each, through the pipe
    assert [t.shape for t in big] == [torch.Size([2_000_000])] * 2


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((_print_rank, 0), {}, ValueError, "world_size must be at least 1"),
        ((_print_rank, -2), {}, ValueError, "world_size must be at least 1"),
        ((_print_rank, 2.0), {}, TypeError, "world_size must be a whole number"),
        ((_print_rank, 10_000), {}, ValueError, "more processes than this machine"),
        ((None, 2), {}, TypeError, "needs a function"),
        ((_print_rank(), 2) if False else ("not callable", 2), {}, TypeError, "needs a function"),
        ((_print_rank, 2), {"timeout": 0}, ValueError, "timeout must be a positive"),
        ((_print_rank, 2), {"backend": "carrier-pigeon"}, LaunchError, "unknown backend"),
        ((_print_rank, 2), {"start_method": "thread"}, ValueError, "start_method must be"),
    ],
)
def test_bad_input_gets_a_one_line_error(args, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        launch(*args, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="needs fewer than 2 GPUs")
def test_nccl_without_enough_gpus_says_what_to_do():
    with pytest.raises(LaunchError, match="use backend='gloo'"):
        launch(_print_rank, 2, backend="nccl")


def test_concurrent_launches_do_not_collide(tmp_path):
    """Three 'notebooks' (processes) launching at the same moment each get a port of their own."""
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent("""
        import sys, torch, torch.distributed as dist
        import dpcourse

        def total(offset):
            t = torch.ones(1)
            dist.all_reduce(t)
            return t.item() + offset

        print(dpcourse.launch(total, 2, int(sys.argv[1]), timeout=60))
    """))
    procs = [subprocess.Popen([sys.executable, str(script), str(i)], stdout=subprocess.PIPE, text=True)
             for i in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert [out.strip().splitlines()[-1] for out in outputs] == [f"[{2.0 + i}, {2.0 + i}]" for i in range(3)]


def test_spawn_start_method_runs_a_function_from_main(tmp_path):
    """The path used once CUDA is initialised: fresh interpreters, fn pickled by value."""
    script = tmp_path / "spawned.py"
    script.write_text(textwrap.dedent("""
        import torch.distributed as dist
        import dpcourse

        def fn(x):                      # defined in __main__, like a notebook cell
            return dist.get_rank() * x

        print(dpcourse.launch(fn, 2, 10, start_method="spawn", timeout=60))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("[0, 10]")


def _sleeping_workers(tmp_path, call: str) -> tuple[subprocess.Popen, list[int]]:
    """A script whose 2 workers print their pid and sleep, with ``call`` launching them; the running
    script and the workers' pids."""
    script = tmp_path / "sleepers.py"
    script.write_text(textwrap.dedent("""
        import os, time
        import dpcourse

        def sleeper():
            print("pid", os.getpid(), flush=True)
            time.sleep(120)

    """) + textwrap.dedent(call))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pids = []
    assert proc.stdout is not None
    while len(pids) < 2:
        line = proc.stdout.readline()
        assert line, "the script ended before its workers started"
        if " pid " in line:
            pids.append(int(line.split()[-1]))
    return proc, pids


def test_interrupt_stops_all_workers(tmp_path):
    proc, pids = _sleeping_workers(tmp_path, """
        try:
            dpcourse.launch(sleeper, 2, timeout=100)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=20)
    assert "interrupted" in rest
    time.sleep(0.2)
    assert not any(alive(p) for p in pids)


def test_workers_die_with_their_parent(tmp_path):
    """If the kernel itself is killed, no worker lives on."""
    proc, pids = _sleeping_workers(tmp_path, "dpcourse.launch(sleeper, 2, timeout=100)\n")
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def _big_result():
    import numpy as np

    import dpcourse

    return np.full(4 << 20, float(dpcourse.rank()))  # 32 MB per rank


def test_large_results_come_back_whole():
    # results are read in 64 KB pieces; they must be gathered in place, not copied whole per piece
    results = launch(_big_result, 2, timeout=120)
    assert [r.nbytes for r in results] == [32 << 20, 32 << 20]
    assert results[0].max() == 0.0 and results[1].min() == 1.0
