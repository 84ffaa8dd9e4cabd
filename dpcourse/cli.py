"""The ``dpcourse`` command: doctor, lab, bench, demo, release, grade, audio, review."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_doctor(args: argparse.Namespace) -> int:
    from dpcourse.env import doctor

    print(doctor())
    return 0


def _cmd_links(args: argparse.Namespace) -> int:
    from dpcourse.dilation import gpus
    from dpcourse.network import links

    print("Simulated links (dpcourse.launch(fn, n, network=NAME)), per rank and per direction:")
    for name, link in links().items():
        print(f"  {name:15s} {link}\n  {'':15s} source: {link.source}")
    print("\nGPUs a link can be dilated for (dpcourse.dilation.cluster_link(link, model, x, y, gpu=NAME)):")
    for name, card in gpus().items():
        print(f"  {name:15s} {card.name}: {card.fp32 / 1e12:g} TFLOP/s fp32, {card.bf16 / 1e12:g} TFLOP/s bf16\n"
              f"  {'':15s} source: {card.source}")
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    from dpcourse import lab

    return lab.main(args.jupyter_args)


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
    from dpcourse.grading import grade, hidden, sandbox

    sandbox.start_zygote()  # before any submission or hidden test is read: what graded code is started from
    if getattr(args, "suite", None):
        try:
            hidden.use(args.suite)
        except ValueError as exc:
            print(f"dpcourse grade: {exc}", file=sys.stderr)
            return 2

    return grade.main(args)


def _cmd_audio(args: argparse.Namespace) -> int:
    from dpcourse import audio

    return audio.main(args)


def _cmd_review(args: argparse.Namespace) -> int:
    from dpcourse import review

    return review.main(args)


def _sizes(text: str) -> list[int]:
    from dpcourse.bench import parse_sizes

    return parse_sizes(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpcourse", description="A hands-on course on data-parallel training.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="what this machine offers and what to expect")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("links", help="the simulated network's preset links and GPUs, with their sources")
    p.set_defaults(func=_cmd_links)

    p = sub.add_parser("lab", help="start JupyterLab on the course, opened on the course map",
                       description="JupyterLab on the whole course (lessons/, exercises/, solutions/), opened on "
                                   "lessons/index.ipynb. Every other option goes to jupyter lab, e.g. to serve a "
                                   "class: dpcourse lab --no-browser --ip=0.0.0.0 --port=8888 "
                                   "--IdentityProvider.token=SECRET (jupyter lab --help-all lists them).")
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="options passed on to jupyter lab")
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
    b = bsub.add_parser("network",
                        help="the simulated link against its alpha-beta model; overlap vs flat on a cluster link")
    b.add_argument("--link", default="1GbE", help="preset for the all-reduce part (dpcourse.links() lists them)")
    b.add_argument("--sizes", type=_sizes, default="1MB,4MB,16MB,64MB")
    b.add_argument("--world-sizes", default="2,4")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--cluster", default="100GbE", help="preset for the DDP part, dilated for --gpu (it must stay "
                   "slower than this machine's loopback once dilated)")
    b.add_argument("--gpu", default="A100", help="the GPU the DDP part's cluster stands for: T4, A100, H100, H200")
    b.add_argument("--steps", type=int, default=8)
    b.add_argument("--json", type=Path)
    b = bsub.add_parser("ddp", help="single process vs hand-written DDP vs torch DDP")
    b.add_argument("--world-size", type=int, default=2)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--model", default="large", help="a dpcourse.models.build_model name (large: 8.9 M parameters)")
    b.add_argument("--batch-size", type=int, default=256, help="global batch size")
    b.add_argument("--json", type=Path)
    b = bsub.add_parser("compression", help="bytes per step and step time of DDP compression hooks on one link",
                        description="Default DDP, bf16, PowerSGD at ranks 1 and 4 and, with --hook, your own "
                                    "communication hook, side by side in one run on a simulated link.")
    b.add_argument("--network", default="10GbE",
                   help="a link preset (dpcourse.links()), or 'ideal' to count bytes only")
    b.add_argument("--gpu", default="A100", help="dilate the link for this GPU (A100, H100, T4), as lesson 10 does; "
                                                 "'none' runs the link as it is")
    b.add_argument("--hook", default=None, metavar="FILE:FUNCTION",
                   help="your hook, from a .py file or the cells tagged 'graded' of a notebook")
    b.add_argument("--hook-state", default=None, metavar="EXPR",
                   help="the state passed to your hook, a Python expression evaluated next to it, "
                        "e.g. 'TopKState(0.01)'")
    b.add_argument("--world-size", type=int, default=2)
    b.add_argument("--steps", type=int, default=6, help="timed steps per method (after 3 warm-up steps)")
    b.add_argument("--model", default="lesson10", help="lesson10 (the lesson's digits MLP) or a build_model name")
    b.add_argument("--per-rank", type=int, default=128, help="samples per rank per step")
    b.add_argument("--json", type=Path)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="live scaling demo: throughput, speedup and efficiency as workers are added",
                       description="Real data-parallel training at every combination of the comma-separated "
                                   "settings; writes demo.png and demo.csv to --out as runs finish.")
    p.add_argument("--workers", default="1,2", help="comma-separated world sizes (default 1,2)")
    p.add_argument("--model", default="small", help="comma-separated model sizes: tiny, small, medium, large")
    p.add_argument("--batch-size", default="512", help="comma-separated batch sizes, per worker (weak scaling) "
                                                      "or global (--scaling strong); default 512: enough compute per "
                                                      "step that data parallelism can pay off on 2 cores")
    p.add_argument("--algorithm", default="ddp", help="comma-separated: ddp, bucketed, naive")
    p.add_argument("--backend", default=None, help="gloo or nccl (default: nccl with a GPU per worker, else gloo)")
    p.add_argument("--scaling", choices=("weak", "strong"), default="weak",
                   help="weak: --batch-size per worker; strong: --batch-size is the global batch, split over workers")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="runs per point; the plot shows the median and the min-max "
                                                          "spread (default 3)")
    p.add_argument("--network", default=None, metavar="PRESET",
                   help="run the ranks on a simulated link, a preset of dpcourse.links() (e.g. 25GbE, 1GbE); "
                        "default: none, this machine's real loopback")
    p.add_argument("--cluster", default=None, metavar="GPU",
                   help="dilate the link for the demo's model so the run stands for GPUs of this kind on it "
                        "(T4, A100, H100, H200; the link defaults to InfiniBand NDR)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the single-process runs (1 process x 1..cores threads) the speedups are compared with")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a run is stopped")
    p.add_argument("--show", action="store_true", help="also show the plot in a window, updated as runs finish")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("release", help="regenerate exercises/ from solutions/ (never replacing a learner's edits)")
    p.add_argument("--solutions", type=Path, default=Path("solutions"))
    p.add_argument("--exercises", type=Path, default=Path("exercises"))
    p.add_argument("--check", action="store_true",
                   help="only report exercises that differ and why (a learner's edits, or a changed solution); "
                        "exit 1 if any")
    p.add_argument("--force", action="store_true",
                   help="also replace exercises someone has edited or run (each is copied to exercises/backups/ first)")
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("grade", help="grade exercise notebooks: your own, or a class's",
                       description="Grade exercise notebooks with every test, in sandboxed processes. Pass files "
                                   "named anyhow (the exercise is read from the notebook) or folders (searched for "
                                   "*.ipynb; one folder per student keeps each name in the reports).")
    p.add_argument("submissions", nargs="+", type=Path, help="notebooks, or folders of them")
    p.add_argument("--out", type=Path, default=Path("grading-out"))
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds per test (a test may set its own); a deadlocked submission costs this per test")
    p.add_argument("--memory-mb", type=int, default=4096,
                   help="memory a test process may add on top of what torch already maps")
    p.add_argument("--jobs", type=int, default=2, help="tests run at once (one per core is a good start)")
    p.add_argument("--suite", default=None, metavar="DIR|ARCHIVE",
                   help="the instructor's hidden tests: a folder of exNN.py or a .zip/.tar.gz of it (default: "
                        "instructor/suites of the clone this runs from; see instructor/README.md)")
    p.set_defaults(func=_cmd_grade)

    p = sub.add_parser("audio", help="speak the lessons' dialogues and audiobooks (offline: flite or espeak-ng)",
                       description="Builds each lesson's audio into ~/.dpcourse/audio (or $DPCOURSE_HOME/audio); "
                                   "the Listen tab of the lesson's aids plays it. Needs: apt-get install flite sox")
    p.add_argument("lessons", nargs="*", help="lesson numbers, e.g. 04 6b (default: every lesson)")
    p.add_argument("--track", choices=("dialogue", "audiobook", "both"), default="both")
    p.add_argument("--engine", choices=("flite", "espeak-ng"), default=None, help="default: flite, else espeak-ng")
    p.add_argument("--force", action="store_true", help="rebuild even when the built audio is up to date")
    p.add_argument("--measure", action="store_true", help="also print words per second and each voice's pitch")
    p.set_defaults(func=_cmd_audio)

    p = sub.add_parser("review", help="spaced review of the flashcards of every lesson you have opened",
                       description="Shows the due cards one at a time; rate each 1 Again, 2 Hard, 3 Good, 4 Easy. "
                                   "FSRS schedules the next review from your answers; history in ~/.dpcourse/review.")
    p.add_argument("--open", nargs="+", metavar="LESSON", help="add these lessons' cards to your deck first")
    p.add_argument("--lesson", default=None, help="review only this lesson's cards")
    p.add_argument("--limit", type=int, default=None, help="stop after this many cards")
    p.add_argument("--status", action="store_true", help="only say what is due, per lesson")
    p.add_argument("--now", default=None, metavar="WHEN",
                   help="pretend it is this time (ISO date, e.g. 2027-01-15T09:00, UTC): "
                        "try the schedule on simulated days")
    p.set_defaults(func=_cmd_review)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["lab"] and argv[1:] not in (["-h"], ["--help"]):
        # everything after "lab" is Jupyter's (argparse would reject --port=... as unknown)
        args = argparse.Namespace(command="lab", func=_cmd_lab, jupyter_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
