"""`dpcourse bench compression`: every method side by side, bytes as the formulas say, a learner's hook loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpcourse import compression
from dpcourse.bench import compression as bench

pytestmark = pytest.mark.usefixtures("no_leftover_processes")
ROOT = Path(__file__).resolve().parent.parent
GOOD = ROOT / "tests" / "planted" / "10_good.py"


def test_run_measures_every_method_and_the_learners_hook_on_one_link():
    result = bench.run(network="ideal", steps=1, per_rank=16, hook=f"{GOOD}:topk_hook", hook_state="TopKState(0.05)",
                       timeout=120)
    methods = result["methods"]
    assert list(methods) == [*bench.METHODS, "yours"]
    n = result["parameters"]
    assert n == sum(p.numel() for p in bench.lesson_model().parameters())
    assert methods["none"]["bytes"] == compression.allreduce_bytes(n, 2)
    assert methods["bf16"]["bytes"] == compression.allreduce_bytes(n, 2, 2)
    shapes = compression.bucket_shapes(bench.lesson_model())
    for r in (1, 4):
        assert methods[f"powersgd-{r}"]["bytes"] == compression.powersgd_bytes(shapes, r, 2)
    k = int(n * 0.05)
    assert methods["yours"]["bytes"] == k * (4 + 8)  # the planted good hook sends float32 values, int64 indices
    for m, v in methods.items():
        assert v["identical"], m
        assert v["step_s"] > 0
        assert v["bytes_ratio"] == pytest.approx(methods["none"]["bytes"] / v["bytes"])
        assert v["speedup_vs_default"] == pytest.approx(methods["none"]["step_s"] / v["step_s"])
    text = bench.report(result)
    assert "your hook" in text and "PowerSGD rank 4" in text and "ideal" in text and "NO" not in text


def test_a_hook_that_desynchronises_the_ranks_is_flagged(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch, torch.distributed as dist\n"
        "def my_hook(state, bucket):\n"
        "    t = bucket.buffer() * (1 + dist.get_rank())   # every rank applies its own update\n"
        "    fut = torch.futures.Future()\n"
        "    fut.set_result(t)\n"
        "    return fut\n")
    result = bench.run(network="ideal", steps=1, per_rank=8, hook=f"{bad}:my_hook", gpu="none", timeout=120)
    assert not result["methods"]["yours"]["identical"] and result["methods"]["none"]["identical"]
    assert "warning" in bench.report(result)


def test_hook_from_a_notebooks_graded_cells():
    hook, namespace = bench.load_hook(f"{ROOT / 'solutions' / '10_compression.ipynb'}:topk_hook", "TopKState(0.1)")
    assert callable(hook) and "TopKState" in namespace


def test_bad_hooks_are_one_line_errors(tmp_path):
    (tmp_path / "h.py").write_text("x = 1\n")
    (tmp_path / "boom.py").write_text("raise RuntimeError('nope')\n")
    cases = {"nocolon": "FILE:FUNCTION", f"{tmp_path}/missing.py:f": "no file", f"{tmp_path}/h.py:f": "no function",
             f"{tmp_path}/boom.py:f": "RuntimeError"}
    for spec, message in cases.items():
        with pytest.raises(ValueError, match=message):
            bench.load_hook(spec)
    with pytest.raises(ValueError, match="hook-state"):
        bench.load_hook(f"{GOOD}:topk_hook", "NoSuchState(1)")
    with pytest.raises(ValueError, match="world_size >= 2"):
        bench.run(network="ideal", world_size=1)


def test_cli_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "c.json"
    done = subprocess.run([sys.executable, "-m", "dpcourse.cli", "bench", "compression", "--network", "ideal",
                           "--steps", "1", "--per-rank", "8", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "default DDP (fp32)" in done.stdout and "speedup vs default DDP" in done.stdout
    assert set(json.loads(out.read_text())["methods"]) == set(bench.METHODS)
    done = subprocess.run([sys.executable, "-m", "dpcourse.cli", "bench", "compression", "--network", "nowhere"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "unknown network" in done.stderr and len(done.stderr.strip().splitlines()) == 1
