"""Turn what came back from a test's harness into a verdict, in the grader's own process.

Order of judgement: the sandbox's reports (a socket, a write outside the scratch folder, a read of a
hidden path, a signal) fail the test whatever the numbers say; then operations the relay refused
("used allreduce instead of send/recv"); then how the run ended (error, timeout with what each rank
was waiting for, death); then the test's own judge. A failed test then gets the suite's diagnoses
that fit its outputs (and only those): each names a common wrong pattern and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpcourse.grading.framework import Fail, Judged, Test
from dpcourse.grading.sandbox import Finished

__all__ = ["Verdict", "judge", "explain", "NOT_WRITTEN"]

NOT_WRITTEN = ("not written yet (NotImplementedError): replace the `raise NotImplementedError` line in the "
               "cell tagged 'graded' with your code, run that cell, then check again.")


@dataclass
class Verdict:
    test: Test
    passed: bool
    message: str = ""
    output: str = ""
    seconds: float = 0.0
    hint: str = ""  # diagnoses that fit this test's outputs (empty when none does)

    @property
    def score(self) -> float:
        return self.test.points if self.passed else 0.0


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _learner_frames(tb: str, lines: int = 8) -> str:
    """The part of a traceback in the learner's own code (cells, the suite's worker), not the grader's."""
    keep, take = [], False
    for line in tb.rstrip().splitlines():
        if line.startswith('  File "'):
            take = "/dpcourse/grading/" not in line and "/site-packages/torch/" not in line
        if take or not line.startswith("  "):
            keep.append(line)
    return _tail("\n".join(keep), lines)


def _deadlock(done: Finished) -> str:
    blocked = {int(k): v for k, v in (done.blocked or {}).items()}
    n = done.job.test.world_size
    if not blocked:
        return ""
    if len(blocked) == n and all(any(w.startswith("recv") for w in ws) and not any(w.startswith("send") for w in ws)
                                  for ws in blocked.values()):
        return ("a deadlock from the order of blocking calls: every rank waits in recv and none has sent (" +
                "; ".join(f"rank {r}: {', '.join(ws)}" for r, ws in sorted(blocked.items())) +
                "). Post the send first without waiting (dist.isend, then recv, then wait), or let even ranks send "
                "first and odd ranks receive first.")
    if len(blocked) == n and all(any(w.startswith("send") for w in ws) for ws in blocked.values()):
        return ("a deadlock from the order of blocking calls: every rank waits in a blocking send for its peer to "
                "receive (a send completes only when the receive is posted). Use dist.isend, or order the pairs by "
                "rank parity.")
    return "the ranks were waiting for each other: " + "; ".join(
        f"rank {r}: {', '.join(ws)}" for r, ws in sorted(blocked.items())) + "."


