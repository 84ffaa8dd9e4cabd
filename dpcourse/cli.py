"""The ``dpcourse`` command: doctor, lab, bench, demo, release, grade."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _cmd_doctor(args: argparse.Namespace) -> int:
    from dpcourse.env import doctor

    print(doctor())
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    """Start JupyterLab on the lessons folder (as root it needs --allow-root)."""
    root = Path(__file__).resolve().parent.parent
    lessons = root / "lessons" if (root / "lessons").is_dir() else Path.cwd()
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={lessons}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    cmd += args.jupyter_args
    print("starting:", " ".join(cmd), flush=True)
    os.execv(sys.executable, cmd)
    return 0  # not reached


def _cmd_bench(args: argparse.Namespace) -> int:
    from dpcourse import bench

    return bench.main(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from dpcourse import demo

    return demo.main(args)


def _cmd_release(args: argparse.Namespace) -> int:
    from dpcourse.grading import release

    return release.main(args)


def _cmd_grade(args: argparse.Namespace) -> int:
    from dpcourse.grading import grade

    return grade.main(args)


def _sizes(text: str) -> list[int]:
    from dpcourse.bench import parse_sizes

    return parse_sizes(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpcourse", description="A hands-on course on data-parallel training.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="what this machine offers and what to expect")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("lab", help="start JupyterLab on lessons/")
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed on to jupyter lab")
    p.set_defaults(func=_cmd_lab)

    p = sub.add_parser("bench", help="benchmarks that print numbers and ratios measured side by side")
    bsub = p.add_subparsers(dest="bench", required=True)
    b = bsub.add_parser("launch", help="overhead of dpcourse.launch against torchrun")
    b.add_argument("--world-size", type=int, default=2)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--torchrun", action="store_true", help="also time torchrun (several seconds a run)")
    b = bsub.add_parser("allreduce", help="naive vs ring vs torch all_reduce")
    b.add_argument("--world-size", type=int, default=2)
    b.add_argument("--sizes", type=_sizes, default="1KB,1MB,16MB,64MB")
    b.add_argument("--repeats", type=int, default=15,
                   help="timed rounds per size; the median is reported (a shared machine needs many)")
    b.add_argument("--json", type=Path)
    b.add_argument("--plot", type=Path)
    b = bsub.add_parser("ddp", help="single process vs hand-written DDP vs torch DDP")
    b.add_argument("--world-size", type=int, default=2)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--model", default="large", help="a dpcourse.models.build_model name (large: 8.9 M parameters)")
    b.add_argument("--batch-size", type=int, default=256, help="global batch size")
    b.add_argument("--json", type=Path)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="live scaling demo: throughput, speedup and efficiency as workers are added",
                       description="Real data-parallel training at every combination of the comma-separated "
                                   "settings; writes demo.png and demo.csv to --out as runs finish.")
    p.add_argument("--workers", default="1,2", help="comma-separated world sizes (default 1,2)")
    p.add_argument("--model", default="small", help="comma-separated model sizes: tiny, small, medium, large")
    p.add_argument("--batch-size", default="128", help="comma-separated batch sizes, per worker (weak scaling) "
                                                      "or global (--scaling strong)")
    p.add_argument("--algorithm", default="ddp", help="comma-separated: ddp, bucketed, naive")
    p.add_argument("--backend", default=None, help="gloo or nccl (default: nccl with a GPU per worker, else gloo)")
    p.add_argument("--scaling", choices=("weak", "strong"), default="weak",
                   help="weak: --batch-size per worker; strong: --batch-size is the global batch, split over workers")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 20)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a run is stopped")
    p.add_argument("--show", action="store_true", help="also show the plot in a window, updated as runs finish")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("release", help="regenerate exercises/ from solutions/")
    p.add_argument("--solutions", type=Path, default=Path("solutions"))
    p.add_argument("--exercises", type=Path, default=Path("exercises"))
    p.add_argument("--check", action="store_true", help="only report exercises that differ; exit 1 if any")
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("grade", help="grade submitted exercise notebooks")
    p.add_argument("submissions", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("grading-out"))
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds per test (a test may set its own); a deadlocked submission costs this per test")
    p.add_argument("--memory-mb", type=int, default=4096,
                   help="memory a test process may add on top of what torch already maps")
    p.add_argument("--jobs", type=int, default=2, help="tests run at once (one per core is a good start)")
    p.set_defaults(func=_cmd_grade)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
