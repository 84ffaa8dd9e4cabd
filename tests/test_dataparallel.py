"""dpcourse.dataparallel: the four phases of nn.DataParallel, and the wrapper's behaviour on this machine."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dpcourse.dataparallel import cuda_devices, forward_step_by_step, gpu0_extra_bytes_estimate, threaded_apply
from dpcourse.models import build_model


@pytest.mark.parametrize("batch,replicas", [(64, 2), (7, 3), (2, 4)])
def test_four_phases_reproduce_the_whole_batch_output(batch, replicas):
    if len(cuda_devices()) >= 2:
        pytest.skip("with GPUs the replica count is bounded by the GPUs; see test_gpu.py")
    model = build_model("digits-cnn", seed=0)
    x = torch.rand(batch, 1, 8, 8)
    with torch.no_grad():
        out, trace = forward_step_by_step(model, x, replicas=replicas)
        expected = model(x)
    assert trace.primitives == "CPU stand-ins"
    assert sum(trace.chunk_sizes) == batch and len(trace.chunk_sizes) == min(batch, replicas)
    assert set(trace.seconds) == {"scatter", "replicate", "parallel_apply", "gather"}
    assert torch.allclose(out, expected, atol=1e-6)


def test_threaded_apply_runs_each_module_on_its_input_and_reraises():
    modules = [nn.Linear(3, 2), nn.Linear(3, 2)]
    inputs = [torch.randn(4, 3), torch.randn(5, 3)]
    outs = threaded_apply(modules, inputs)
    for m, x, o in zip(modules, inputs, outs):
        assert torch.equal(o, m(x))
    with pytest.raises(RuntimeError):
        threaded_apply(modules, [torch.randn(4, 3), torch.randn(4, 7)])  # shape error in a thread
    with pytest.raises(ValueError, match="one input per module"):
        threaded_apply(modules, inputs[:1])


def test_dataparallel_without_two_gpus_calls_the_module_and_prefixes_names():
    if len(cuda_devices()) >= 2:
        pytest.skip("two GPUs: DataParallel really splits here")
    model = build_model("digits-mlp", seed=0)
    if torch.cuda.is_available():
        model = model.cuda()
    dp = nn.DataParallel(model)
    x = torch.rand(16, 1, 8, 8, device=next(model.parameters()).device)
    with torch.no_grad():
        assert torch.equal(dp(x), model(x))
    assert all(k.startswith("module.") for k in dp.state_dict())
    assert dp.module.state_dict().keys() == model.state_dict().keys()


def test_gpu0_estimate_adds_up():
    model = nn.Linear(100, 10)  # 1,010 float32 parameters = 4,040 bytes
    est = gpu0_extra_bytes_estimate(model, torch.zeros(8, 100), output_features=10, optimizer_states=2)
    assert est["gradients of the master copy"] == 4040
    assert est["optimizer state"] == 8080
    assert est["whole input batch"] == 8 * 100 * 4
    assert est["gathered outputs"] == 8 * 10 * 4
    assert est["total"] == 4040 + 8080 + 3200 + 320
