"""Suites and tests: what an exercise is graded on, split between the learner's process and the grader's.

A test has two halves. ``run(learner, params, ctx)`` executes in a child process next to the learner's
code and returns *raw outputs only* (numbers, arrays, tensors, lists, dicts). ``judge(raw, params, seed)``
executes in the grader's own process, computes the reference itself and raises :class:`Fail` with a
message when the outputs are wrong. The learner's code never sees the judge and never decides a score.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Fail", "Test", "Suite", "Context", "get_suite", "exercise_ids", "calls", "reset_calls",
           "forbid_collectives", "POINT_TO_POINT"]

# Collectives a learner's code might call; counted in every child process (see ``calls``).
COUNTED = ("all_reduce", "reduce", "broadcast", "all_gather", "all_gather_into_tensor", "all_gather_object",
           "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "gather", "scatter",
           "all_reduce_coalesced", "broadcast_object_list", "barrier", "send", "recv", "isend", "irecv",
           "batch_isend_irecv")
POINT_TO_POINT = frozenset({"send", "recv", "isend", "irecv", "batch_isend_irecv", "barrier"})
_CALLS: dict[str, int] = {}


class Fail(AssertionError):
    """Raised by a judge: the test failed; the message says what was wrong."""


@dataclass
class Context:
    """What ``run`` gets besides the learner's code: the seed and the seconds it may spend launching."""

    seed: int
    timeout: float
    launcher: Callable[..., list[Any]] | None = None  # dpcourse.launch, bound before the learner's code ran

    def launch(self, fn: Callable[..., Any], world_size: int, *args: Any) -> list[Any]:
        """``dpcourse.launch`` with this test's time budget and one thread per rank."""
        if self.launcher is None:
            from dpcourse.launch import launch

            self.launcher = launch
        return self.launcher(fn, world_size, *args, timeout=self.timeout, threads=1)


@dataclass
class Test:
    """One graded test. ``timeout`` (seconds) overrides the grader's default when set."""

    name: str
    run: Callable[[Any, dict, Context], Any]
    judge: Callable[[Any, dict, int], None]
    params: dict = field(default_factory=dict)
    points: float = 1.0
    visible: bool = True
    hint: str = ""
    timeout: float | None = None


@dataclass
class Suite:
    """The tests of one exercise and the names the learner must define.

    ``reference_modules``: the course's own implementations; code that uses them scores 0.
    """

    exercise: str
    names: tuple[str, ...]
    title: str = ""
    reference_modules: tuple[str, ...] = ("dpcourse.collectives", "dpcourse.ddp")
    tests: list[Test] = field(default_factory=list)

    def add(self, name: str, run: Callable, judge: Callable, *, params: dict | None = None, points: float = 1.0,
            visible: bool = True, hint: str = "", timeout: float | None = None) -> Test:
        """Append a test and return it."""
        if any(t.name == name for t in self.tests):
            raise ValueError(f"suite {self.exercise} already has a test named {name!r}")
        test = Test(name, run, judge, dict(params or {}), points, visible, hint, timeout)
        self.tests.append(test)
        return test

    @property
    def max_score(self) -> float:
        return sum(t.points for t in self.tests)


def exercise_ids() -> list[str]:
    """Ids of the exercises that have a suite (modules ``dpcourse.grading.suites.exNN``)."""
    from dpcourse.grading import suites

    return sorted(m.name[2:] for m in pkgutil.iter_modules(suites.__path__) if m.name.startswith("ex"))


def get_suite(exercise: str) -> Suite:
    """The suite of ``exercise`` (``"04"``); a one-line error names the known ones."""
    exercise = str(exercise).zfill(2) if str(exercise).isdigit() else str(exercise)
    if exercise not in exercise_ids():
        raise ValueError(f"no graded exercise {exercise!r}: the exercises are {', '.join(exercise_ids())}.")
    return importlib.import_module(f"dpcourse.grading.suites.ex{exercise}").SUITE


# --------------------------------------------------------------------------- counting collectives

def calls() -> dict[str, int]:
    """How many times each ``torch.distributed`` collective was called in this process since the reset."""
    return dict(_CALLS)


def reset_calls() -> None:
    """Start counting collectives afresh (call first thing in a worker)."""
    _CALLS.clear()


def _instrument() -> None:
    """Wrap the collectives of ``torch.distributed`` so each call is counted (done once per child)."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    for name in COUNTED:
        original = getattr(c10d, name, None) or getattr(dist, name, None)
        if original is None or getattr(original, "_dpcourse_counted", False):
            continue

        def counted(*args: Any, _name: str = name, _original: Callable = original, **kwargs: Any) -> Any:
            _CALLS[_name] = _CALLS.get(_name, 0) + 1
            return _original(*args, **kwargs)

        counted._dpcourse_counted = True  # type: ignore[attr-defined]
        counted.__wrapped__ = original  # type: ignore[attr-defined]
        for module in (dist, c10d):
            if hasattr(module, name):
                setattr(module, name, counted)


def forbid_collectives(per_rank_calls: list[dict], allowed: frozenset[str] = POINT_TO_POINT,
                       what: str = "send/recv") -> None:
    """Fail when any rank called a collective outside ``allowed`` (judge-side helper)."""
    used = sorted({name for c in per_rank_calls for name, n in (c or {}).items() if n and name not in allowed})
    if used:
        raise Fail(f"calls dist.{', dist.'.join(used)}: this exercise is to write it with {what} only.")
