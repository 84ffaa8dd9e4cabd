"""ZeRO-1 by hand (dpcourse.zero): the same training as one process, with 1/N of the optimizer state per rank."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

import dpcourse
from dpcourse.zero import ZeroOptimizer, optimizer_state_bytes, shard_bounds

pytestmark = [pytest.mark.usefixtures("no_leftover_processes")]

BATCH = 24  # divisible by 1, 2, 3 and 4 ranks


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # 7*5+5 + 5*3+3 = 58 parameters: not divisible by 4 (nor 3)
    return nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 7, generator=g, dtype=torch.float64), torch.randint(0, 3, (BATCH,), generator=g))
            for _ in range(steps)]


OPTIMIZERS = {
    "adamw": (torch.optim.AdamW, dict(lr=0.05, weight_decay=0.1)),
    "sgd-momentum": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
}


def _groups(model: nn.Module) -> list[dict]:
    """Biases without weight decay: a per-group option the shards must apply to the right elements."""
    return [{"params": [p for n, p in model.named_parameters() if n.endswith("weight")]},
            {"params": [p for n, p in model.named_parameters() if n.endswith("bias")], "weight_decay": 0.0}]


def _train(kind: str, steps: int, zero: bool, groups: bool = True) -> dict:
    cls, options = OPTIMIZERS[kind]
    model = _model()
    params = _groups(model) if groups else model.parameters()
    r, w = (dist.get_rank(), dist.get_world_size()) if zero else (0, 1)
    opt = ZeroOptimizer(params, cls, **options) if zero else cls(params, **options)
    per = BATCH // w
    for x, y in _batches(steps):
        nn.functional.cross_entropy(model(x[r * per:(r + 1) * per]), y[r * per:(r + 1) * per]).backward()
        opt.step()
        opt.zero_grad()
    state = opt.state_bytes() if zero else optimizer_state_bytes(opt)
    return {"params": {k: v.clone() for k, v in model.state_dict().items()}, "state_bytes": state}


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_same_training_as_one_process_at_1_2_3_4_ranks(kind):
    reference = _train(kind, 4, zero=False)
    for world in (1, 2, 3, 4):
        for out in dpcourse.launch(_train, world, kind, 4, True, timeout=120):
            for k, want in reference["params"].items():
                assert (out["params"][k] - want).abs().max().item() < 1e-12, (kind, world, k)


def test_without_groups_too():
    reference = _train("adamw", 3, zero=False, groups=False)
    out = dpcourse.launch(_train, 3, "adamw", 3, True, False, timeout=120)[1]
    assert all(torch.allclose(out["params"][k], v, rtol=0, atol=1e-12) for k, v in reference["params"].items())


def test_state_bytes_fall_as_one_over_n():
    full = _train("adamw", 1, zero=False)["state_bytes"]
    numel = sum(p.numel() for p in _model().parameters())
    assert full == 2 * numel * 8 + 4 * 4  # two float64 moments per element, a float32 step count per tensor
    for world in (1, 2, 4):
        per_rank = [out["state_bytes"] for out in dpcourse.launch(_train, world, "adamw", 1, True, timeout=120)]
        for r, got in enumerate(per_rank):
            a, b = shard_bounds(numel, world, r)
            owned = min(b, numel) - min(a, numel)  # this rank's elements, padding excluded
            assert 16 * owned <= got <= 16 * owned + 4 * 4, (world, r, per_rank)
        assert max(per_rank) <= full / world + 16 * world, (world, per_rank, full)


def _sgd_state() -> int:
    model = nn.Linear(1000, 10)
    opt = ZeroOptimizer(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    model(torch.randn(4, 1000)).sum().backward()
    opt.step()
    return opt.state_bytes()


def test_momentum_state_is_split_exactly():
    numel = 1000 * 10 + 10
    for world in (1, 2, 4):
        per_rank = dpcourse.launch(_sgd_state, world, timeout=120)
        bounds = [shard_bounds(numel, world, r) for r in range(world)]
        assert per_rank == [4 * (min(b, numel) - min(a, numel)) for a, b in bounds]


def _round_trip(steps_before: int, steps_after: int) -> dict:
    cls, options = OPTIMIZERS["adamw"]
    r, w = dist.get_rank(), dist.get_world_size()
    per = BATCH // w
    batches = _batches(steps_before + steps_after)

    def train(model, opt, part):
        for x, y in part:
            nn.functional.cross_entropy(model(x[r * per:(r + 1) * per]), y[r * per:(r + 1) * per]).backward()
            opt.step()
            opt.zero_grad()

    model = _model()
    opt = ZeroOptimizer(_groups(model), cls, **options)
    train(model, opt, batches[:steps_before])
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    fresh = _model(seed=5)  # different parameters: everything must come from the saved state
    fresh_opt = ZeroOptimizer(_groups(fresh), cls, **options)
    fresh.load_state_dict(saved_model)
    fresh_opt.load_state_dict(saved_opt)
    train(fresh, fresh_opt, batches[steps_before:])
    try:
        ZeroOptimizer(_model().parameters(), cls, **options).load_state_dict({**saved_opt, "world_size": w + 1})
    except ValueError as exc:
        message = str(exc)
    return {"params": {k: v.clone() for k, v in fresh.state_dict().items()}, "message": message}


def test_state_dict_round_trip_continues_the_same_training():
    reference = _train("adamw", 5, zero=False)
    for out in dpcourse.launch(_round_trip, 2, 2, 3, timeout=120):
        for k, want in reference["params"].items():
            assert (out["params"][k] - want).abs().max().item() < 1e-12, k
        assert "torch.distributed.checkpoint" in out["message"] and "\n" not in out["message"]


def _bf16_master() -> dict:
    torch.manual_seed(0)
    model = nn.Linear(64, 32).bfloat16()
    opt = ZeroOptimizer(model.parameters(), torch.optim.AdamW, master_dtype=torch.float32, lr=1e-2)
    model(torch.randn(8, 64, dtype=torch.bfloat16)).float().square().mean().backward()
    opt.step()
    return {"dtype": str(model.weight.dtype), "master": str(opt.master.dtype), "state": opt.state_bytes(),
            "same": [t.float().sum().item() for t in model.parameters()]}


def test_bf16_model_with_fp32_master_costs_12_bytes_per_parameter_over_n():
    numel = 64 * 32 + 32
    outs = dpcourse.launch(_bf16_master, 2, timeout=120)
    for out in outs:
        assert out["dtype"] == "torch.bfloat16" and out["master"] == "torch.float32"
        # fp32 master (4 bytes) + two fp32 moments (8 bytes) per element of the shard, + step counters
        assert 12 * numel // 2 <= out["state"] <= 12 * numel // 2 + 2 * 4
    assert outs[0]["same"] == outs[1]["same"]  # every rank holds the same gathered parameters


def _bad_inputs() -> list[str]:
    errors = []
    for make in (lambda: ZeroOptimizer([], torch.optim.SGD, lr=0.1),
                 lambda: ZeroOptimizer(nn.Linear(2, 2).weight, torch.optim.SGD, lr=0.1),
                 lambda: ZeroOptimizer(list(nn.Linear(2, 2).parameters()) + [nn.Parameter(torch.zeros(2).double())],
                                       torch.optim.SGD, lr=0.1)):
        try:
            make()
        except (ValueError, TypeError) as exc:
            errors.append(str(exc))
    return errors


def test_bad_input_gets_a_one_line_error():
    errors = dpcourse.launch(_bad_inputs, 1, timeout=60)[0]
    assert len(errors) == 3 and all("\n" not in e for e in errors)
    with pytest.raises(RuntimeError, match="process group"):
        ZeroOptimizer(nn.Linear(2, 2).parameters(), torch.optim.SGD, lr=0.1)


def test_shard_bounds_cover_the_buffer_in_equal_shards():
    for numel, world in ((10, 4), (58, 3), (3, 4), (8, 2)):
        bounds = [shard_bounds(numel, world, r) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] >= numel
        assert len({b - a for a, b in bounds}) == 1
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(world - 1))


# --------------------------------------------------------------------------- the lesson's helpers

def test_saved_activations_count_what_autograd_keeps_for_backward():
    from dpcourse.memory import SavedActivations

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with SavedActivations(model) as saved:
        model(torch.randn(5, 4)).sum()
    # Linear keeps its input (5 x 4 floats), ReLU its output (5 x 3); the weight is a parameter, not counted
    assert saved.bytes == (5 * 4 + 5 * 3) * 4
    with SavedActivations(model) as saved:
        with torch.no_grad():
            model(torch.randn(5, 4))
    assert saved.bytes == 0  # nothing is saved without autograd


def test_zero_accounting_follows_the_stages():
    from dpcourse.memory import zero_bytes_per_rank

    per_parameter = {stage: sum(zero_bytes_per_rank(1000, 4, stage).values()) / 1000
                     for stage in ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3")}
    assert per_parameter == {"DDP": 16, "ZeRO-1": 2 + 2 + 12 / 4, "ZeRO-2": 2 + 14 / 4, "ZeRO-3": 16 / 4}
    with pytest.raises(ValueError, match="unknown stage"):
        zero_bytes_per_rank(10, 2, "ZeRO-4")


def _logged_steps() -> dict:
    from torch.distributed.fsdp import fully_shard

    from dpcourse.commlog import CollectiveLog
    from dpcourse.memory import parameter_bytes

    model = _model()
    opt = ZeroOptimizer(model.parameters(), torch.optim.SGD, lr=0.1)
    model(torch.randn(4, 7, dtype=torch.float64)).sum().backward()
    with CollectiveLog() as zero:
        opt.step()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 2))
    for layer in (net[0], net[2]):
        fully_shard(layer)
    fully_shard(net)
    with CollectiveLog() as fsdp:
        net(torch.randn(4, 8)).sum().backward()
    return {"zero": (zero.counts(), zero.bytes_sent()), "fsdp": (fsdp.counts(), fsdp.bytes_sent()),
            "fsdp_param_bytes": parameter_bytes(net), "flat": opt.flat.numel() * 8}


def test_collective_log_counts_zero1_and_fsdp_steps():
    from dpcourse.commlog import step_traffic, wire_bytes

    out = dpcourse.launch(_logged_steps, 2, timeout=120)[0]
    counts, sent = out["zero"]
    assert counts == {"reduce-scatter": 1, "all-gather": 1}
    assert sent == sum(wire_bytes(op, b, 2) for op, b in step_traffic("ZeRO-1", out["flat"], 2))
    counts, sent = out["fsdp"]
    assert counts == {"all-gather": 4, "reduce-scatter": 2}  # ZeRO-3: gathered in forward and again in backward
    full = (8 * 6 + 6 + 6 * 2 + 2) * 4
    assert out["fsdp_param_bytes"] == full // 2  # each rank holds half of every parameter
    assert sent == 3 * (2 - 1) / 2 * full  # three collectives of (N-1)/N of the parameters each, N = 2


def _on_a_link() -> float:
    import dpcourse.network

    model = _model()
    opt = ZeroOptimizer(model.parameters(), torch.optim.SGD, lr=0.1)
    model(torch.randn(4, 7, dtype=torch.float64)).sum().backward()
    dpcourse.network.reset_stats()
    opt.step()
    return dpcourse.network.stats()["wire_s"], opt.flat.numel() * 8


def test_alpha_beta_prediction_equals_what_the_simulated_link_charges():
    pytest.importorskip("dpcourse.network")
    from dpcourse.commlog import predict_seconds, step_traffic

    link = dpcourse.Link(latency=2e-3, bandwidth=1e6)
    wire_s, flat = dpcourse.launch(_on_a_link, 2, network=link, timeout=120)[0]
    predicted = predict_seconds(step_traffic("ZeRO-1", flat, 2), 2, link.latency, 1 / link.bandwidth)
    assert wire_s == pytest.approx(predicted, rel=0.02)


def _custom_reduce_scatter() -> dict:
    used = []

    def by_hand(output: torch.Tensor, input: torch.Tensor) -> None:  # all-reduce, keep my chunk: slow but right
        used.append(input.numel())
        full = input.clone()
        dist.all_reduce(full)
        output.copy_(full.chunk(dist.get_world_size())[dist.get_rank()])

    cls, options = OPTIMIZERS["adamw"]
    model = _model()
    opt = ZeroOptimizer(_groups(model), cls, reduce_scatter=by_hand, **options)
    r, w = dist.get_rank(), dist.get_world_size()
    per = BATCH // w
    for x, y in _batches(3):
        nn.functional.cross_entropy(model(x[r * per:(r + 1) * per]), y[r * per:(r + 1) * per]).backward()
        opt.step()
        opt.zero_grad()
    return {"params": {k: v.clone() for k, v in model.state_dict().items()}, "used": used, "flat": opt.flat.numel()}


def test_a_reduce_scatter_of_ones_own_plugs_in():
    reference = _train("adamw", 3, zero=False)
    for out in dpcourse.launch(_custom_reduce_scatter, 3, timeout=120):
        assert out["used"] == [out["flat"]] * 3  # once per step, on the whole padded flat gradient
        for k, want in reference["params"].items():
            assert (out["params"][k] - want).abs().max().item() < 1e-12, k


def test_resident_bytes_sees_a_tensor_being_touched():
    from dpcourse.memory import resident_bytes

    before = resident_bytes()
    if before is None:
        pytest.skip("this system gives no resident-memory figure")
    big = torch.ones(64 * 2**20 // 4)  # 64 MB, written, so its pages are resident
    grown = resident_bytes() - before
    assert grown >= 48 * 2**20, grown
    del big
