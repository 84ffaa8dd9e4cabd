"""Suites and tests: what an exercise is graded on, split between the ranks and the grader.

A test has up to three halves:

* ``inputs(params, rng) -> [input of rank 0, input of rank 1, ...]`` runs in the grader's own process
  with a generator seeded from ``os.urandom`` (nothing in the learner's processes can rebuild it);
  each rank receives only its own item, after it was started.
* ``run(learner, params, ctx)`` runs on every rank, next to the learner's code, in a sandbox (see
  ``isolate``), and returns *raw outputs only* (numbers, arrays, tensors, lists, dicts). ``ctx.input``
  is this rank's input, ``ctx.rank`` and ``ctx.world_size`` say who it is. The ranks' process group
  is the grader's relay (``relay``): it carries out only what ``allowed`` permits, and counts every
  operation and byte in the harness process, out of the learner's reach.
* ``judge(raw, params, ctx)`` runs in the grader's own process with every rank's outputs (``raw``,
  one per rank), ``ctx.inputs`` (what it sent) and ``ctx.stats`` (what the relay counted per rank);
  it computes the reference itself and raises :class:`Fail` with a message when something is wrong.

Which tests a learner can see: the visible ones live in ``dpcourse/grading/suites/exNN_slug.py`` (shipped
with the package, run by ``check``). The instructor's hidden ones live outside the package (see
``hidden.py``) and add tests built from the same ``run``/``judge`` halves with their own parameters.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Fail", "Test", "Suite", "Context", "Judged", "get_suite", "exercise_ids", "suite_modules",
           "COURSE_REFERENCES", "POINT_TO_POINT", "refused", "Hint"]

POINT_TO_POINT = frozenset({"send", "recv", "barrier"})


class Fail(AssertionError):
    """Raised by a judge: the test failed; the message says what was wrong."""


@dataclass
class Context:
    """What ``run`` gets on each rank besides the learner's code."""

    seed: int
    timeout: float
    rank: int = 0
    world_size: int = 1
    input: Any = None
    scratch: str = "."  # a folder this rank may write to (shared by all ranks when the test asks for it)
    launcher: Callable[..., list[Any]] | None = None  # dpcourse.launch, for tests that start their own ranks

    def launch(self, fn: Callable[..., Any], world_size: int, *args: Any, **kwargs: Any) -> list[Any]:
        """``dpcourse.launch`` with this test's time budget and one thread per rank (``per_rank=False`` tests)."""
        if self.launcher is None:
            from dpcourse.launch import launch

            self.launcher = launch
        kwargs.setdefault("timeout", max(1.0, 0.75 * self.timeout - 1.0))
        return self.launcher(fn, world_size, *args, threads=1, **kwargs)


@dataclass
class Judged:
    """What ``judge`` gets besides the outputs: what was sent, and what the grader's relay counted."""

    seed: int
    inputs: list[Any]
    stats: list[dict]
    log: list[str] = field(default_factory=list)
    error: str = ""  # the message of the error the run ended with, if it did

    def ops(self, rank: int) -> dict[str, int]:
        return dict((self.stats[rank] or {}).get("ops", {})) if rank < len(self.stats) else {}

    def bytes_sent(self, rank: int) -> int:
        return int((self.stats[rank] or {}).get("bytes_sent", 0)) if rank < len(self.stats) else 0


@dataclass
class Hint:
    """A diagnosis: shown only when ``applies(raw, params, ctx)`` says the outputs show this pattern."""

    name: str
    advice: str
    applies: Callable[[Any, dict, Judged], bool]


@dataclass
class Test:
    """One graded test. ``timeout`` (seconds) overrides the grader's default when set."""

    name: str
    run: Callable[[Any, dict, Context], Any]
    judge: Callable[[Any, dict, Any], None]
    params: dict = field(default_factory=dict)
    points: float = 1.0
    visible: bool = True
    hint: str = ""
    timeout: float | None = None
    inputs: Callable[[dict, Any], list[Any]] | None = None
    allowed: frozenset[str] | None = None  # operations the relay carries out (None: all)
    allowed_what: str = "send/recv"
    shared_scratch: bool = False
    # True: ``run`` runs on each of ``world_size`` ranks on the grader's relay and ``judge(raw, params, ctx)`` gets
    # every rank's outputs. False (older suites): ``run`` runs once, may ``ctx.launch`` ranks of its own on gloo,
    # and ``judge(raw, params, seed)`` gets what it returned; such tests get no relay counts.
    per_rank: bool = False
    diagnoses: list = field(default_factory=list)  # the suite's, shared (see Suite.diagnose)

    @property
    def world_size(self) -> int:
        return int(self.params.get("world_size", 1)) if self.per_rank else 1


