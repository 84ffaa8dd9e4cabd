"""Benchmarks: each prints numbers and ratios measured side by side in one run.

``dpcourse bench launch|allreduce|ddp|compression`` dispatches here; each kind lives in its own module.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from typing import Callable

__all__ = ["main", "parse_sizes", "format_size", "median_time", "publish"]

_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def parse_sizes(text: str) -> list[int]:
    """``"1KB,1MB,64MB"`` -> byte counts (binary units: 1KB = 1024 bytes)."""
    sizes = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", part.upper())
        if not m:
            raise argparse.ArgumentTypeError(f"cannot read size {part!r}: write e.g. 1KB, 256KB, 64MB.")
        unit = m[2] if m[2].endswith("B") or not m[2] else m[2] + "B"
        sizes.append(int(float(m[1]) * _UNITS[unit]))
    return sizes


def format_size(nbytes: int) -> str:
    """Bytes as a short human string: 1024 -> ``1KB``."""
    for unit in ("GB", "MB", "KB"):
        if nbytes >= _UNITS[unit] and nbytes % _UNITS[unit] == 0:
            return f"{nbytes // _UNITS[unit]}{unit}"
    return f"{nbytes}B"


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def publish(result: dict, text: str, json_path: "str | None") -> int:
    """Print a benchmark's report and, when asked, write its raw result as JSON; return 0."""
    import json

    print(text)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {json_path}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Run the benchmark named by ``args.bench``."""
    import importlib

    module = importlib.import_module(f"dpcourse.bench.{args.bench}")
    return int(module.main(args) or 0)
