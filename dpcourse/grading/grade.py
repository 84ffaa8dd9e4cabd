"""``dpcourse grade SUBMISSION.ipynb ... [--out DIR] [--timeout S] [--memory-mb M] [--jobs J]``.

Every test of every submission runs in its own sandboxed child (see ``sandbox``); references and
scores are computed here. Reports are written only after every child is gone: per submission
``DIR/<name>/results.json`` in Gradescope's autograder shape, the class ``DIR/grades.csv``, and a
printed table. Exit status 0 whenever grading ran, whatever the scores.
"""

from __future__ import annotations

import argparse
import csv
import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dpcourse.grading.extract import SubmissionError, read_submission, references_used
from dpcourse.grading.framework import Suite, Test, exercise_ids, get_suite
from dpcourse.grading.sandbox import Finished, Job, become_subreaper, run_jobs
from dpcourse.grading.verdict import Verdict, judge

__all__ = ["main", "grade", "Report"]


@dataclass
class Report:
    """The grading of one submission."""

    path: Path
    key: str
    exercise: str | None
    suite: Suite | None
    verdicts: list[Verdict] = field(default_factory=list)
    problem: str = ""  # set when no test could run at all (every test then scores 0 with this message)

    @property
    def max_score(self) -> float:
        return self.suite.max_score if self.suite else 0.0

    @property
    def score(self) -> float:
        return sum(v.score for v in self.verdicts)

    def results_json(self) -> dict:
        tests = []
        for v in self.verdicts:
            output = "passed" if v.passed else v.message
            if not v.passed and v.test.hint and not self.problem and "NotImplementedError" not in v.message:
                output += f"\nHint: {v.test.hint}"
            if not v.passed and v.output.strip():
                output += "\n--- printed output (last lines) ---\n" + "\n".join(v.output.rstrip().splitlines()[-20:])
            tests.append({"name": v.test.name, "score": v.score, "max_score": v.test.points, "output": output,
                          "visibility": "visible" if v.test.visible else "after_published"})
        result = {"score": self.score, "max_score": self.max_score, "tests": tests}
        if self.problem:
            result["output"] = self.problem
        return result


def _names_of(exercise: str) -> tuple[str, ...]:
    try:
        return get_suite(exercise).names
    except ValueError:
        return ()


def _references_of(exercise: str) -> tuple[str, ...]:
    try:
        return get_suite(exercise).reference_modules
    except ValueError:
        return ()


def _guess(defined: set[str]) -> str | None:
    for ex in exercise_ids():
        if set(get_suite(ex).names) <= defined:
            return ex
    return None


def _unique_key(path: Path, taken: set[str]) -> str:
    for key in (path.stem, f"{path.parent.name}_{path.stem}"):
        if key and key not in taken:
            taken.add(key)
            return key
    i = 2
    while f"{path.stem}_{i}" in taken:
        i += 1
    taken.add(f"{path.stem}_{i}")
    return f"{path.stem}_{i}"


def _fail_all(report: Report, message: str) -> None:
    report.problem = message
    if report.suite:
        report.verdicts = [Verdict(t, False, message) for t in report.suite.tests]


def _plan(paths: list[Path], timeout: float | None, memory_mb: int, seed: int) -> tuple[list[Report], list[Job]]:
    reports: list[Report] = []
    jobs: list[Job] = []
    taken: set[str] = set()
    for path in paths:
        report = Report(path, _unique_key(path, taken), None, None)
        reports.append(report)
        try:
            sub = read_submission(path, _names_of, _references_of, guess=_guess)
        except SubmissionError as exc:
            from dpcourse.grading.extract import exercise_of

            report.exercise = exercise_of(path)
            report.suite = get_suite(report.exercise) if report.exercise in exercise_ids() else None
            _fail_all(report, str(exc))
            continue
        report.exercise = sub.exercise
        if sub.exercise not in exercise_ids():
            _fail_all(report, f"cannot tell which exercise {path.name} is: name it NN_something.ipynb "
                              f"(one of {', '.join(exercise_ids())}) or keep the notebook's metadata.")
            continue
        suite = report.suite = get_suite(sub.exercise)
        if not sub.graded_sources:
            _fail_all(report, f"no graded code found: keep the cells tagged 'graded' that define "
                              f"{', '.join(suite.names)}.")
            continue
        try:
            for label, source in sub.cells:
                compile(source, label, "exec")
        except SyntaxError as exc:
            _fail_all(report, f"{type(exc).__name__} in {exc.filename}, line {exc.lineno}: {exc.msg}. "
                              "Fix it and run the cell before submitting.")
            continue
        used = references_used("\n".join(s for _, s in sub.graded_sources), suite.reference_modules)
        if used:
            _fail_all(report, f"the graded code uses the course's reference implementation ({', '.join(used)}) "
                              "instead of its own: 0 points for these tests.")
            continue
        # first job: run the graded cells once; only code that loads gets its tests run
        jobs.append(Job(_LOADS, suite.names, seed, timeout or 60.0, memory_mb, cells=sub.cells,
                        reference_modules=suite.reference_modules, tag=report))
    return reports, jobs


