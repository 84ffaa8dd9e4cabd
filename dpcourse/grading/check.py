"""``check("04", ring_all_reduce)``: the visible tests on the learner's live code, from inside the notebook."""

from __future__ import annotations

import inspect
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any

from dpcourse.grading.framework import get_suite
from dpcourse.grading.sandbox import Job, run_jobs
from dpcourse.grading.verdict import NOT_WRITTEN, Verdict, judge

__all__ = ["check", "CheckResult"]


@dataclass
class CheckResult:
    """How many visible tests passed; ``bool(result)`` is True when all did."""

    exercise: str
    passed: int
    total: int
    failed: list[str] = field(default_factory=list)

    @property
    def all_passed(self) -> bool:
        return self.passed == self.total

    def __bool__(self) -> bool:
        return self.all_passed

    def __repr__(self) -> str:
        return f"CheckResult(exercise={self.exercise!r}, passed={self.passed}, total={self.total})"

    def _ipython_display_(self) -> None:
        """Nothing: a cell ending in ``check(...)`` has printed its summary already (``repr`` still works)."""


def _resolve(names: tuple[str, ...], given: tuple[Any, ...], caller: dict) -> dict[str, Any]:
    if not given:
        missing = [n for n in names if n not in caller]
        if missing:
            raise NameError(f"check() found no {', '.join(missing)} in this notebook: run the cell that defines it "
                            "first, or pass it: check(exercise, " + ", ".join(names) + ").")
        return {n: caller[n] for n in names}
    if len(given) != len(names):
        raise TypeError(f"check() for this exercise takes {len(names)} object(s), {', '.join(names)}; "
                        f"got {len(given)}.")
    for obj in given:
        if not callable(obj):
            raise TypeError(f"check() needs your functions/classes themselves, got {type(obj).__name__}: "
                            f"pass {', '.join(names)} without calling them.")
    by_name = {getattr(obj, "__name__", None): obj for obj in given}
    if set(by_name) == set(names):
        return {n: by_name[n] for n in names}
    return dict(zip(names, given))


def _line(v: Verdict, status: str = "ok") -> str:
    if v.passed:
        return f"\u2713 {v.test.name}"
    if v.message == NOT_WRITTEN:
        return f"\u2717 {v.test.name}: not written yet (NotImplementedError)"
    text = f"\u2717 {v.test.name}: {v.message}"
    # advice that fits: the diagnoses matching the outputs, else the test's hint for a wrong result only
    hint = getattr(v, "hint", "") or (v.test.hint if status == "ok" else "")
    if hint:
        text += "\n    hint: " + hint.replace("\n", "\n    ")
    return text


def check(exercise: str, *objects: Any, timeout: float = 30.0, memory_mb: int = 4096) -> CheckResult:
    """Run the visible tests of ``exercise`` on your code and print one line per test.

    ``objects`` are the functions (or classes) the exercise asks for, e.g.
    ``check("04", ring_all_reduce)``; left out, they are looked up by name in the notebook. Each test
    runs in a child process (your code cannot hang the kernel: a test stops after ``timeout``
    seconds). Raises only for wrong usage; returns a :class:`CheckResult`.
    """
    if not isinstance(exercise, str):
        raise TypeError(f"check() takes the exercise id first, as a string like \"04\"; got {exercise!r}.")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    suite = get_suite(exercise, hidden=False)  # the visible self-checks only, never the instructor's
    frame = inspect.currentframe()
    caller = frame.f_back.f_globals if frame and frame.f_back else {}
    live = _resolve(suite.names, objects, caller)
    seed = secrets.randbelow(2**31)
    tests = [t for t in suite.tests if t.visible]
    jobs = [Job(t, suite.names, seed + 7919 * i, t.timeout or timeout, memory_mb, objects=live,
                reference_modules=suite.reference_modules) for i, t in enumerate(tests)]
    verdicts: list[Verdict] = []

    def show(done: Any) -> None:
        from dpcourse.grading.grade import tidy

        v = judge(done)
        v.message = tidy(v.message, done.job.timeout)
        verdicts.append(v)
        print(_line(v, done.status), flush=True)

    run_jobs(jobs, 1, on_done=show)
    passed = sum(v.passed for v in verdicts)
    if any(v.message == NOT_WRITTEN for v in verdicts):
        print(NOT_WRITTEN)
    elif passed == len(verdicts):
        print(f"all {passed} visible checks passed.")
    else:
        print(f"{passed} of {len(verdicts)} visible checks passed.")
    sys.stdout.flush()
    return CheckResult(suite.exercise, passed, len(verdicts), [v.test.name for v in verdicts if not v.passed])
