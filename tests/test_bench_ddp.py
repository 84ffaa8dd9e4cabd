"""The DDP benchmark: every variant measured, ratios consistent with the times, JSON written."""

from __future__ import annotations

import argparse
import json

import pytest

from dpcourse.bench import ddp as bench_ddp

pytestmark = pytest.mark.usefixtures("no_leftover_processes")


def test_run_reports_every_variant_side_by_side():
    result = bench_ddp.run(world_size=2, steps=3, model="tiny", batch_size=16, warmup=1, timeout=60)
    variants = {"single", *bench_ddp.VARIANTS}
    assert set(result["step_time_s"]) == variants
    for k in variants:
        assert len(result["raw_step_times_s"][k]) >= 3
        assert result["step_time_s"][k] > 0
        assert result["samples_per_s"][k] == pytest.approx(16 / result["step_time_s"][k])
    assert result["step_time_vs_torch_ddp"]["torch_ddp"] == pytest.approx(1.0)
    assert result["bucketed_over_torch_ddp"] == pytest.approx(
        result["step_time_s"]["bucketed"] / result["step_time_s"]["torch_ddp"])
    assert result["parameters"] > 0 and result["world_size"] == 2
    text = bench_ddp.report(result)
    assert "BucketedDDP step time / torch DDP step time" in text and "torch DDP" in text


def test_main_writes_json(tmp_path, capsys):
    out = tmp_path / "ddp.json"
    args = argparse.Namespace(world_size=2, steps=2, json=out, model="tiny", batch_size=8)
    assert bench_ddp.main(args) == 0
    data = json.loads(out.read_text())
    assert data["steps"] == 2 and data["batch_size"] == 8
    assert "samples/s" in capsys.readouterr().out


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="divisible"):
        bench_ddp.run(world_size=2, steps=1, model="tiny", batch_size=7)
    with pytest.raises(ValueError, match="at least 1"):
        bench_ddp.run(world_size=2, steps=0, model="tiny")
