"""GPU paths of lessons 06-07: NCCL, gloo on a shared GPU, DataParallel on GPUs, bf16 autocast.

Every test is marked ``gpu`` and skips without CUDA. Workers are started fresh (spawn) once CUDA is
initialised in this process, so the functions they run are pickled by value.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import dpcourse

SCRIPTS = str(Path(__file__).resolve().parent.parent / "lessons" / "scripts")
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

try:  # spawned workers cannot import this test module by name: send its functions by value
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
except (ImportError, ValueError):
    pass


def _all_reduce_on_gpu() -> list[float]:
    import torch.distributed as dist

    device = torch.device("cuda", dpcourse.rank() % torch.cuda.device_count())
    t = torch.full((4,), float(dpcourse.rank() + 1), device=device)
    dist.all_reduce(t)
    return [dist.get_backend(), t.device.type, t.cpu().tolist()]


def _train(cfg: dict) -> dict:
    sys.path.insert(0, SCRIPTS)
    import train_ddp

    out = train_ddp.train(cfg)
    return {"params": out["params"], "accuracy": out["accuracy"], "steps": out["steps"]}


def test_nccl_world_size_one():
    backend, kind, values = dpcourse.launch(_all_reduce_on_gpu, 1, backend="nccl", timeout=120)[0]
    assert (backend, kind, values) == ("nccl", "cuda", [1.0] * 4)


def test_gloo_two_ranks_share_one_gpu():
    results = dpcourse.launch(_all_reduce_on_gpu, 2, backend="gloo", timeout=120)
    for backend, kind, values in results:
        assert (backend, kind, values) == ("gloo", "cuda", [3.0] * 4)


def test_ddp_script_on_a_shared_gpu_with_gloo_matches_cpu():
    cfg = dict(epochs=1, double=True)
    gpu = dpcourse.launch(_train, 2, {**cfg, "device": "cuda"}, backend="gloo", timeout=180)
    cpu = dpcourse.launch(_train, 2, {**cfg, "device": "cpu"}, backend="gloo", timeout=180)[0]
    for k in cpu["params"]:
        assert torch.equal(gpu[0]["params"][k], gpu[1]["params"][k])
        assert (gpu[0]["params"][k] - cpu["params"][k]).abs().max().item() < 1e-8


def test_bf16_autocast_trains_under_nccl():
    out = dpcourse.launch(_train, 1, dict(epochs=3, amp=True), backend="nccl", timeout=180)[0]
    assert out["steps"] > 0 and out["accuracy"] > 0.5
    assert all(v.dtype == torch.float32 for k, v in out["params"].items())  # master weights stay float32


def test_autocast_uses_bfloat16_for_matmuls():
    x = torch.randn(8, 16, device="cuda")
    layer = nn.Linear(16, 4).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32


def test_dataparallel_on_gpus_matches_the_module():
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).cuda()
    dp = nn.DataParallel(model)
    assert dp.device_ids == list(range(GPUS))
    x = torch.randn(64, 32, device="cuda")
    with torch.no_grad():
        assert torch.allclose(dp(x), model(x), atol=1e-5)
    loss = dp(x).square().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.device.index == 0 for p in model.parameters())


@pytest.mark.skipif(GPUS < 2, reason="needs 2 GPUs: the torch.nn.parallel primitives split over devices")
def test_step_by_step_uses_the_real_primitives_on_two_gpus():
    from dpcourse.dataparallel import forward_step_by_step

    model = nn.Linear(32, 10).cuda(0)
    x = torch.randn(64, 32, device="cuda:0")
    with torch.no_grad():
        out, trace = forward_step_by_step(model, x, replicas=2)
        assert trace.primitives == "torch.nn.parallel"
        assert torch.allclose(out, model(x), atol=1e-5)


@pytest.mark.skipif(GPUS < 2, reason="needs 2 GPUs: SyncBatchNorm over NCCL")
def test_sync_batchnorm_matches_one_process_on_two_gpus():
    one = dpcourse.launch(_train, 1, dict(model="digits-bn", epochs=1, batch_size=64, double=True), backend="nccl",
                          timeout=180)[0]
    synced = dpcourse.launch(_train, 2, dict(model="digits-bn", epochs=1, batch_size=32, double=True, sync_bn=True),
                             backend="nccl", timeout=180)[0]
    assert max((one["params"][k] - synced["params"][k]).abs().max().item() for k in one["params"]) < 1e-6


def test_ladder_on_gpu():
    from dpcourse.torch_ddp import RUNGS, climb, max_difference

    results = climb("digits-mlp", steps=4, batch_size=64, world_size=min(GPUS, 2) if GPUS >= 2 else 1,
                    rungs=(RUNGS[0], RUNGS[2], RUNGS[3]))
    assert "cuda" in results[0].device
    for r in results[1:]:
        assert max_difference(results[0], r) < 1e-4
