"""Exercise 11: diagnose six broken data-parallel training functions and fix them.

The learner's notebook defines ``STUDENT_ID`` (their variant: :class:`dpcourse.debugging_lab.DebuggingLab`
builds the six cases from it), ``diagnosis()`` returning ``{case number: {"family", "ranks", ...}}``,
and ``fixed_1`` ... ``fixed_6``. The grader rebuilds the lab from the id, so the truth of every case
and the single-process reference are computed here, never in the learner's process. Per family three
tests give partial credit: the family named, the rank(s) and the details the tools report (for a hang
the operation and its sequence number), and the fix: run on 3 ranks through ``dpcourse.launch``, it
must equal one process on the global batch, call the same collectives on every rank, and finish.
"""

from __future__ import annotations

from typing import Any

from dpcourse.debugging_lab import FAMILIES, WORLD, DebuggingLab, reference
from dpcourse.grading.framework import Context, Fail, Suite
from dpcourse.grading.suites._common import compare

NAMES = ("STUDENT_ID", "diagnosis") + tuple(f"fixed_{n}" for n in range(1, len(FAMILIES) + 1))
SUITE = Suite("11", names=NAMES, title="Debugging lab",)

DETAILS = {  # what the diagnosis must say besides family and ranks, as the lesson's tools report it
    "hang": "the operation and its sequence number",
    "divergence": "the first step and the first parameter where the ranks split",
    "averaging": "the first parameter that differs from one process after one step",
    "data order": "the first step at which a rank reads a wrong batch",
    "uneven inputs": "the step at which the others wait for it",
    "checkpoint race": "nothing more",
}


def _lab(student_id: Any) -> DebuggingLab:
    try:
        return DebuggingLab(student_id)
    except ValueError as exc:
        raise Fail(str(exc)) from None


def _number(lab: DebuggingLab, family: str) -> int:
    return next(n for n, c in lab.cases.items() if c.family == family)


# --------------------------------------------------------------------------- the diagnosis

def _run_diagnosis(learner: Any, p: dict, ctx: Context) -> Any:
    return {"student_id": learner.STUDENT_ID, "diagnosis": learner.diagnosis()}


def _entry(raw: Any, number: int) -> dict:
    given = raw["diagnosis"]
    if not isinstance(given, dict):
        raise Fail(f"diagnosis() returned {type(given).__name__}; return a dict {{case number: {{...}}}}.")
    entry = given.get(number, given.get(str(number)))
    if entry is None:
        raise Fail(f"diagnosis() has no entry for case {number}.")
    if not isinstance(entry, dict):
        raise Fail(f"diagnosis()[{number}] is {type(entry).__name__}; make it a dict with 'family', 'ranks', ...")
    return entry


def _ranks(value: Any) -> list[int] | None:
    if value == "all":
        return list(range(WORLD))
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(r, int) and not isinstance(r, bool) for r in value):
        return sorted(set(value))
    return None


def _judge_form(raw: Any, p: dict, seed: int) -> None:
    lab = _lab(raw["student_id"])
    for number in lab.cases:
        entry = _entry(raw, number)
        if entry.get("family") not in FAMILIES:
            raise Fail(f"diagnosis()[{number}]['family'] is {entry.get('family')!r}; use one of {', '.join(FAMILIES)}.")
        if _ranks(entry.get("ranks")) is None:
            raise Fail(f"diagnosis()[{number}]['ranks'] is {entry.get('ranks')!r}; give a list of ranks like [1] "
                       "(or \"all\").")


def _judge_family(raw: Any, p: dict, seed: int) -> None:
    lab = _lab(raw["student_id"])
    number = _number(lab, p["family"])
    got = _entry(raw, number).get("family")
    if got != p["family"]:
        raise Fail(f"case {number} is the {p['family']} bug; the diagnosis says {got!r}.")


def _op(value: Any) -> str:
    return str(value).upper().replace("_", "").replace(" ", "").replace("DIST.", "")


def _judge_details(raw: Any, p: dict, seed: int) -> None:
    family = p["family"]
    lab = _lab(raw["student_id"])
    number = _number(lab, family)
    truth, entry = lab.cases[number].truth, _entry(raw, number)
    ranks = _ranks(entry.get("ranks"))
    if ranks != truth["ranks"]:
        raise Fail(f"case {number} ({family}): the diagnosis names ranks {entry.get('ranks')!r}; "
                   f"the bug is on rank(s) {truth['ranks']}.")
    if family == "hang":
        if _op(entry.get("op")) != truth["op"]:
            raise Fail(f"case {number} (hang): the diagnosis names operation {entry.get('op')!r}; the rank calls "
                       f"{truth['op']} (as TORCH_DISTRIBUTED_DEBUG=DETAIL names it).")
        if "collective_seq_id" in entry:
            if entry["collective_seq_id"] != truth["collective_seq_id"]:
                raise Fail(f"case {number} (hang): collective_seq_id {entry['collective_seq_id']!r}, but the flight "
                           f"recorder numbers that call {truth['collective_seq_id']}.")
        elif entry.get("seq") != truth["seq"]:
            off = " (the flight recorder counts from 1, DETAIL from 0: give the flight recorder's number as " \
                  "'collective_seq_id')" if entry.get("seq") == truth["seq"] + 1 else ""
            raise Fail(f"case {number} (hang): seq {entry.get('seq')!r}, but DETAIL's SequenceNumber of that call is "
                       f"{truth['seq']}{off}.")
    for key in ("step", "parameter"):
        if key in truth and entry.get(key) != truth[key]:
            raise Fail(f"case {number} ({family}): {key} {entry.get(key)!r}; the tools report {truth[key]!r}.")