# The course's own all-reduce and DDP, in their reference and their fast or instrumented forms: no graded
# code may use them (every suite adds the modules of its own lesson).
COURSE_REFERENCES = ("dpcourse.allreduce", "dpcourse.allreduce_pipelined", "dpcourse.ddp_by_hand",
                     "dpcourse.ddp_instrumented")


@dataclass
class Suite:
    """The tests of one exercise and the names the learner must define.

    ``reference_modules``: the course's own implementations; code that uses them scores 0.
    ``diagnoses``: :class:`Hint` s tried on every failed test's outputs.
    """

    exercise: str
    names: tuple[str, ...]
    title: str = ""
    reference_modules: tuple[str, ...] = COURSE_REFERENCES
    tests: list[Test] = field(default_factory=list)
    diagnoses: list[Hint] = field(default_factory=list)
    defaults: dict = field(default_factory=dict)  # keyword defaults of add() for this suite's tests

    def add(self, name: str, run: Callable, judge: Callable, *, params: dict | None = None, points: float = 1.0,
            visible: bool = True, hint: str = "", timeout: float | None = None, **kw: Any) -> Test:
        """Append a test and return it."""
        if any(t.name == name for t in self.tests):
            raise ValueError(f"suite {self.exercise} already has a test named {name!r}")
        test = Test(name, run, judge, dict(params or {}), points, visible, hint, timeout, **{**self.defaults, **kw})
        test.diagnoses = self.diagnoses
        self.tests.append(test)
        return test

    def diagnose(self, name: str, advice: str) -> Callable:
        """Decorator: register ``applies(raw, params, ctx) -> bool`` as a named diagnosis."""
        def register(fn: Callable) -> Callable:
            self.diagnoses.append(Hint(name, advice, fn))
            return fn
        return register

    @property
    def max_score(self) -> float:
        return sum(t.points for t in self.tests)


SUITE_NAME = re.compile(r"ex(\d\d)(?:_\w+)?$")  # ex04_allreduce: exercise 04, named like its lesson


def suite_modules() -> dict[str, str]:
    """Exercise id -> module of its visible suite, e.g. ``{"04": "dpcourse.grading.suites.ex04_allreduce"}``."""
    from dpcourse.grading import suites

    found = {}
    for m in pkgutil.iter_modules(suites.__path__):
        match = SUITE_NAME.match(m.name)
        if match:
            found[match[1]] = f"dpcourse.grading.suites.{m.name}"
    return found


def exercise_ids() -> list[str]:
    """Ids of the exercises that have a suite (modules ``dpcourse.grading.suites.exNN_stem``)."""
    return sorted(suite_modules())


def get_suite(exercise: str, hidden: bool = True) -> Suite:
    """The suite of ``exercise`` (``"04"``), with the instructor's hidden tests when ``hidden`` and a hidden
    suite is in use (see ``hidden``); a one-line error names the known exercises."""
    exercise = str(exercise).zfill(2) if str(exercise).isdigit() else str(exercise)
    if exercise not in exercise_ids():
        raise ValueError(f"no graded exercise {exercise!r}: the exercises are {', '.join(exercise_ids())}.")
    suite = importlib.import_module(suite_modules()[exercise]).SUITE
    if not hidden:
        return suite
    from dpcourse.grading import hidden as instructor

    return instructor.extend(suite)


def refused(ctx: Judged, what: str = "send/recv") -> None:
    """Fail when the relay refused an operation on any rank (names the operation, judge-side helper)."""
    used = sorted({op for s in ctx.stats for op, n in ((s or {}).get("refused") or {}).items() if n})
    if used:
        raise Fail(f"used {', '.join(used)} instead of {what}: this exercise is to write it with {what} only "
                   "(the grader's process group carries nothing else).")
