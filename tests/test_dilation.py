"""Time dilation (FLOPs counted, set against a GPU's rate) and `dpcourse bench network` (behaviour, not timing)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dpcourse.dilation import Dilation, cluster_link, dilation_for, gpus, step_flops
from dpcourse.network import links


def test_flops_of_linear_layers_are_counted_like_by_hand():
    batch, fan_in, hidden, fan_out = 32, 40, 24, 10
    model = nn.Sequential(nn.Linear(fan_in, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, fan_out, bias=False))
    x, y = torch.randn(batch, fan_in), torch.randint(0, fan_out, (batch,))
    # a matmul costs 2 B I O forward; backward computes the weight's gradient (2 B I O) and, except
    # for the first layer, whose input needs none, the input's gradient (2 B I O)
    assert step_flops(model, x, y) == 4 * batch * fan_in * hidden + 6 * batch * hidden * fan_out


def test_dilation_is_the_ratio_of_step_times_and_slows_the_link():
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    d = dilation_for(model, x, y, gpu="A100", mfu=0.5, repeats=3)
    assert isinstance(d, Dilation)
    assert d.gpu_s == pytest.approx(d.flops / (gpus()["A100"].fp32 * 0.5))
    assert d.factor == pytest.approx(d.here_s / d.gpu_s)
    link, d2 = cluster_link("10GbE", model, x, y, gpu="T4", repeats=3)
    base = links()["10GbE"]
    assert link.bandwidth == pytest.approx(base.bandwidth / d2.factor)
    assert link.latency == pytest.approx(base.latency * d2.factor)
    assert "NVIDIA T4" in str(link) and "dilated x" in str(link)
    assert "TFLOP/s fp32 peak" in str(d2)


def test_bad_input_says_what_to_do():
    model, x, y = nn.Linear(4, 2), torch.randn(2, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="unknown GPU 'V9000': use one of"):
        dilation_for(model, x, y, gpu="V9000")
    with pytest.raises(ValueError, match="mfu"):
        dilation_for(model, x, y, mfu=1.5)
    for name, card in gpus().items():
        assert card.bf16 > card.fp32 > 0 and "datasheet" in card.source, name


def test_bench_network_prints_measured_against_predicted_and_overlap_against_flat():
    from dpcourse.bench import network as bench

    result = bench.run(link="10GbE", sizes=[64 << 10], world_sizes=[2], repeats=1, steps=1)
    row = result["allreduce"][0]
    assert row["predicted_s"] == pytest.approx(bench.predict(links()["10GbE"], 64 << 10, 2))
    assert row["gloo all_reduce"] > 0 and row["course ring"] > 0
    ddp = result["ddp"]
    assert set(ddp["step_s"]) == {"flat", "bucketed", "torch_ddp"} and ddp["vs_flat"]["flat"] == 1.0
    text = bench.report(result)
    for needle in ("Part 1: all-reduce on 10 Gigabit Ethernet", "ratio = measured / predicted",
                   "Part 2: one training step", "dilated x", "the dilation: one step", "vs flat"):
        assert needle in text, needle
