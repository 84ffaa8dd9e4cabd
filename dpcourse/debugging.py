"""Tools that find what went wrong in a data-parallel run: which rank, which step, which collective.

Four small tools, each for one kind of question (lesson 11 shows each on a real failure):

* :class:`DivergenceDetector` - *do the replicas still agree?* Every ``every`` steps each rank
  computes one checksum per parameter; an ``all_gather`` brings everyone's to every rank, and the
  first step and the first parameter (in the model's order) where a rank disagrees with rank 0 are
  recorded. It is itself a collective: call ``check`` on every rank at the same steps.
* :func:`first_difference` - *is the result right?* Replicas can agree with each other and all be
  wrong (double averaging). Compare with a single-process run, parameter by parameter.
* :func:`rank_logger` / :func:`read_logs` - *what did each rank do, and when?* One log file per rank,
  every line stamped with rank and time, read back side by side.
* :class:`FlightRecorder` / :func:`analyse_flight_records` - *which collective is each rank stuck
  in?* torch's flight recorder keeps the last collectives each rank enqueued (on gloo too, in this
  torch); a timer thread dumps it while the rank hangs, and the analysis finds the first sequence
  number on which the ranks disagree.

:func:`parse_mismatch` reads the error ``TORCH_DISTRIBUTED_DEBUG=DETAIL`` raises when ranks call
different collectives, and says it in one line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["checksums", "DivergenceDetector", "Divergence", "DivergenceError", "first_difference",
           "rank_logger", "read_logs", "FlightRecorder", "flight_recorder_supported", "read_flight_records",
           "analyse_flight_records", "parse_mismatch", "Mismatch"]


# --------------------------------------------------------------------------- replicas that drift apart

def checksums(model: Any) -> "torch.Tensor":  # noqa: F821
    """One float64 number per parameter of ``model`` (in ``named_parameters`` order).

    A plain sum misses two values that swapped places, so each element is weighted by its position
    (1, 2, 3, ...): any change to one element, or a swap, changes the checksum. Bit-identical
    replicas give bit-identical checksums.
    """
    import torch

    sums = []
    for _, p in model.named_parameters():
        flat = p.detach().reshape(-1).to(torch.float64)
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
        sums.append(torch.dot(flat, weights))
    return torch.stack(sums).cpu() if sums else torch.zeros(0, dtype=torch.float64)


@dataclass
class Divergence:
    """Where the replicas first disagreed: ``step``, the first ``parameter`` that differs, and the
    ``ranks`` whose checksums differ from rank 0's. ``since`` is the last step they still agreed
    (``None`` if they never did): the split happened after ``since`` and by ``step``."""

    step: int
    parameter: str
    ranks: list[int]
    since: int | None
    values: dict[int, float]

    def __str__(self) -> str:
        when = f"at step {self.step}" if self.since is None or self.since == self.step - 1 else \
            f"between step {self.since + 1} and step {self.step}"
        vals = ", ".join(f"rank {r}: {v:.17g}" for r, v in self.values.items())
        return (f"ranks {self.ranks} split from rank 0 {when}; first parameter that differs: "
                f"{self.parameter!r} (checksums {vals})")


class DivergenceError(RuntimeError):
    """Raised by :meth:`DivergenceDetector.check` with ``stop=True``; ``divergence`` says where."""

    def __init__(self, divergence: Divergence):
        super().__init__(str(divergence))
        self.divergence = divergence


class DivergenceDetector:
    """Compare parameter checksums across ranks every ``every`` steps.

        >>> detector = DivergenceDetector(model, every=1)
        >>> for step in range(steps):
        ...     train_one_step()
        ...     detector.check(step)          # on every rank: it is a collective
        >>> detector.divergence               # None, or where the ranks first split

    ``stop=True`` raises :class:`DivergenceError` on every rank at the first split (all ranks see the
    same gathered checksums, so they all stop together and nobody is left waiting).
    ``atol`` allows for replicas that are meant to differ by rounding (0: bit-identical).
    """

    def __init__(self, model: Any, every: int = 1, stop: bool = False, atol: float = 0.0, group: Any = None):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number of steps >= 1, got {every!r}.")
        self.model, self.every, self.stop, self.atol, self.group = model, every, stop, atol, group
        self.names = [n for n, _ in model.named_parameters()]
        self.divergence: Divergence | None = None
        self.last_agreed: int | None = None
        self.checks = 0

    def check(self, step: int) -> Divergence | None:
        """On the steps that are multiples of ``every``: gather checksums, record the first split."""
        if step % self.every != 0 or self.divergence is not None:
            return self.divergence
        import torch
        import torch.distributed as dist

        mine = checksums(self.model)
        world = dist.get_world_size(self.group)
        everyone = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(everyone, mine, group=self.group)
        self.checks += 1
        table = torch.stack(everyone)  # ranks x parameters
        bad = (table - table[0]).abs() > self.atol
        if not bad.any():
            self.last_agreed = step
            return None
        first = int(bad.any(dim=0).nonzero()[0])
        ranks = [r for r in range(world) if bad[r, first]]
        self.divergence = Divergence(step, self.names[first], ranks, self.last_agreed,
                                     {r: float(table[r, first]) for r in range(world)})
        if self.stop:
            raise DivergenceError(self.divergence)
        return self.divergence


def first_difference(params: dict, reference: dict, atol: float = 1e-9) -> tuple[str, float, float] | None:
    """The first parameter (in ``reference``'s order) where ``params`` differs from ``reference`` by
    more than ``atol``: ``(name, max abs difference, ratio of norms)``, or ``None`` if all agree.

    The ratio ``|params| / |reference|`` hints at a factor (about ``1/world`` for updates averaged
    twice); compare *updates* (parameters minus their initial values) to see it cleanly.
    """
    import torch

    missing = sorted(set(reference) - set(params))
    if missing:
        raise KeyError(f"params has no {missing}: compare state dicts of the same model (no 'module.' prefix).")
    for name, want in reference.items():
        got = torch.as_tensor(params[name], dtype=torch.float64)
        want = torch.as_tensor(want, dtype=torch.float64)
        diff = (got - want).abs().max().item() if want.numel() else 0.0
        if diff > atol:
            ratio = (got.norm() / want.norm()).item() if want.norm() > 0 else float("inf")
            return name, diff, ratio
    return None


# --------------------------------------------------------------------------- one log per rank

class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from dpcourse.launch import rank

        record.rank = rank()
        return True


def rank_logger(folder: str | os.PathLike | None = None, name: str = "dpcourse.rank", level: int = logging.INFO,
                echo: bool = False) -> logging.Logger:
    """A logger whose lines say which rank wrote them and when: ``12.345678 rank 1: message``.

    With ``folder``, each rank writes its own file ``folder/rank<r>.log`` (ranks never interleave
    half lines in one file); without it, lines go to stderr. ``echo=True`` writes to both.
    Call it inside the worker, after the process group exists.
    """
    from dpcourse.launch import rank

    logger = logging.getLogger(f"{name}.{rank()}")
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(created).6f rank %(rank)d: %(message)s")
    handlers: list[logging.Handler] = []
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(folder) / f"rank{rank()}.log", mode="a"))
    if folder is None or echo:
        handlers.append(logging.StreamHandler())
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_RankFilter())
        logger.addHandler(h)
    return logger


def read_logs(folder: str | os.PathLike) -> list[tuple[float, int, str]]:
    """Every rank's log lines from ``folder``, merged in time order: ``(seconds, rank, message)``."""
    lines = []
    for path in sorted(Path(folder).glob("rank*.log")):
        for line in path.read_text().splitlines():
            m = re.match(r"(\d+\.\d+) rank (\d+): (.*)", line)
            if m:
                lines.append((float(m[1]), int(m[2]), m[3]))
    return sorted(lines)


# --------------------------------------------------------------------------- the flight recorder

def _dump_trace(backend: str) -> bytes:
    import torch._C._distributed_c10d as c10d

    if backend == "nccl" and hasattr(c10d, "_dump_nccl_trace_json"):
        return c10d._dump_nccl_trace_json(True, True)
    return c10d._dump_fr_trace_json(True, True)


def flight_recorder_supported(backend: str = "gloo") -> bool:
    """Whether this torch build can dump a flight-recorder trace for ``backend`` ("gloo" or "nccl")."""
    try:
        import torch._C._distributed_c10d as c10d
    except ImportError:
        return False
    return hasattr(c10d, "_dump_nccl_trace_json" if backend == "nccl" else "_dump_fr_trace_json")


class FlightRecorder:
    """Dump this rank's flight-recorder trace to ``folder/rank<r>.json`` if the rank is still busy
    after ``after`` seconds (a hang), and once more when the block ends.

        >>> with FlightRecorder(folder, after=3):       # in the worker
        ...     train()

    torch records only when ``TORCH_FR_BUFFER_SIZE`` (entries kept per rank) is set before the
    process group is created: launch with ``env={"TORCH_FR_BUFFER_SIZE": "2000"}``. The dump runs in
    a thread of its own, which works because a rank waiting in a collective does not hold the GIL.
    """

    def __init__(self, folder: str | os.PathLike, after: float = 3.0):
        self.folder, self.after = Path(folder), after
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def dump(self) -> Path:
        import torch.distributed as dist

        from dpcourse.launch import rank

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"rank{rank()}.json"
        data = _dump_trace(dist.get_backend() if dist.is_initialized() else "gloo")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
        tmp.replace(path)  # a reader never sees half a file
        return path

    def __enter__(self) -> "FlightRecorder":
        if not os.environ.get("TORCH_FR_BUFFER_SIZE"):
            raise RuntimeError("the flight recorder is off: launch with env={'TORCH_FR_BUFFER_SIZE': '2000'}.")

        def watch() -> None:
            if not self._done.wait(self.after):
                self.dump()

        self._thread = threading.Thread(target=watch, name="dpcourse-flight-recorder", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self.dump()


def read_flight_records(folder: str | os.PathLike) -> dict[int, dict]:
    """The dumps of ``folder`` by rank: ``{rank: {"entries": [...], "pg_status": {...}}}``."""
    records = {}
    for path in sorted(Path(folder).glob("rank*.json")):
        records[int(path.stem[4:])] = json.loads(path.read_bytes())
    return records


def _op(entry: dict) -> str:
    return str(entry.get("profiling_name", "?")).split(":")[-1]


def analyse_flight_records(records: dict[int, dict], group: str = "0") -> str:
    """One paragraph: the last collective each rank enqueued, and the first sequence number at
    which the ranks called different collectives or some rank never called it.

    Sequence numbers are the flight recorder's ``collective_seq_id``: they count the collectives of
    the process group from 1 (``TORCH_DISTRIBUTED_DEBUG=DETAIL`` counts the same ones from 0).
    """
    if not records:
        return "no flight-recorder dumps found (was TORCH_FR_BUFFER_SIZE set when the group was created?)."
    by_rank: dict[int, dict[int, dict]] = {}
    for r, rec in records.items():
        by_rank[r] = {int(e["collective_seq_id"]): e for e in rec.get("entries", [])
                      if not e.get("is_p2p") and str(e.get("pg_id", 0)) == group}
    lines = []
    for r in sorted(by_rank):
        seqs = by_rank[r]
        if seqs:
            last = max(seqs)
            lines.append(f"rank {r}: last collective #{last} {_op(seqs[last])} {seqs[last].get('input_sizes')}")
        else:
            lines.append(f"rank {r}: no collectives recorded")
    every = sorted(set().union(*[set(s) for s in by_rank.values()]))
    for seq in every:
        calls = {r: by_rank[r].get(seq) for r in sorted(by_rank)}
        kinds = {r: (_op(e), str(e.get("input_sizes"))) if e else None for r, e in calls.items()}
        if len(set(kinds.values())) > 1:
            detail = "; ".join(f"rank {r} " + (f"called {k[0]} {k[1]}" if k else "never called it")
                               for r, k in kinds.items())
            lines.append(f"first disagreement at collective #{seq}: {detail}.")
            break
    else:
        lines.append("all ranks enqueued the same collectives.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- TORCH_DISTRIBUTED_DEBUG=DETAIL

@dataclass
class Mismatch:
    """What DETAIL's "Detected mismatch between collectives" error says: two ranks, the sequence
    number (counted from 0) of the rank that raised it, and each one's operation and tensor shapes.
    (A rank waiting in a barrier is reported by the other side with an internal GATHER.)"""

    seq: int
    ranks: tuple[int, int]
    ops: tuple[str, str]
    shapes: tuple[str, str]

    def __str__(self) -> str:
        (a, b), (oa, ob), (sa, sb) = self.ranks, self.ops, self.shapes
        return (f"collective #{self.seq} (DETAIL counts from 0): rank {a} called {oa} {sa}, "
                f"rank {b} called {ob} {sb}")


_FINGERPRINT = re.compile(r"Rank (\d+) is running collective: CollectiveFingerPrint\(SequenceNumber=(\d+),?\s*"
                          r"OpType=(\w+)(?:, TensorShape=(\[[^\]]*\]))?")


def parse_mismatch(message: str) -> Mismatch | None:
    """Read DETAIL's mismatch error (from ``str(exc)`` of the launch's :class:`WorkerError`)."""
    start = message.find("Detected mismatch between collectives")
    if start < 0:
        return None
    end = message.find("Collectives differ", start)
    found = _FINGERPRINT.findall(message[start:end if end > 0 else None])  # the first report only
    if len(found) < 2:
        return None
    (ra, sa, oa, ta), (rb, _, ob, tb) = found[:2]
    return Mismatch(int(sa), (int(ra), int(rb)), (oa, ob), (ta or "[]", tb or "[]"))
