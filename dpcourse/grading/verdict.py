"""Turn what came back from a child into a verdict, in the grader's own process."""

from __future__ import annotations

from dataclasses import dataclass

from dpcourse.grading.framework import Fail, Test
from dpcourse.grading.sandbox import Finished

__all__ = ["Verdict", "judge", "explain"]

NOT_WRITTEN = ("not written yet (NotImplementedError): replace the `raise NotImplementedError` line in the "
               "cell tagged 'graded' with your code, run that cell, then check again.")


@dataclass
class Verdict:
    test: Test
    passed: bool
    message: str = ""
    output: str = ""
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return self.test.points if self.passed else 0.0


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def explain(done: Finished) -> str:
    """One clear message for a test that did not produce outputs."""
    job = done.job
    if done.status == "timeout":
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
            text += "\n" + _tail(str(wtb), 8)
        return text
    return f"{kind}: {first}\n{_tail(str(err.get('traceback', '')), 8)}".rstrip()


def judge(done: Finished) -> Verdict:
    """Pass or fail ``done``'s test: the test's own judge decides on raw outputs, here."""
    test = done.job.test
    if done.status != "ok":
        return Verdict(test, False, explain(done), done.output, done.seconds)
    try:
        test.judge(done.raw, test.params, done.job.seed)
    except Fail as fail:
        return Verdict(test, False, str(fail) or "wrong result", done.output, done.seconds)
    except Exception as exc:  # malformed outputs (wrong types, missing keys) are the submission's failure
        return Verdict(test, False, f"unexpected result ({type(exc).__name__}: {exc})", done.output, done.seconds)
    return Verdict(test, True, "", done.output, done.seconds)
