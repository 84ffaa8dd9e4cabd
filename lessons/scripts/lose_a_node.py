"""Lose a whole node in the middle of a two-node job, on this machine, and watch the other one.

    python scripts/lose_a_node.py --nnodes 2      # fixed size: the survivor gives up after join_timeout
    python scripts/lose_a_node.py --nnodes 1:2    # elastic: the survivor carries on alone from the checkpoint

Two ``torchrun`` "nodes" run lesson 07's multi-node command (:func:`torchrun_command`, the same
flags as ``slurm_2nodes.sbatch``) with the rendezvous on 127.0.0.1. The second node is also given
``--crash-node-at-step``: at that step its torchrun agent and its worker are killed together, as if the
machine had lost power. Nothing is left on that node to restart anything; what happens next is up
to the survivor's torchrun, its ``--nnodes`` and its rendezvous timeouts.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN = HERE / "train_ddp.py"

__all__ = ["torchrun_command", "lose_a_node", "describe", "main"]


def torchrun_command(endpoint: str, run_id: str, nnodes: str = "2", nproc_per_node: int | str = 4,
                     max_restarts: int = 3, join_timeout: int = 300, last_call_timeout: int | None = None,
                     script: str = "scripts/train_ddp.py", script_args: tuple[str, ...] = (),
                     checkpoint_dir: str = "scripts/checkpoints/digits-42", collective_timeout: int = 120,
                     extra_conf: str = "",
                     torchrun: tuple[str, ...] = ("torchrun",)) -> list[str]:
    """The multi-node command lesson 07 teaches, as an argument list (run the same one on every node).

    ``--max-restarts`` with a checkpoint and ``--resume`` turns a killed worker into a restart from the
    last epoch. ``join_timeout`` bounds every rendezvous, the first one and the one after a failure: a
    node that never comes (back) ends the job after that many seconds, not after the default 600.
    ``nnodes="MIN:MAX"`` makes the job elastic; then ``last_call_timeout`` is how long the rendezvous
    waits for more nodes once MIN are there. ``collective_timeout`` bounds how long a collective waits
    for a peer that vanished without closing its connections (a machine that lost power).
    """
    conf = [f"join_timeout={join_timeout}"]
    if last_call_timeout is not None:
        conf.append(f"last_call_timeout={last_call_timeout}")
    if extra_conf:
        conf.append(extra_conf)
    return [*torchrun, f"--nnodes={nnodes}", f"--nproc-per-node={nproc_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}",
            f"--rdzv-conf={','.join(conf)}", f"--max-restarts={max_restarts}",
            script, *script_args, "--collective-timeout", str(collective_timeout),
            "--checkpoint-dir", checkpoint_dir, "--resume"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc").is_dir() else []:
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
            parents[int(entry.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in [*_descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()


def lose_a_node(nnodes: str = "2", join_timeout: int = 30, last_call_timeout: int = 10, crash_step: int = 30,
                keep_alive: tuple[int, int] | None = None, epochs: int = 2, workdir: str | None = None,
                timeout: float = 150.0) -> dict:
    """Run the two nodes, lose the second one at ``crash_step``; return what the survivor did.

    ``keep_alive=(interval, attempts)`` sets the rendezvous heartbeat: a node whose heartbeats have
    been missing for ``interval * attempts`` seconds (5 * 3 by default) is dropped from it, which an
    elastic job waits for before it can go on without that node.

    ``last_call_timeout`` also decides whether both nodes make the first round of an elastic job: a node
    that starts later than that finds the other already training (on a busy machine, starting torch can
    take seconds), so keep it well above the start-up time.

    Returns ``{"returncode", "log", "lost_log", "seconds_after_loss", "resumed_ranks", "commands"}``:
    the survivor's exit status and output, the lost node's output, how long the survivor went on after
    the loss, the world size it resumed with (None if it never resumed) and the two commands run.
    """
    with tempfile.TemporaryDirectory(prefix="lose-a-node-") as tmp:
        work = Path(workdir or tmp)
        endpoint, run_id = f"127.0.0.1:{_free_port()}", f"lose-a-node-{uuid.uuid4().hex[:6]}"
        commands, procs, logs = [], [], []
        for node in range(2):
            # on a cluster the host named in the endpoint hosts the rendezvous; here both nodes are
            # 127.0.0.1, so say which one does (the survivor: a lost host takes the rendezvous with it)
            conf = f"is_host={int(node == 0)}"
            if keep_alive:
                conf += f",keep_alive_interval={keep_alive[0]},keep_alive_max_attempt={keep_alive[1]}"
            cmd = torchrun_command(endpoint, run_id, nnodes=nnodes, nproc_per_node=1, max_restarts=2,
                                   join_timeout=join_timeout, last_call_timeout=last_call_timeout,
                                   extra_conf=conf, script=str(TRAIN),
                                   script_args=("--epochs", str(epochs), "--double"),
                                   checkpoint_dir=str(work / "checkpoints"),
                                   torchrun=(sys.executable, "-m", "torch.distributed.run", "--monitor-interval=0.5"))
            if node == 1:
                cmd += ["--crash-node-at-step", str(crash_step)]
            logs.append(open(work / f"node{node}.log", "w+"))
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
            procs.append(subprocess.Popen(cmd, stdout=logs[-1], stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))
            commands.append(cmd)
        survivor, lost = procs
        lost_at = None
        deadline = time.monotonic() + timeout
        try:
            while survivor.poll() is None and time.monotonic() < deadline:
                if lost_at is None and lost.poll() is not None:
                    lost_at = time.monotonic()
                time.sleep(0.1)
            ended = time.monotonic()
            timed_out = survivor.poll() is None
        finally:
            for p in procs:
                _kill_tree(p)
        if lost_at is None and lost.poll() is not None:
            lost_at = ended
        texts = []
        for f in logs:
            f.seek(0)
            texts.append(f.read())
            f.close()
    resumed = [line for line in texts[0].splitlines() if line.startswith("resumed from checkpoint")]
    return {"returncode": None if timed_out else survivor.returncode, "log": texts[0], "lost_log": texts[1],
            "seconds_after_loss": None if lost_at is None else ended - lost_at,
            "resumed_ranks": int(resumed[-1].split(" with ")[1].split()[0]) if resumed else None,
            "commands": commands}


def describe(outcome: dict) -> str:
    """One line: what the survivor did after the loss (from :func:`lose_a_node`'s result)."""
    if outcome["returncode"] is None:
        return "the survivor was still waiting when it was stopped"
    how = "finished" if outcome["returncode"] == 0 else f"gave up (exit status {outcome['returncode']})"
    when = ("" if outcome["seconds_after_loss"] is None
            else f" {outcome['seconds_after_loss']:.0f} s after the loss")
    resumed = outcome["resumed_ranks"]
    return f"the survivor {how}{when}, " + (f"having resumed with {resumed} rank(s)" if resumed else "without resuming")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nnodes", default="2", help="2 (fixed) or 1:2 (elastic)")
    p.add_argument("--join-timeout", type=int, default=30)
    p.add_argument("--last-call-timeout", type=int, default=10)
    p.add_argument("--crash-step", type=int, default=30)
    p.add_argument("--keep-alive", type=int, nargs=2, metavar=("INTERVAL", "ATTEMPTS"),
                   help="rendezvous heartbeat (torchrun's default: 5 3)")
    args = p.parse_args(argv)
    r = lose_a_node(args.nnodes, args.join_timeout, args.last_call_timeout, args.crash_step,
                    tuple(args.keep_alive) if args.keep_alive else None)
    for line in r["log"].splitlines():
        if any(w in line for w in ("epoch", "resumed", "done", "Error", "failed")):
            print("survivor |", line[:160])
    print(f"--nnodes={args.nnodes}: {describe(r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
