"""Compression hooks (dpcourse.compression) compared with torch's DDP and its own hooks, on the simulated link.

Every run trains the same small model on the same data on 2 or 3 ranks; the link is ``ideal`` (no
delay), so that ``dpcourse.network`` counts the bytes each hook really sends. The GPU tests (NCCL)
at the bottom skip without CUDA.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import dpcourse
from dpcourse import compression

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

try:  # spawned workers (after CUDA) cannot import this test module by name: send its functions by value
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
except (ImportError, ValueError):
    pass


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 10))


def _train(method: str, steps: int = 4, error_feedback: bool = True, device: str = "cpu") -> dict:
    """Train ``steps`` SGD steps under DDP with ``method``; report parameters, bytes, hook state."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from dpcourse import network

    r, w = dist.get_rank(), dist.get_world_size()
    model = _model().to(device)
    ddp = DistributedDataParallel(model, device_ids=None)
    state = compression.register(ddp, method, error_feedback=error_feedback)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    per_step, params, residual_norms = [], [], []
    for _ in range(steps):
        x, y = torch.randn(12 * w, 64, generator=g), torch.randint(0, 10, (12 * w,), generator=g)
        x, y = x[12 * r:12 * (r + 1)].to(device), y[12 * r:12 * (r + 1)].to(device)
        opt.zero_grad()
        if network.current_link() is not None:
            with compression.sent_bytes() as sent:
                nn.functional.cross_entropy(ddp(x), y).backward()
            per_step.append(sent.by_op)
        else:
            nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]).cpu())
        if isinstance(state, compression.TopKState):
            residual_norms.append({i: float(t.norm()) for i, t in state.residuals.items()})
    return {"params": params, "bytes": per_step, "residuals": residual_norms}


def _launch(method, world=2, steps=4, error_feedback=True):
    return dpcourse.launch(_train, world, method, steps, error_feedback, network="ideal", timeout=90)


def test_identity_hook_is_bit_identical_to_default_ddp_at_2_and_3_ranks():
    for world in (2, 3):
        default = _launch("none", world)
        hooked = _launch("allreduce", world)
        for r in range(world):
            for a, b in zip(default[r]["params"], hooked[r]["params"]):
                assert torch.equal(a, b), f"world {world}, rank {r}"
        # the same bytes too: one float32 all-reduce of every gradient per step
        sent = [s.get("allreduce") for s in hooked[0]["bytes"][1:]]
        assert sent == [s.get("allreduce") for s in default[0]["bytes"][1:]]


def test_hand_written_bf16_hook_equals_torchs_and_halves_the_bytes():
    mine, theirs, full = _launch("bf16"), _launch("torch-bf16"), _launch("none")
    for a, b in zip(mine[0]["params"], theirs[0]["params"]):
        assert torch.equal(a, b)
    assert not torch.equal(mine[0]["params"][-1], full[0]["params"][-1])  # bf16 rounding really happened
    assert (mine[0]["params"][-1] - full[0]["params"][-1]).abs().max() < 1e-2
    n = sum(p.numel() for p in _model().parameters())
    assert mine[0]["bytes"][-1] == {"allreduce": compression.allreduce_bytes(n, 2, 2)}
    assert full[0]["bytes"][-1] == {"allreduce": compression.allreduce_bytes(n, 2, 4)}


def test_fp16_hook_equals_torchs():
    mine, theirs = _launch("fp16"), _launch("torch-fp16")
    for a, b in zip(mine[1]["params"], theirs[1]["params"]):
        assert torch.equal(a, b)


def test_topk_keeps_every_rank_identical_and_sends_what_the_formula_says():
    world = 3
    out = _launch("topk-0.05", world, steps=3)
    n = sum(p.numel() for p in _model().parameters())
    for step in range(3):
        for r in range(1, world):
            assert torch.equal(out[0]["params"][step], out[r]["params"][step]), f"step {step}, rank {r}"
    assert out[0]["bytes"][-1] == {"allgather": compression.topk_bytes(n, 0.05, world)}
    assert compression.topk_bytes(n, 0.05, world) < compression.allreduce_bytes(n, world) / 3


def test_topk_carries_error_feedback_and_it_matters():
    with_ef = _launch("topk-0.05", steps=4)
    without = _launch("topk-0.05", steps=4, error_feedback=False)
    norms = with_ef[0]["residuals"]
    # a residual per bucket, every step
    assert all(norms[s] and all(v > 0 for v in norms[s].values()) for s in range(4))
    assert without[0]["residuals"] == [{}] * 4
    assert not torch.equal(with_ef[0]["params"][-1], without[0]["params"][-1])
    # with error feedback, the sum of what was sent over the steps tracks the sum of the gradients:
    # the models stay closer to uncompressed training than without it
    full = _launch("none", steps=4)[0]["params"][-1]
    assert (with_ef[0]["params"][-1] - full).norm() < (without[0]["params"][-1] - full).norm()


