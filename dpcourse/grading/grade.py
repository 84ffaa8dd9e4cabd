"""``dpcourse grade SUBMISSION.ipynb|FOLDER ... [--out DIR] [--timeout S] [--memory-mb M] [--jobs J]``.

Submissions are taken as platforms deliver them: files named anyhow (``grace_04_ring.ipynb``,
Canvas's ``grace_12345_67890_04_ring.ipynb``), or folders searched for notebooks (one folder per
student, the same file name in each: the folder's name stays in the report's name). The exercise is
read from the notebook itself (its metadata, its ``check("NN", ...)`` call, the names it defines),
from the file name only when the notebook doesn't say.

Every test of every submission runs in its own sandboxed child (see ``sandbox``); references and
scores are computed here. Reports are written only after every child is gone: per submission
``DIR/<name>/results.json`` in Gradescope's autograder shape, the class ``DIR/grades.csv``, and a
printed table; the reason a whole submission could not be graded is in all three. Exit status 0
whenever grading ran, whatever the scores.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import secrets
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from dpcourse.grading.extract import SubmissionError, read_submission, references_used
from dpcourse.grading.framework import Suite, Test, exercise_ids, get_suite
from dpcourse.grading.sandbox import Finished, Job, run_jobs
from dpcourse.grading.verdict import Verdict, judge
from dpcourse.processes import become_subreaper

__all__ = ["Report", "collect", "grade", "main", "report_keys", "table", "write_reports"]


@dataclass
class Report:
    """The grading of one submission."""

    path: Path
    key: str
    exercise: str | None
    suite: Suite | None
    verdicts: list[Verdict] = field(default_factory=list)
    problem: str = ""  # set when no test could run at all (every test then scores 0 with this message)
    notes: list[str] = field(default_factory=list)  # how the submission was read (shown, cost nothing)
    statuses: dict[str, str] = field(default_factory=dict)  # test name -> how its child ended (ok, timeout, ...)

    @property
    def max_score(self) -> float:
        return self.suite.max_score if self.suite else 0.0

    @property
    def score(self) -> float:
        return sum(v.score for v in self.verdicts)

    def _hint(self, v: Verdict, shown: set[str]) -> str:
        """Advice for a failed test, only where it fits: the diagnoses that match its outputs when the
        verdict has them, else the test's own hint when the code ran and gave a wrong result (a crash, a
        timeout or a missing function is not what that hint is about); each one once per submission."""
        if v.passed or self.problem:
            return ""
        hint = getattr(v, "hint", "") or (v.test.hint if self.statuses.get(v.test.name) == "ok" else "")
        if not hint or hint in shown:
            return ""
        shown.add(hint)
        return f"\nHint: {hint}"

    def results_json(self) -> dict:
        tests, shown = [], set()
        for v in self.verdicts:
            output = "passed" if v.passed else v.message + self._hint(v, shown)
            if not v.passed and v.output.strip():
                output += "\n--- printed output (last lines) ---\n" + "\n".join(v.output.rstrip().splitlines()[-20:])
            tests.append({"name": v.test.name, "score": v.score, "max_score": v.test.points, "output": output,
                          "visibility": "visible" if v.test.visible else "after_published"})
        result = {"score": self.score, "max_score": self.max_score, "tests": tests}
        text = "\n".join(([self.problem] if self.problem else []) + self.notes)
        if text:
            result["output"] = text
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


def collect(paths: list[Path]) -> list[tuple[Path, Path | None]]:
    """Every submission in ``paths``: files as given, folders searched for ``*.ipynb`` (checkpoints, hidden
    files and folders, and the ``__MACOSX`` folder of a zip made on a Mac left out). Each comes with the
    folder argument it was found in (None for a file)."""
    found: list[tuple[Path, Path | None]] = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append((path, None))
            continue
        notebooks = sorted(p for p in path.rglob("*.ipynb")
                           if not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(path).parts))
        if not notebooks:
            print(f"dpcourse grade: no .ipynb notebook in {path}/ (or its folders): nothing graded there.",
                  file=sys.stderr)
        found += [(p, path) for p in notebooks]
    seen: set[Path] = set()
    unique = []
    for path, base in found:  # a file named twice (a folder and a file in it, say) is graded once
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append((path, base))
    return unique


_MOODLE = re.compile(r"_assignsubmission_[a-z]+_?$")


def report_keys(items: list[tuple[Path, Path | None]]) -> list[str]:
    """A distinct name per submission that keeps who it is from: the file's stem, after the folders it
    sits in below a folder argument (``alice_04_ring``); for files given one by one, after its folder's
    name when they come from several folders. Clashes left then get more folders, then a number."""
    direct_parents = {p.parent.resolve() for p, base in items if base is None}
    parts: list[list[str]] = []
    for path, base in items:
        if base is not None:  # Moodle names each student's folder "Full Name_123456_assignsubmission_file_"
            names = [*(_MOODLE.sub("", part) for part in path.relative_to(base).parent.parts), path.stem]
        else:
            names = [path.parent.name, path.stem] if len(direct_parents) > 1 and path.parent.name else [path.stem]
        parts.append(names)
    above = [list(Path(p).resolve().parent.parts[:-1]) if base is None else
             list(Path(base).resolve().parts) for p, base in items]  # folders to add on a clash, nearest last
    keys = ["_".join(n) for n in parts]
    where = [Path(p).resolve() for p, _ in items]
    for _ in range(64):  # a clash between different files: add the folder above each (the same file: a number)
        clashes = {k for k in keys if len({where[i] for i, other in enumerate(keys) if other == k}) > 1}
        if not clashes:
            break
        for i, key in enumerate(keys):
            if key in clashes and above[i]:
                parts[i].insert(0, above[i].pop())
                keys[i] = "_".join(parts[i])
    seen: dict[str, int] = {}
    unique = []
    for key in keys:  # the same file given twice, say
        seen[key] = seen.get(key, 0) + 1
        unique.append(key if seen[key] == 1 else f"{key}_{seen[key]}")
    return [re.sub(r"_{2,}", "_", k.replace("/", "_")).strip("_") or "submission" for k in unique]


_LAUNCH_LIMIT = re.compile(r"\btimed out after \d+(?:\.\d+)? s\b")


def stated_limit(message: str, limit: float) -> str:
    """``message`` with a launch's own deadline (a share of the test's) replaced by the limit that was
    set (``--timeout``, or check()'s ``timeout=``): that is the number the learner can act on."""
    return _LAUNCH_LIMIT.sub(f"timed out at the test's time limit of {limit:g} s", message)


_GRADER = ("/dpcourse/grading/", "/dpcourse/launch.py")


def own_frames(message: str) -> str:
    """``message`` with the grader's frames taken out of its tracebacks: what is left is the learner's
    own code (``<cell N>``, a notebook's cells), where the fix goes, and the error itself."""
    kept, grader = [], False
    for line in message.split("\n"):
        if line.startswith('  File "'):
            grader = any(part in line for part in _GRADER)
        elif not line.startswith("    "):
            grader = False
        if not grader:
            kept.append(line)
    return "\n".join(kept)


def tidy(message: str, limit: float) -> str:
    """What a learner should read: the limit that was set, and only their own frames."""
    return own_frames(stated_limit(message, limit))


def _fail_all(report: Report, message: str) -> None:
    report.problem = message
    if report.suite:
        report.verdicts = [Verdict(t, False, message) for t in report.suite.tests]


def _exercise_file(exercise: str) -> str:
    """How a learner finds a fresh copy of the exercise: its file in the course's exercises/ folder."""
    root = Path(__file__).resolve().parents[2] / "exercises"
    found = sorted(root.glob(f"{exercise}_*.ipynb")) if root.is_dir() else []
    return f"exercises/{found[0].name}" if found else f"exercise {exercise}'s notebook in exercises/"


def _no_graded_code(exercise: str, suite: Suite) -> str:
    return (f"no graded code found: the cell tagged 'graded' that defines {', '.join(suite.names)} is missing "
            f"(deleted?). To recover it: open a fresh copy of the exercise ({_exercise_file(exercise)}, or "
            "download it again), copy its cell tagged 'graded' into your notebook (cell tags: the gear icon "
            "in JupyterLab's right sidebar), put your code back in, save, and submit again.")


def _found_note(path: Path, exercise: str, found_by: str) -> str:
    from dpcourse.grading.extract import exercise_from_name

    said = exercise_from_name(path, tuple(exercise_ids()))
    where = {"metadata": "the notebook's metadata", "check() call": f'its check("{exercise}", ...) call',
             "names": "the names it defines", "file name": "its file name"}.get(found_by, found_by)
    note = f"graded as exercise {exercise} (from {where})"
    if said and said != exercise and found_by != "file name":
        note += f"; its file name suggests {said}, but the notebook itself says {exercise}"
    return note + "."


def _plan(paths: list[Path], timeout: float | None, memory_mb: int, seed: int) -> tuple[list[Report], list[Job]]:
    reports: list[Report] = []
    jobs: list[Job] = []
    items = collect(paths)
    known = tuple(exercise_ids())
    for (path, _), key in zip(items, report_keys(items)):
        report = Report(path, key, None, None)
        reports.append(report)
        try:
            sub = read_submission(path, _names_of, _references_of, guess=_guess, known=known)
        except SubmissionError as exc:
            report.exercise = exc.exercise
            report.suite = get_suite(exc.exercise) if exc.exercise in known else None
            if exc.exercise:
                report.notes.append(_found_note(path, exc.exercise, exc.found_by))
            _fail_all(report, str(exc) if report.suite else
                      f"{exc} Its exercise cannot be told either: name it NN_something.ipynb "
                      f"(one of {', '.join(known)}).")
            continue
        report.exercise = sub.exercise
        if sub.exercise not in known:
            _fail_all(report, f"cannot tell which exercise {path.name} is: it has no exercise metadata, no "
                              f"check(\"NN\", ...) call, none of the exercises' function names, and no NN in its "
                              f"name: name it NN_something.ipynb (one of {', '.join(known)}).")
            continue
        report.notes.append(_found_note(path, sub.exercise, sub.found_by))
        if sub.note:
            report.notes.append(sub.note + ".")
        suite = report.suite = get_suite(sub.exercise)
        if not sub.graded_sources:
            _fail_all(report, _no_graded_code(sub.exercise, suite))
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
    return [Job(test, loaded.names, loaded.seed + 7919 * i, timeout or test.timeout or 60.0, loaded.memory_mb,
                cells=loaded.cells, reference_modules=loaded.reference_modules, tag=report)
            for i, test in enumerate(report.suite.tests)]


class _Progress:
    """The grading bar: tqdm's, on a terminal. Anywhere else (a pipe, a CI log) a redrawn bar is noise,
    so it stays off and one line says how far grading got when it ends."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.bar = tqdm(total=total, desc="grading", unit="test", file=self.stream, disable=None)

    def __call__(self, _: Finished | None = None, tests: int = 1) -> None:
        self.done += tests  # counted here too: a disabled tqdm counts nothing
        self.bar.update(tests)

    def close(self) -> None:
        if self.bar.disable:
            seconds = time.monotonic() - self.start
            self.stream.write(f"grading [{self.done}/{self.total} tests] in {seconds:.0f} s\n")
            self.stream.flush()
        self.bar.close()


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
    sweep = sweep_orphans and become_subreaper()
    jobs: list[Job] = []
    for done in run_jobs(loads, parallel, sweep_orphans=sweep):  # phase 1: does the code load at all?
        verdict = judge(done)
        verdict.message = tidy(verdict.message, done.job.timeout)
        if verdict.passed:
            jobs += _test_jobs(done.job, timeout)
        else:
            _fail_all(done.job.tag, f"running the graded cells failed: {verdict.message}")
            tag = done.job.tag
            tag.verdicts = [Verdict(t, False, tag.problem, done.output) for t in tag.suite.tests]
            if bar:  # none of its tests will run: they are done
                bar(done, tests=len(tag.suite.tests))
    for done in run_jobs(jobs, parallel, on_done=bar, sweep_orphans=sweep):  # phase 2: every test
        verdict = judge(done)
        verdict.message = tidy(verdict.message, done.job.timeout)
        done.job.tag.verdicts.append(verdict)
        done.job.tag.statuses[done.job.test.name] = done.status
    if bar:
        bar.close()
    return reports


def write_reports(reports: list[Report], out: Path) -> None:
    """``out/<key>/results.json`` for each submission and ``out/grades.csv`` (overwriting what is there)."""
    for r in reports:
        folder = out / r.key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(r.results_json(), indent=2) + "\n")
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["submission", "path", "exercise", "score", "max_score", "failed_tests", "problem"])
        for r in reports:
            failed = "; ".join(v.test.name for v in r.verdicts if not v.passed)
            writer.writerow([r.key, str(r.path), r.exercise or "", f"{r.score:g}", f"{r.max_score:g}", failed,
                             r.problem])


def table(reports: list[Report], width: int = 110) -> str:
    """The class at a glance: whatever is said about a submission is wrapped under it, never cut."""
    key_width = max([10] + [len(r.key) for r in reports])
    lead = key_width + 2 + 2 + 2 + 5 + 2
    lines = [f"{'submission':<{key_width}}  ex  score  failed"]
    for r in reports:
        failed = [v.test.name for v in r.verdicts if not v.passed]
        note = " ".join(r.problem.split()) if r.problem else "; ".join(failed)
        wrapped = textwrap.wrap(note, max(40, width - lead)) or [""]
        score = f"{r.score:g}/{r.max_score:g}"
        lines.append(f"{r.key:<{key_width}}  {r.exercise or '??':>2}  {score:<5}  {wrapped[0]}".rstrip())
        lines += [" " * lead + more for more in wrapped[1:]]
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
