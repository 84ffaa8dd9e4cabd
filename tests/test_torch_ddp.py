"""The ladder: single process, hand-written DDP, DataParallel and torch DDP reach the same parameters."""

from __future__ import annotations

import numpy as np
import pytest

from dpcourse.models import build_model
from dpcourse.torch_ddp import RUNGS, climb, max_difference, table


@pytest.fixture(scope="module")
def float64_results():
    return climb("digits-mlp", steps=6, batch_size=64, world_size=2, double=True)


def test_every_rung_agrees_with_one_process_in_float64(float64_results, no_leftover_processes):
    single = float64_results[0]
    assert [r.name for r in float64_results] == list(RUNGS)
    for rung in float64_results[1:]:
        assert max_difference(single, rung) < 1e-12, rung.name
    # the agreement is not the trivial kind: training moved the weights well away from the start
    start = {k: v.double().numpy() for k, v in build_model("digits-mlp", seed=0).state_dict().items()}
    moved = max(float(np.abs(single.params[k] - start[k]).max()) for k in start)
    assert moved > 1e-2


def test_table_reports_times_and_differences(float64_results):
    text = table(float64_results)
    for name in RUNGS:
        assert name in text
    assert all(r.step_ms > 0 for r in float64_results)
    assert "device_ids == []" in text or "GPU" in text


def test_float32_cnn_agrees_within_rounding():
    results = climb("digits-cnn", steps=3, batch_size=32, world_size=2, rungs=(RUNGS[0], RUNGS[3]))
    assert max_difference(results[0], results[1]) < 1e-5


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="divide evenly"):
        climb("digits-mlp", steps=2, batch_size=63, world_size=2)
    with pytest.raises(ValueError, match="unknown rung"):
        climb("digits-mlp", steps=2, rungs=("single process", "magic"))
    with pytest.raises(ValueError, match="exceeds"):
        climb("digits-mlp", steps=1000, batch_size=64)
