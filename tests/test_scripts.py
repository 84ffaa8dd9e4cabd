"""lessons/scripts/train_ddp.py under torchrun: a crash and restart, two "nodes", and the DDP math."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

import dpcourse

SCRIPTS = Path(__file__).resolve().parent.parent / "lessons" / "scripts"
TRAIN = SCRIPTS / "train_ddp.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("train_ddp", TRAIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_ddp"] = module
    spec.loader.exec_module(module)
    return module


train_ddp = _load_script()


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lose_a_node = _load("lose_a_node")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(cmd: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on timeout kill the whole group (no orphans)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout} s:\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


_CACHE: dict = {}


def _reference(**cfg) -> dict:
    """Rank 0's result of ``train(cfg)`` on 2 ranks under dpcourse.launch (cached: runs cost seconds)."""
    key = tuple(sorted(cfg.items()))
    if key not in _CACHE:
        _CACHE[key] = dpcourse.launch(train_ddp.train, 2, cfg, timeout=60)[0]
    return _CACHE[key]


BASE = dict(epochs=2, batch_size=32, double=True)  # the run most tests compare against


@pytest.mark.slow
def test_killed_worker_restarts_from_checkpoint_and_matches_uninterrupted_run(tmp_path, no_leftover_processes):
    cfg = BASE
    expected = _reference(**cfg)
    out = tmp_path / "final.pt"
    steps_per_epoch = expected["steps"] // cfg["epochs"]
    crash = steps_per_epoch + steps_per_epoch // 2  # mid-way through epoch 1, after epoch 0's checkpoint
    result = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "--max-restarts=1", "--monitor-interval=0.5", str(TRAIN), "--epochs", "2", "--batch-size", "32",
                   "--double", "--checkpoint-dir", str(tmp_path / "ckpt"), "--resume", "--crash-at-step", str(crash),
                   "--out", str(out)])
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"simulating a crash at step {crash}" in result.stdout
    assert "resumed from checkpoint at epoch 1" in result.stdout, result.stdout[-3000:]
    final = torch.load(out, weights_only=True)
    assert final["steps"] == expected["steps"]
    assert _max_diff(final["params"], expected["params"]) < 1e-12


@pytest.mark.slow
def test_two_nodes_on_localhost(tmp_path, no_leftover_processes):
    port, run_id = _free_port(), uuid.uuid4().hex[:8]
    outs = [tmp_path / f"node{n}.pt" for n in range(2)]
    nodes = []
    for n in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               f"--node-rank={n}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={run_id}",
               str(TRAIN), "--epochs", "2", "--double", "--out", str(outs[n])]
        nodes.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                                      start_new_session=True))
    logs = []
    try:
        for p in nodes:
            logs.append(p.communicate(timeout=90)[0])
    finally:
        for p in nodes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
    for p, log in zip(nodes, logs):
        assert p.returncode == 0, log[-3000:]
    assert "done:" in "".join(logs)
    final = torch.load([o for o in outs if o.exists()][0], weights_only=True)  # written by global rank 0
    assert _max_diff(final["params"], _reference(**BASE)["params"]) < 1e-12


def test_ddp_matches_one_process_with_the_global_batch():
    """2 ranks x 32 samples is, step for step, one process with 64: the math DDP relies on."""
    two = _reference(**BASE)
    one = dpcourse.launch(train_ddp.train, 1, dict(epochs=2, batch_size=64, double=True), timeout=60)[0]
    assert two["steps"] == one["steps"]
    assert _max_diff(two["params"], one["params"]) < 1e-10


def test_no_sync_accumulation_matches_the_bigger_batch():
    acc = _reference(**{**BASE, "batch_size": 16, "accumulate": 2})
    big = _reference(**BASE)
    assert acc["steps"] == big["steps"]
    assert _max_diff(acc["params"], big["params"]) < 1e-10


def test_sync_batchnorm_on_cpu_says_it_needs_gpus():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: tests/test_gpu.py covers SyncBatchNorm")
    with pytest.raises(dpcourse.WorkerError, match="SyncBatchNorm has no CPU kernel"):
        dpcourse.launch(train_ddp.train, 2, dict(model="digits-bn", epochs=1, sync_bn=True), timeout=60)


def test_uneven_inputs_finish_with_join_and_keep_ranks_in_step():
    results = dpcourse.launch(train_ddp.train, 2, dict(epochs=1, uneven=True, double=True), timeout=60)
    assert _max_diff(results[0]["params"], results[1]["params"]) == 0.0


def test_bucket_options_do_not_change_the_result():
    base = _reference(**BASE)
    tuned = _reference(**BASE, bucket_cap_mb=0.01, grad_as_bucket_view=True)
    assert _max_diff(base["params"], tuned["params"]) < 1e-12