def test_topk_hook_by_hand_sends_the_largest_entries_and_keeps_the_rest():
    """One process, a fake bucket: the residual holds exactly what was not sent."""
    class Bucket:
        def __init__(self, t):
            self.t = t

        def buffer(self):
            return self.t

        def index(self):
            return 0

    def run():
        state = compression.TopKState(0.25)
        grad = torch.tensor([0.1, -4.0, 0.2, 3.0, -0.3, 0.0, 0.05, 1.0])
        first = compression.topk_hook(state, Bucket(grad.clone())).wait()
        residual = state.residuals[0].clone()
        second = compression.topk_hook(state, Bucket(torch.zeros(8))).wait()
        return first, residual, second

    first, residual, second = dpcourse.launch(run, 1, network="ideal")[0]
    assert first.tolist() == [0, -4.0, 0, 3.0, 0, 0, 0, 0]
    assert residual.tolist() == pytest.approx([0.1, 0, 0.2, 0, -0.3, 0, 0.05, 1.0])
    assert second.tolist() == pytest.approx([0, 0, 0, 0, -0.3, 0, 0, 1.0])  # last step's residual, top 2 of it


def test_powersgd_runs_on_the_simulated_link_with_the_bytes_the_formula_says():
    out = _launch("powersgd-2", steps=4)
    for a, b in zip(out[0]["params"], out[1]["params"]):
        assert torch.equal(a, b)
    shapes = compression.bucket_shapes(_model())
    sent = out[0]["bytes"][-1]["allreduce"]
    assert sent == compression.powersgd_bytes(shapes, 2, 2)
    assert sent < compression.allreduce_bytes(sum(p.numel() for p in _model().parameters()), 2) / 4


def test_power_iteration_recovers_a_low_rank_matrix_and_improves_with_warm_start():
    torch.manual_seed(0)
    exact = torch.randn(40, 2) @ torch.randn(2, 30)
    p, q = compression.power_iteration(exact, torch.randn(30, 2))
    assert torch.allclose(p.T @ p, torch.eye(2), atol=1e-5)
    assert (p @ q.T - exact).norm() < 1e-4 * exact.norm()
    noisy = torch.randn(40, 30)
    q, errors = torch.randn(30, 1), []
    for _ in range(5):
        p, q = compression.power_iteration(noisy, q)
        errors.append(float((noisy - p @ q.T).norm()))
    best = float(torch.linalg.svdvals(noisy)[1:].square().sum().sqrt())  # the best rank-1 error (Eckart-Young)
    assert errors[-1] <= errors[0] + 1e-6 and errors[-1] == pytest.approx(best, rel=1e-2)


def test_byte_formulas():
    assert compression.allreduce_bytes(1000, 2) == 4000 and compression.allreduce_bytes(1000, 4) == 6000
    assert compression.allreduce_bytes(1000, 1) == 0
    assert compression.topk_bytes(1000, 0.1, 2) == 100 * 8 and compression.topk_bytes(1000, 0.1, 4) == 3 * 100 * 8
    # a 10 x 20 matrix at rank 2 sends (10 + 20) * 2 numbers; a bias is sent as it is
    assert compression.powersgd_bytes([torch.Size([10, 20]), torch.Size([10])], 2, 2) == 4 * (60 + 10)


def test_bad_methods_are_one_line_errors():
    for bad in ("topk-2", "powersgd-0", "powersgd-1.5", "gzip"):
        with pytest.raises(ValueError, match="unknown compression method"):
            compression.register(None, bad)
    with pytest.raises(ValueError, match="fraction"):
        compression.TopKState(0)


def test_sent_bytes_needs_a_simulated_link():
    with pytest.raises(RuntimeError, match="network="):
        with compression.sent_bytes():
            pass


# --------------------------------------------------------------------------- GPU (NCCL)

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _train_on_gpu(method: str) -> dict:
    device = f"cuda:{dpcourse.rank() % torch.cuda.device_count()}"
    torch.cuda.set_device(device)
    return _train(method, device=device)


@pytest.mark.gpu
@gpu
def test_gpu_hand_bf16_equals_torchs_registered_directly_under_nccl():
    world = min(2, torch.cuda.device_count())

    def run(kind):
        import torch.distributed as dist
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook
        from torch.nn.parallel import DistributedDataParallel

        device = torch.device("cuda", dist.get_rank() % torch.cuda.device_count())
        torch.cuda.set_device(device)
        model = _model().to(device)
        ddp = DistributedDataParallel(model, device_ids=[device.index])
        ddp.register_comm_hook(None, compression.bf16_hook if kind == "mine" else bf16_compress_hook)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            x, y = torch.randn(12, 64, generator=g).to(device), torch.randint(0, 10, (12,), generator=g).to(device)
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()

    mine = dpcourse.launch(run, world, "mine", backend="nccl", timeout=180)
    theirs = dpcourse.launch(run, world, "torch", backend="nccl", timeout=180)
    assert torch.equal(mine[0], theirs[0])


@pytest.mark.gpu
@gpu
def test_gpu_topk_and_powersgd_keep_ranks_identical_under_nccl():
    world = min(2, torch.cuda.device_count())
    for method in ("topk-0.05", "powersgd-2"):
        out = dpcourse.launch(_train_on_gpu, world, method, backend="nccl", timeout=180)
        for r in range(1, world):
            for a, b in zip(out[0]["params"], out[r]["params"]):
                assert torch.equal(a, b), method
