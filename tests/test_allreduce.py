"""The hand-written all-reduces (naive, textbook ring, pipelined ring) sum exactly what torch would,
at any world size, shape and dtype; the step-by-step trace hooks onto the textbook ring from outside."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpcourse import launch
from dpcourse.allreduce import chunk_bounds, naive_all_reduce, ring_all_reduce
from dpcourse.allreduce_pipelined import pipelined_ring_all_reduce
from dpcourse.costmodel import AlphaBeta, busbw, critical_path, fit_alpha_beta, memory_bandwidth
from dpcourse.plots.collectives import trace_ring_steps

SHAPES = [(), (1,), (3,), (7,), (4, 5), (2, 3, 5), (1001,)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64]
ALGORITHMS = {
    "naive": naive_all_reduce,
    "ring": ring_all_reduce,
    "pipelined": pipelined_ring_all_reduce,
    "pipelined, 8-byte pieces": lambda x: pipelined_ring_all_reduce(x, segment_bytes=8),  # many pieces per chunk
}


def _value(shape, dtype, rank: int) -> torch.Tensor:
    """Small whole numbers, different on every rank: their sum is exact in every dtype and order."""
    g = torch.Generator().manual_seed(1000 + rank)
    return torch.randint(-8, 9, shape, generator=g).to(dtype)


def _all_cases(transpose: bool) -> dict:
    """Run in a worker: every algorithm on every shape and dtype; return the results as numpy."""
    import dpcourse

    out = {}
    for name, fn in ALGORITHMS.items():
        for shape in SHAPES:
            for dtype in DTYPES:
                x = _value(shape, dtype, dpcourse.rank())
                if transpose and x.dim() >= 2:
                    x = x.transpose(0, 1)  # not contiguous: must still be summed in place
                y = fn(x)
                assert y is x, f"{name} must return the tensor it was given"
                assert y.dtype == dtype and y.shape == x.shape
                out[(name, shape, dtype)] = y.to(torch.float64).numpy()
    return out


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
def test_sum_is_exact_for_all_shapes_and_dtypes(world_size, no_leftover_processes):
    results = launch(_all_cases, world_size, world_size == 3, timeout=120)
    for (name, shape, dtype), got in results[0].items():
        expected = sum(_value(shape, dtype, r).to(torch.float64) for r in range(world_size))
        if world_size == 3 and len(shape) >= 2:
            expected = expected.transpose(0, 1)
        for r in range(world_size):
            np.testing.assert_array_equal(results[r][(name, shape, dtype)], expected.numpy(),
                                          err_msg=f"{name}, shape {shape}, {dtype}, rank {r} of {world_size}")


def _random_floats(n: int) -> list:
    import dpcourse

    x = torch.randn(n, generator=torch.Generator().manual_seed(dpcourse.rank()), dtype=torch.float32)
    exact = x.clone().double()
    torch.distributed.all_reduce(exact)
    runs = {"naive": naive_all_reduce, "ring": ring_all_reduce, "pipelined": pipelined_ring_all_reduce,
            "pipelined, 1000-byte pieces": lambda t: pipelined_ring_all_reduce(t, segment_bytes=1000)}  # one odd-sized
    return {name: float((fn(x.clone()).double() - exact).abs().max()) for name, fn in runs.items()}


@pytest.mark.parametrize("world_size", [2, 3])
def test_random_floats_match_torch_within_rounding(world_size, no_leftover_processes):
    for errors in launch(_random_floats, world_size, 100_003, timeout=60):
        assert len(errors) == 4 and max(errors.values()) < 1e-5, errors


def _twice_in_a_row(n: int) -> list:
    """The pipelined ring keeps a scratch buffer (and, on 2 ranks, a second group) between calls:
    a second call, a smaller one and one of another dtype must not see the first one's data."""
    import dpcourse

    r = dpcourse.rank()
    out = []
    for size, dtype in ((n, torch.float32), (n, torch.float32), (n // 3, torch.float32), (n, torch.float64)):
        out.append(pipelined_ring_all_reduce(torch.full((size,), r + 1.0, dtype=dtype)).tolist())
    return out


@pytest.mark.parametrize("world_size", [2, 4])
def test_pipelined_ring_can_be_called_again(world_size, no_leftover_processes):
    full = world_size * (world_size + 1) / 2
    for calls in launch(_twice_in_a_row, world_size, 999, timeout=60):
        assert [len(c) for c in calls] == [999, 999, 333, 999]
        assert all(v == full for c in calls for v in c)


def _only_point_to_point() -> list:
    import torch.distributed as dist

    def forbidden(*args, **kwargs):
        raise AssertionError("a collective was called: only send/recv/isend/irecv are allowed")

    for name in ("all_reduce", "broadcast", "reduce", "all_gather", "reduce_scatter", "all_to_all",
                 "reduce_scatter_tensor", "all_gather_into_tensor", "scatter", "gather"):
        setattr(dist, name, forbidden)
    x = torch.ones(10)
    return {name: fn(x.clone()).tolist() for name, fn in ALGORITHMS.items()}


@pytest.mark.parametrize("world_size", [2, 3])
def test_uses_only_point_to_point(world_size, no_leftover_processes):
    for results in launch(_only_point_to_point, world_size, timeout=60):
        assert results == {name: [float(world_size)] * 10 for name in ALGORITHMS}


def _traced(n: int) -> list:
    import dpcourse

    return trace_ring_steps(torch.full((n,), 2.0 ** dpcourse.rank()))


def test_trace_shows_every_step_and_ends_with_the_sum(no_leftover_processes):
    world = 4
    traces = launch(_traced, world, 8, timeout=60)
    full = float(2 ** world - 1)  # each rank holds 2**rank: the sum's bits say who contributed
    for r, trace in enumerate(traces):
        assert [p for p, _, _ in trace] == ["start"] + ["reduce-scatter"] * 3 + ["all-gather"] * 3
        assert trace[0][2] == [2.0 ** r] * 8
        assert trace[-1][2] == [full] * 8
        after_rs = trace[world - 1][2]  # after reduce-scatter exactly one chunk is complete here
        owned = [(a, b) for a, b in chunk_bounds(8, world) if after_rs[a:b] == [full] * (b - a)]
        assert owned == [chunk_bounds(8, world)[(r + 1) % world]]
        for (_, _, before), (_, _, after) in zip(trace, trace[1:]):  # one chunk changes per step
            changed = [c for c, (a, b) in enumerate(chunk_bounds(8, world)) if before[a:b] != after[a:b]]
            assert len(changed) == 1, (r, before, after)


def _after_step_calls(world_size: int) -> list:
    calls = []
    x = torch.ones(world_size * 3)
    ring_all_reduce(x, after_step=lambda phase, step, t: calls.append((phase, step, t is x)))
    return calls


def test_after_step_is_called_once_per_step_with_the_tensor(no_leftover_processes):
    for calls in launch(_after_step_calls, 3, 3, timeout=60):
        assert calls == [("reduce-scatter", 1, True), ("reduce-scatter", 2, True),
                         ("all-gather", 1, True), ("all-gather", 2, True)]


def test_chunk_bounds_cover_everything_once():
    for numel in range(0, 12):
        for parts in range(1, 6):
            bounds = chunk_bounds(numel, parts)
            assert len(bounds) == parts
            assert bounds[0][0] == 0 and bounds[-1][1] == numel
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_clear_errors_outside_a_process_group_and_for_bad_input():
    with pytest.raises(RuntimeError, match="dpcourse.launch"):
        ring_all_reduce(torch.ones(3))
    with pytest.raises(RuntimeError, match="dpcourse.launch"):
        naive_all_reduce(torch.ones(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ring_all_reduce([1.0, 2.0])
    with pytest.raises(TypeError, match="bool"):
        naive_all_reduce(torch.ones(3, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="dpcourse.launch"):
        pipelined_ring_all_reduce(torch.ones(3))
    with pytest.raises(TypeError, match="complex"):
        pipelined_ring_all_reduce(torch.ones(3, dtype=torch.complex64))


def _bad_segment() -> str:
    try:
        pipelined_ring_all_reduce(torch.ones(4), segment_bytes=0)
    except ValueError as exc:
        return str(exc)
    return "no error"


def test_pipelined_ring_rejects_a_segment_size_below_one_byte(no_leftover_processes):
    assert launch(_bad_segment, 2, timeout=60) == ["segment_bytes must be positive, got 0."] * 2


def test_alpha_beta_fit_recovers_the_model_it_was_sampled_from():
    rng = np.random.default_rng(0)
    true = AlphaBeta(alpha=float(rng.uniform(1e-5, 1e-3)), beta=float(rng.uniform(1e-10, 1e-8)))
    samples = [(alg, s, n, true.predict(alg, s, n) * (1 + rng.normal(0, 0.01)))
               for alg in ("naive", "ring") for n in (2, 4) for s in (1 << 10, 1 << 16, 1 << 20, 1 << 26)]
    fit = fit_alpha_beta(samples)
    assert fit.alpha == pytest.approx(true.alpha, rel=0.1)
    assert fit.beta == pytest.approx(true.beta, rel=0.1)


def test_cost_model_shapes():
    # the ring's bytes per rank shrink towards 2S as N grows; the naive root's grow with N
    assert critical_path("ring", 1000, 4) == (6.0, 1500.0)
    assert critical_path("naive", 1000, 4) == (6.0, 6000.0)
    assert critical_path("ring", 1000, 1) == (0.0, 0.0)
    with pytest.raises(ValueError, match="unknown algorithm"):
        critical_path("tree", 1000, 4)
    assert busbw(1e9, 1.0, 4) == pytest.approx(1.5e9)
    with pytest.raises(ValueError, match="two measurements"):
        fit_alpha_beta([("ring", 1000, 2, 1e-3)])


def test_memory_bandwidth_is_a_plausible_number():
    bw = memory_bandwidth(4 << 20, repeats=2)
    assert 1e8 < bw < 1e13  # between 0.1 GB/s and 10 TB/s