_LOADS = Test("the graded cells run", lambda learner, params, ctx: None, lambda raw, params, seed: None, points=0)


def _test_jobs(loaded: Job, timeout: float | None) -> list[Job]:
    report: Report = loaded.tag
    assert report.suite is not None
    return [Job(test, loaded.names, loaded.seed + 7919 * i, timeout or test.timeout or 60.0, loaded.memory_mb, cells=loaded.cells, reference_modules=loaded.reference_modules,
                tag=report) for i, test in enumerate(report.suite.tests)]


class _Progress:
    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.start, self.stream = total, 0, time.monotonic(), stream

    def __call__(self, _: Finished | None = None) -> None:
        if _ is not None:
            self.done += 1
        width = 30
        filled = int(width * self.done / max(1, self.total))
        self.stream.write(f"\rgrading [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} tests, "
                          f"{time.monotonic() - self.start:.0f} s")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def grade(paths: list[Path], timeout: float | None = None, memory_mb: int = 4096, parallel: int = 1,
          seed: int | None = None, progress: bool = True, sweep_orphans: bool = False) -> list[Report]:
    """Grade ``paths``; return one :class:`Report` each (nothing is written).

    ``sweep_orphans``: make this process a subreaper and kill every stray child after each test
    (right for the ``dpcourse grade`` command, which starts nothing else).
    """
    seed = secrets.randbelow(2**31) if seed is None else seed
    reports, loads = _plan([Path(p) for p in paths], timeout, memory_mb, seed)
    total = sum(len(job.tag.suite.tests) for job in loads)
    bar = _Progress(total) if progress and total else None
    if bar:
        bar()
    sweep = sweep_orphans and become_subreaper()
    jobs: list[Job] = []
    for done in run_jobs(loads, parallel, sweep_orphans=sweep):  # phase 1: does the code load at all?
        verdict = judge(done)
        if verdict.passed:
            jobs += _test_jobs(done.job, timeout)
        else:
            _fail_all(done.job.tag, f"running the graded cells failed: {verdict.message}")
            done.job.tag.verdicts = [Verdict(t, False, done.job.tag.problem, done.output) for t in done.job.tag.suite.tests]
            if bar:
                bar.done += len(done.job.tag.suite.tests) - 1
                bar(done)
    for done in run_jobs(jobs, parallel, on_done=bar, sweep_orphans=sweep):  # phase 2: every test
        done.job.tag.verdicts.append(judge(done))
    return reports


def write_reports(reports: list[Report], out: Path) -> None:
    """``out/<key>/results.json`` for each submission and ``out/grades.csv`` (overwriting what is there)."""
    for r in reports:
        folder = out / r.key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(r.results_json(), indent=2) + "\n")
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["submission", "path", "exercise", "score", "max_score", "failed_tests"])
        for r in reports:
            failed = "; ".join(v.test.name for v in r.verdicts if not v.passed)
            writer.writerow([r.key, str(r.path), r.exercise or "", f"{r.score:g}", f"{r.max_score:g}", failed])


def table(reports: list[Report]) -> str:
    """The class at a glance."""
    width = max([10] + [len(r.key) for r in reports])
    lines = [f"{'submission':<{width}}  ex  score  failed"]
    for r in reports:
        failed = [v.test.name for v in r.verdicts if not v.passed]
        note = r.problem.splitlines()[0][:70] if r.problem else ", ".join(failed)[:70]
        lines.append(f"{r.key:<{width}}  {r.exercise or '??':>2}  {r.score:>2g}/{r.max_score:<2g}  {note}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``dpcourse grade``."""
    if args.timeout <= 0:
        print(f"dpcourse grade: --timeout must be a positive number of seconds, got {args.timeout:g}.", file=sys.stderr)
        return 2
    if args.memory_mb < 256:
        print(f"dpcourse grade: --memory-mb must be at least 256 (torch alone needs that), got {args.memory_mb}.",
              file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"dpcourse grade: --jobs must be at least 1, got {args.jobs}.", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        print(f"dpcourse grade: cannot write to {out}: {exc.strerror or exc}; pass a writable --out DIR.",
              file=sys.stderr)
        return 2
    start = time.monotonic()
    reports = grade(list(args.submissions), args.timeout, args.memory_mb, args.jobs, sweep_orphans=True)
    write_reports(reports, out)
    print(table(reports))
    print(f"graded {len(reports)} submission(s) in {time.monotonic() - start:.1f} s; "
          f"reports in {out}/ (results.json per submission, grades.csv)")
    return 0