def test_resume_from_checkpoint_in_process(tmp_path):
    ck = str(tmp_path / "ck")
    full = _reference(**BASE)
    first = _reference(**{**BASE, "epochs": 1}, checkpoint_dir=ck)
    second = _reference(**BASE, checkpoint_dir=ck, resume=True)
    assert first["steps"] < second["steps"] == full["steps"] and second["start_epoch"] == 1
    assert _max_diff(second["params"], full["params"]) < 1e-12


def test_script_without_torchrun_says_how_to_start_it():
    env = {k: v for k, v in _env().items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, str(TRAIN), "--epochs", "1"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode != 0
    assert "start this script with torchrun" in proc.stderr


def test_slurm_script_uses_torchrun_rendezvous():
    text = (SCRIPTS / "slurm_2nodes.sbatch").read_text()
    for needle in ("--nodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint", "srun", "train_ddp.py"):
        assert needle in text


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _slurm_command() -> list[str]:
    """The torchrun command of the Slurm script, as arguments (continuation lines joined)."""
    text = (SCRIPTS / "slurm_2nodes.sbatch").read_text().replace("\\\n", " ")
    line = next(row for row in text.splitlines() if row.startswith("srun torchrun"))
    return line.split()[1:]


def test_multi_node_commands_survive_a_killed_rank_and_agree_with_the_slurm_script():
    """Lesson 07 prints torchrun_command(...); the Slurm script must pass the same flags, restart flags included."""
    lesson = lose_a_node.torchrun_command("10.0.0.1:29400", "run-1", nnodes="2", nproc_per_node=4,
                                          script_args=("--epochs", "20"))
    slurm = _slurm_command()
    for cmd in (lesson, slurm):
        flags = _flags(cmd)
        assert {"--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--rdzv-conf", "--max-restarts",
                "--checkpoint-dir", "--resume", "--collective-timeout"} <= flags, sorted(flags)
        assert "--rdzv-backend=c10d" in cmd and "--standalone" not in cmd
        conf = next(a for a in cmd if a.startswith("--rdzv-conf=")).split("=", 1)[1]
        join = dict(kv.split("=") for kv in conf.split(","))["join_timeout"]
        assert 0 < int(join) < 600, "join_timeout must be set below torchrun's silent default of 600 s"
        assert int(next(a for a in cmd if a.startswith("--max-restarts=")).split("=")[1]) >= 1
    assert _flags(lesson) == _flags(slurm) - {"--model", "--amp"}
    lesson_source = (SCRIPTS.parent.parent / "tools" / "nbsrc" / "lessons" / "07_torch_ddp.py").read_text()
    assert "torchrun_command(" in lesson_source and "--nnodes=2 --nproc_per_node" not in lesson_source


def test_crash_node_flag_needs_torchrun():
    with pytest.raises(dpcourse.WorkerError, match="only makes sense under torchrun"):
        dpcourse.launch(train_ddp.train, 2, dict(epochs=1, crash_node_at_step=1), timeout=60)


@pytest.mark.slow
def test_fixed_size_job_that_loses_a_node_gives_up_after_join_timeout(no_leftover_processes):
    """--nnodes=2: the survivor restarts, waits join_timeout for the lost node, then exits with a clear error."""
    # join_timeout also bounds the first round: leave room for torch to start on a busy machine
    outcome = lose_a_node.lose_a_node(nnodes="2", join_timeout=20, timeout=150)
    assert "simulating the loss of this whole node at step 30" in outcome["lost_log"], outcome["lost_log"][-2000:]
    assert outcome["returncode"] not in (None, 0), "the survivor should give up, not wait or succeed"
    assert "RendezvousTimeoutError" in outcome["log"], outcome["log"][-3000:]
    assert outcome["resumed_ranks"] is None  # it never trained again
    assert lose_a_node.describe(outcome).startswith("the survivor gave up (exit status")


@pytest.mark.slow
def test_elastic_job_that_loses_a_node_resumes_alone_and_finishes(no_leftover_processes):
    """--nnodes=1:2: once the lost node's heartbeats are missing, the survivor resumes from the checkpoint alone."""
    # last_call_timeout well above torch's start-up on a busy machine, so that both nodes make the first round;
    # join_timeout above it plus the heartbeat expiry (1 s x 2), so that the survivor's round can finish alone
    outcome = lose_a_node.lose_a_node(nnodes="1:2", join_timeout=30, last_call_timeout=10, keep_alive=(1, 2),
                                      timeout=150)
    assert "simulating the loss of this whole node at step 30" in outcome["lost_log"], outcome["lost_log"][-2000:]
    assert outcome["returncode"] == 0, outcome["log"][-3000:]
    assert outcome["resumed_ranks"] == 1, outcome["log"][-3000:]
    assert "resumed from checkpoint at epoch 1" in outcome["log"] and "done:" in outcome["log"]
    summary = lose_a_node.describe(outcome)  # the line lesson 07 prints
    assert summary.startswith("the survivor finished") and summary.endswith("having resumed with 1 rank(s)"), summary
