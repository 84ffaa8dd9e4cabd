"""How long does ``dpcourse.launch`` take to start workers that return at once? (and torchrun?)"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from dpcourse.bench import median_time
from dpcourse.launch import launch


def _noop() -> int:
    return 0


def launch_overhead(world_size: int = 2, repeats: int = 5) -> float:
    """Median seconds for ``launch(noop, world_size)``: fork, join the group, return, tear down."""
    return median_time(lambda: launch(_noop, world_size, timeout=60), repeats=repeats)


def torchrun_overhead(world_size: int = 2, repeats: int = 2) -> float:
    """Median seconds for ``torchrun --standalone`` to run a script that only joins the group."""
    script = "import torch.distributed as dist\ndist.init_process_group('gloo')\ndist.destroy_process_group()\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "noop.py")
        with open(path, "w") as f:
            f.write(script)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}", path]
        return median_time(lambda: subprocess.run(cmd, check=True, capture_output=True, timeout=120),
                           repeats=repeats, warmup=0)


def main(args: argparse.Namespace) -> int:
    ours = launch_overhead(args.world_size, args.repeats)
    print(f"dpcourse.launch, {args.world_size} gloo workers returning at once: {ours:.3f} s (median of {args.repeats})")
    if args.torchrun:
        theirs = torchrun_overhead(args.world_size)
        print(f"torchrun --standalone, same work:                  {theirs:.3f} s (median of 2)")
        print(f"ratio torchrun / launch: {theirs / ours:.1f}x")
    return 0
