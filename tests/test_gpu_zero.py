"""GPU path of lesson 09: ZeRO-1 (dpcourse.zero) on NCCL, in float64 against one CPU process and in bf16 with an
fp32 master copy. Every test is marked ``gpu`` and skips without CUDA."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import dpcourse

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
WORLD = 2 if GPUS >= 2 else 1

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

try:  # spawned workers cannot import this test module by name: send its functions by value
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
except (ImportError, ValueError):
    pass


def _batches(steps: int, device: str, dtype: torch.dtype) -> list:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(24, 16, generator=g).to(device, dtype), torch.randint(0, 4, (24,), generator=g).to(device))
            for _ in range(steps)]


def _model(device: str, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)  # 16*9+9 + 9*4+4 = 193 parameters: not divisible by 2
    return nn.Sequential(nn.Linear(16, 9), nn.Tanh(), nn.Linear(9, 4)).to(device, dtype)


def _train_zero(dtype: torch.dtype, master: torch.dtype | None) -> dict:
    import torch.distributed as dist

    from dpcourse.zero import ZeroOptimizer

    r, w = dist.get_rank(), dist.get_world_size()
    device = f"cuda:{r % torch.cuda.device_count()}"
    torch.cuda.set_device(device)
    model = _model(device, dtype)
    opt = ZeroOptimizer(model.parameters(), torch.optim.AdamW, master_dtype=master, lr=0.01, weight_decay=0.1)
    losses = []
    per = 24 // w
    for x, y in _batches(20, device, dtype):
        loss = nn.functional.cross_entropy(model(x[r * per:(r + 1) * per]).float(), y[r * per:(r + 1) * per])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return {"backend": dist.get_backend(), "params": [p.detach().double().cpu() for p in model.parameters()],
            "dtype": str(next(model.parameters()).dtype), "master": str(opt.master.dtype),
            "state_bytes": opt.state_bytes(), "losses": losses}


def test_zero1_on_nccl_matches_one_cpu_process_in_float64():
    outs = dpcourse.launch(_train_zero, WORLD, torch.float64, None, backend="nccl", timeout=180)
    model = _model("cpu", torch.float64)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    for x, y in _batches(20, "cpu", torch.float64):
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    for out in outs:
        assert out["backend"] == "nccl"
        for got, want in zip(out["params"], model.parameters()):
            assert (got - want.detach()).abs().max().item() < 1e-10


def test_bf16_model_with_fp32_master_on_nccl():
    outs = dpcourse.launch(_train_zero, WORLD, torch.bfloat16, torch.float32, backend="nccl", timeout=180)
    numel = 16 * 9 + 9 + 9 * 4 + 4
    shard = -(-numel // WORLD)
    for out in outs:
        assert (out["dtype"], out["master"]) == ("torch.bfloat16", "torch.float32")
        # fp32 master + two fp32 moments per element of this rank's shard, + a step counter per piece
        assert 12 * (numel - shard * (WORLD - 1)) <= out["state_bytes"] <= 12 * shard + 4 * 4
        assert out["losses"][-1] < out["losses"][0]
    for a, b in zip(outs[0]["params"], outs[-1]["params"]):
        assert torch.equal(a, b)  # every rank holds the same gathered parameters