# --------------------------------------------------------------------------- the fix

COLLECTIVES = ("all_reduce", "broadcast", "barrier", "all_gather", "reduce", "gather", "scatter", "reduce_scatter",
               "all_to_all", "monitored_barrier", "send", "recv", "isend", "irecv", "all_gather_object",
               "broadcast_object_list", "all_gather_into_tensor", "reduce_scatter_tensor")


def _counting(seen: dict[str, int]) -> dict[str, Any]:
    """Wrap torch.distributed's collectives so each call on this rank is counted; returns the originals."""
    import torch.distributed as dist

    originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}
    for name, original in originals.items():
        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            seen[_name] = seen.get(_name, 0) + 1
            return _original(*args, **kwargs)

        setattr(dist, name, counted)
    return originals


def _worker(fn: Any, config: dict) -> dict:
    import gc

    import torch
    import torch.distributed as dist

    seen: dict[str, int] = {}
    originals = _counting(seen)
    try:
        result = fn(dict(config))
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)
    if not isinstance(result, dict) or not isinstance(result.get("params"), dict):
        raise TypeError("a fixed function must return {'params': {name: tensor}, ...} like the broken one.")
    out = {"params": {str(k): v.detach().cpu().numpy().copy() if isinstance(v, torch.Tensor) else v
                      for k, v in result["params"].items()},
           "loaded": result.get("loaded"), "calls": seen}
    gc.collect()  # drop a DDP reducer before the process group goes
    return out


def _run_fix(learner: Any, p: dict, ctx: Context) -> Any:
    import os
    import tempfile

    from dpcourse.launch import LaunchError, LaunchTimeout

    lab = DebuggingLab(learner.STUDENT_ID)
    number = _number(lab, p["family"])
    fn = getattr(learner, f"fixed_{number}")
    with tempfile.TemporaryDirectory() as tmp:
        config = lab.config(number, checkpoint=os.path.join(tmp, "checkpoint.pt"))
        try:
            ranks = ctx.launch(_worker, WORLD, fn, config)
        except LaunchTimeout as exc:
            return {"student_id": learner.STUDENT_ID, "hung": exc.ranks, "seconds": ctx.timeout}
        except LaunchError as exc:  # a worker raised or died: say which, in one line
            return {"student_id": learner.STUDENT_ID, "failed": str(exc).split("\n\n")[0]}
    return {"student_id": learner.STUDENT_ID, "ranks": ranks}


def _judge_fix(raw: Any, p: dict, seed: int) -> None:
    family = p["family"]
    lab = _lab(raw["student_id"])
    number = _number(lab, family)
    case = lab.cases[number]
    if "hung" in raw:
        join = " (Join lets a rank that ran out of data shadow the others.)" if family == "uneven inputs" else ""
        raise Fail(f"fixed_{number} did not finish: rank(s) {raw['hung']} were still running after "
                   f"{raw['seconds']:g} s (a hang, a deadlock if the stacks show them waiting in collectives). "
                   "A longer timeout or a try/except only hides a hang; make every rank call the same collectives "
                   "in the same order." + join)
    if "failed" in raw:
        raise Fail(f"fixed_{number} did not finish: {raw['failed']}")
    ranks = raw["ranks"]
    if family != "uneven inputs":  # under Join the joined rank's shadow collectives run inside DDP
        counts = [{k: v for k, v in (r["calls"] or {}).items() if v} for r in ranks]
        if any(c != counts[0] for c in counts):
            detail = "; ".join(f"rank {r}: {c}" for r, c in enumerate(counts))
            raise Fail(f"fixed_{number}: the ranks called different collectives ({detail}); every rank must call "
                       "the same ones, or the run hangs as soon as the timing changes.")
    want = reference(case)
    for r, got in enumerate(ranks):
        params = got["params"]
        if set(params) != set(want):
            raise Fail(f"fixed_{number}, rank {r}: params has names {sorted(params)}, expected {sorted(want)}.")
        for name in want:
            compare(f"fixed_{number} (the {family} case), rank {r}, parameter {name} vs one process on the global "
                    "batch", params[name], want[name], 1e-7, 1e-9)
        if family == "checkpoint race":
            expected = list(range(case.config["epochs"]))
            if got["loaded"] != expected:
                raise Fail(f"fixed_{number}, rank {r}: reloaded the checkpoints of epochs {got['loaded']!r}, expected "
                           f"{expected}: keep the save and the reload, and make the readers wait for the writer.")


SUITE.add("the diagnosis is well-formed", _run_diagnosis, _judge_form, points=1,
          hint="diagnosis() returns {1: {'family': ..., 'ranks': [...], ...}, 2: ...} with one of the six families.")
for _family in FAMILIES:
    _details = "the rank(s)" + ("" if _family == "checkpoint race" else " and " + DETAILS[_family])
    SUITE.add(f"{_family}: the diagnosis names the family", _run_diagnosis, _judge_family,
              params={"family": _family}, points=1, visible=False)
    SUITE.add(f"{_family}: the diagnosis names {_details}", _run_diagnosis, _judge_details,
              params={"family": _family}, points=2, visible=False)
    SUITE.add(f"{_family}: the fix trains like one process, on every rank, without hanging", _run_fix, _judge_fix,
              params={"family": _family}, points=3, timeout=60,
              hint="compare your fix with one process on the global batch; every rank must call the same collectives.")