def explain(done: Finished) -> str:
    """One clear message for a test that did not produce outputs."""
    job = done.job
    if done.status == "stuck":
        stuck = _deadlock(done) or "the ranks were waiting for each other."
        if not stuck.startswith("a deadlock"):
            stuck += (" A rank that returned early called fewer operations than the others: every rank must call the "
                      "same collectives, in the same order.")
        return f"stopped before the test's time limit of {job.timeout:g} s, as no rank could go on: {stuck}"
    if done.status == "timeout":
        stuck = _deadlock(done)
        if stuck:
            return f"stopped after {job.timeout:g} s without finishing: {stuck}"
        return (f"stopped after {job.timeout:g} s without finishing: an infinite loop, or a deadlock "
                "(ranks waiting for messages that never come - check the order of send and recv on each rank).")
    if done.status == "died":
        return (f"the test process ended before reporting a result ({done.exit_detail}): the code must not call "
                "os._exit, kill processes, or use more than the memory limit "
                f"({job.memory_mb} MB).")
    if done.status == "bad-result":
        return "the test process sent back something unreadable (the code wrote to a file descriptor it does not own?)."
    err = done.error or {}
    kind, message = str(err.get("type", "?")), str(err.get("message", ""))
    first = message.strip().splitlines()[0] if message.strip() else ""
    if kind == "NotImplementedError" or "raised NotImplementedError" in first:
        return NOT_WRITTEN
    if kind in ("MissingName", "UsesReference"):
        return message
    if kind == "SystemExit" or "raised SystemExit" in first:
        return "the code called sys.exit() (or exit()): a function under test must return, not end the process."
    if kind == "MemoryError" or "raised MemoryError" in first or "can't allocate memory" in first:
        return f"ran out of memory (limit {job.memory_mb} MB per process)."
    if kind in ("SyntaxError", "IndentationError"):
        return f"{kind} in {err.get('where', 'the code')}: {first}"
    if kind == "LaunchTimeout":
        return message.split("\n\n")[0].replace(" (stacks printed above)", "")
    if kind in ("WorkerError", "LaunchError"):
        text = first
        wtb = err.get("worker_traceback")
        if wtb:
            text += "\n" + _learner_frames(str(wtb))
        return text
    if "ProcessGroup name not set" in message:
        return ("called a collective through torch's C++ ops (torch._C / functional collectives) instead of "
                f"{job.test.allowed_what}: the grader's process group carries only what the exercise allows. "
                f"({kind}: {first[:160]})")
    if "gloo" in message and ("Unable to find interface" in message or "INTERNAL ASSERT" in message) \
            or "no rendezvous store" in message:
        return ("built a process group of its own (e.g. ProcessGroupGloo from the default store): the ranks can only "
                "reach each other through the grader's process group, which carries what the exercise allows. "
                f"({kind}: {first[:160]})")
    return f"{kind}: {first}\n{_learner_frames(str(err.get('traceback', '')))}".rstrip()


def _refusals(done: Finished) -> str:
    what = done.job.test.allowed_what
    used = sorted({op for s in done.stats or [] for op, n in ((s or {}).get("refused") or {}).items() if n})
    if not used:
        return ""
    return (f"used {', '.join(used)} instead of {what}: this exercise is to be written with {what} only, and the "
            "grader's process group carries nothing else (it counts every operation, whatever route calls it).")


def _diagnose(test: Test, raw: object, ctx: Judged) -> str:
    found = []
    for d in getattr(test, "diagnoses", None) or []:
        try:
            if d.applies(raw, test.params, ctx):
                found.append(f"{d.name}: {d.advice}")
        except Exception:  # noqa: BLE001  a diagnosis that cannot read these outputs does not fit them
            continue
    return "\n".join(found)


def judge(done: Finished) -> Verdict:
    """Pass or fail ``done``'s test: the test's own judge decides on raw outputs, here."""
    test = done.job.test
    err = done.error or {}
    ctx = Judged(done.job.seed, list(done.job.inputs or []), list(done.stats or []), list(done.log or []),
                 f"{err.get('type', '')}: {err.get('message', '')}" if err else "")
    if done.events:
        shown = "; ".join(done.events[:4])
        return Verdict(test, False, f"stopped by the sandbox: {shown}. Graded code may only compute and use the "
                                    "process group it is given.", done.output, done.seconds)
    refused = _refusals(done)
    if refused:
        return Verdict(test, False, refused, done.output, done.seconds)
    if done.status != "ok":
        message = explain(done)
        if done.log and done.status == "error" and message != NOT_WRITTEN:
            message = f"{message}\nthe grader's process group saw: {done.log[0]}"
        hint = _diagnose(test, None, ctx) if done.status == "error" else ""
        return Verdict(test, False, message, done.output, done.seconds, hint)
    try:
        if test.per_rank:
            test.judge(done.raw, test.params, ctx)
        else:  # an older suite's test: its run ran once and returned one value
            test.judge(done.raw[0] if isinstance(done.raw, list) and done.raw else None, test.params, done.job.seed)
    except Fail as fail:
        return Verdict(test, False, str(fail) or "wrong result", done.output, done.seconds,
                       _diagnose(test, done.raw, ctx))
    except Exception as exc:  # malformed outputs (wrong types, missing keys) are the submission's failure
        return Verdict(test, False, f"unexpected result ({type(exc).__name__}: {exc})", done.output, done.seconds)
    return Verdict(test, True, "", done.output, done.seconds)
