"""The simulated link: byte counts, queueing, results identical to plain gloo, DDP on it, no CPU spent waiting."""

from __future__ import annotations

import math

import pytest

import dpcourse
from dpcourse.network import Link, links, resolve

MB = 1 << 20


# --------------------------------------------------------------------------- links and presets

def test_presets_have_figures_and_sources():
    presets = links()
    for name in ("NVLink", "InfiniBand NDR", "100GbE", "25GbE", "10GbE", "1GbE", "PCIe"):
        link = presets[name]
        assert link.latency > 0 and math.isfinite(link.bandwidth) and link.bandwidth > 0
        assert len(link.source) > 20, f"{name} has no source for its figures"
        assert name.split()[0][:4].lower() in str(link).lower() or link.name in str(link)
    assert presets["NVLink"].bandwidth > presets["InfiniBand NDR"].bandwidth > presets["100GbE"].bandwidth \
        > presets["25GbE"].bandwidth > presets["10GbE"].bandwidth > presets["1GbE"].bandwidth


def test_resolve_and_bad_input():
    assert resolve("25gbe") is links()["25GbE"]
    assert resolve(None) is None
    with pytest.raises(ValueError, match="unknown network 'warp drive': use one of"):
        resolve("warp drive")
    with pytest.raises(ValueError, match="latency"):
        Link(latency=-1, bandwidth=1e9)
    with pytest.raises(ValueError, match="bandwidth"):
        Link(latency=0, bandwidth=0)
    with pytest.raises(dpcourse.LaunchError, match="gloo"):
        dpcourse.launch(lambda: 0, 1, network="10GbE", backend="nccl")


def test_dilation_and_straggler_are_described():
    link = links()["10GbE"].dilated(100).with_straggler(1, 2.0)
    assert link.latency == pytest.approx(30e-6 * 100)
    assert link.bandwidth == pytest.approx(1.25e9 / 100)
    assert link.time(1e6) == pytest.approx(3e-3 + 1e6 / 12.5e6)
    assert "dilated x100" in str(link) and "rank 1 computes 2x slower" in str(link)
    assert link.slowdown_of(1) == 2.0 and link.slowdown_of(0) == 1.0


# --------------------------------------------------------------------------- in workers

def _collectives(numel: int) -> dict:
    import torch
    import torch.distributed as dist

    from dpcourse import network

    r, n = dist.get_rank(), dist.get_world_size()
    counted = {}

    def count(name, op):
        network.reset_stats()
        op()
        counted[name] = network.stats()["bytes_sent"]

    t = torch.ones(numel)
    count("allreduce", lambda: dist.all_reduce(t))
    count("broadcast", lambda: dist.broadcast(t, src=0))
    out = torch.empty(numel * n)
    count("allgather", lambda: dist.all_gather_into_tensor(out, t))
    part = torch.empty(numel // n)
    count("reduce_scatter", lambda: dist.reduce_scatter_tensor(part, t))
    if r == 0:
        count("send", lambda: dist.send(t, dst=1))
    elif r == 1:
        count("recv", lambda: dist.recv(t, src=0))
    dist.barrier()
    return counted


@pytest.mark.parametrize("world", [2, 4])
def test_bytes_sent_per_rank_follow_each_algorithm(world):
    numel = 4 * 3 * 1024  # divisible by 2 and 4
    size = numel * 4
    results = dpcourse.launch(_collectives, world, numel, network="ideal", timeout=60)
    for r, c in enumerate(results):
        assert c["allreduce"] == 2 * (world - 1) * size // world
        assert c["allgather"] == (world - 1) * size  # output is world * size bytes
        assert c["reduce_scatter"] == (world - 1) * size // world
        assert c["broadcast"] == size
    assert results[0]["send"] == size
    assert results[1]["recv"] == 0  # a receive puts nothing on this rank's outgoing wire


def _queued() -> list:
    import torch
    import torch.distributed as dist

    from dpcourse import network

    a, b = torch.ones(MB // 4), torch.ones(MB // 4)
    network.reset_stats()
    works = [dist.all_reduce(a, async_op=True), dist.all_reduce(b, async_op=True)]
    for w in works:
        w.wait()
    return network.transfers()


def test_a_second_transfer_queues_behind_the_first():
    link = Link(latency=1e-3, bandwidth=100e6)
    log = dpcourse.launch(_queued, 2, network=link, timeout=60)[0]
    (op1, s1, e1, b1), (op2, s2, e2, b2) = log
    assert op1 == op2 == "allreduce" and b1 == b2 == MB  # 2 (N-1) / N of 1 MB, N = 2
    assert e1 - s1 == pytest.approx(link.time(MB, 2))
    assert s2 >= e1 - 1e-9, "the second all-reduce started before the first had left the wire"


def _timed_wait(nbytes: int) -> tuple:
    import time

    import torch
    import torch.distributed as dist

    t = torch.ones(nbytes // 4)
    dist.all_reduce(t)  # connect first
    wall, cpu = time.monotonic(), time.process_time()
    dist.all_reduce(t)
    return time.monotonic() - wall, time.process_time() - cpu


def test_waiting_for_the_wire_sleeps_and_is_never_early():
    link = Link(latency=0.2, bandwidth=1e9)  # 0.4 s of latency for a 2-rank all-reduce
    for wall, cpu in dpcourse.launch(_timed_wait, 2, 4096, network=link, timeout=60):
        assert wall >= link.time(4096, 2) - 1e-3, "the all-reduce finished before the link allowed"
        assert cpu < 0.25 * wall, f"waiting used {cpu:.3f} s of CPU in {wall:.3f} s: it must sleep, not spin"


def _train_ddp(which: str) -> list:
    import torch
    import torch.distributed as dist
    from torch import nn

    from dpcourse.allreduce import naive_all_reduce, ring_all_reduce
    from dpcourse.ddp_by_hand import BucketedDDP

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3)).double()
    if which == "torch":
        model = nn.parallel.DistributedDataParallel(net, bucket_cap_mb=0.01)
    else:
        model = BucketedDDP(net, bucket_mb=0.01, first_bucket_mb=0.01)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(100 + dist.get_rank())
    for _ in range(4):
        x, y = torch.randn(16, 20, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if which != "torch":
            model.finish_gradient_synchronization()
        opt.step()
    t = torch.arange(1001, dtype=torch.float64) * (dist.get_rank() + 1) / 7
    u = t.clone()
    ring_all_reduce(t)
    naive_all_reduce(u)
    return [p.detach().clone() for p in net.parameters()] + [t, u]


@pytest.mark.parametrize("which", ["torch", "bucketed"])
def test_training_on_the_link_is_bit_identical_to_plain_gloo(which):
    import torch

    plain = dpcourse.launch(_train_ddp, 2, which, timeout=90)
    linked = dpcourse.launch(_train_ddp, 2, which, network=Link(latency=2e-4, bandwidth=50e6), timeout=90)
    for r in range(2):
        for a, b in zip(plain[r], linked[r]):
            assert torch.equal(a, b)
    for a, b in zip(linked[0], linked[1]):
        assert torch.equal(a, b), "ranks disagree"


def _groups() -> tuple:
    import torch
    import torch.distributed as dist

    from dpcourse import network

    g = dist.new_group()
    network.reset_stats()
    dist.all_reduce(torch.ones(10), group=g)
    return type(dist.group.WORLD).__name__, type(g).__name__, network.stats()["ops"]


def test_groups_made_from_the_default_one_are_simulated_too():
    world, made, ops = dpcourse.launch(_groups, 2, network="ideal", timeout=60)[0]
    assert world == made == "SimulatedProcessGroup"
    assert ops == {"allreduce": 1}


def _stats_without_link():
    from dpcourse import network

    return network.stats()


def test_stats_without_a_link_say_what_to_do():
    with pytest.raises(dpcourse.WorkerError, match="launch with network="):
        dpcourse.launch(_stats_without_link, 1, timeout=30)


def _compute_then_reduce() -> float:
    import time

    import torch
    import torch.distributed as dist

    x, w = torch.randn(64, 64), torch.randn(64, 64) / 8
    dist.all_reduce(torch.ones(1))  # marks where computation starts
    cpu = time.thread_time()
    while time.thread_time() - cpu < 0.1:  # 0.1 s of computation, in CPU time
        x = torch.tanh(x @ w)
    start = time.monotonic()
    dist.all_reduce(torch.ones(4))
    return time.monotonic() - start


def test_a_straggler_makes_the_others_wait():
    link = links()["ideal"].with_straggler(1, 3.0)  # rank 1 computes 3x slower: it sleeps 0.2 s more
    waited = dpcourse.launch(_compute_then_reduce, 2, network=link, timeout=60)
    assert waited[0] >= 0.12, f"rank 0 waited only {waited[0]:.3f} s for the slow rank"


def test_dpcourse_links_lists_every_preset_with_its_source(capsys):
    from dpcourse.cli import main

    assert main(["links"]) == 0
    out = capsys.readouterr().out
    for name, link in links().items():
        assert name in out and link.source in out
    assert "NVIDIA A100" in out and "TFLOP/s fp32" in out


def _gather_scatter(numel: int) -> dict:
    import torch
    import torch.distributed as dist

    from dpcourse import network

    r, n = dist.get_rank(), dist.get_world_size()
    t = torch.full((numel,), float(r))
    network.reset_stats()
    bucket = [torch.empty(numel) for _ in range(n)] if r == 0 else None
    dist.gather(t, bucket, dst=0)
    gathered = network.stats()["bytes"].get("gather", 0)
    network.reset_stats()
    dist.scatter(t, [torch.full((numel,), float(i)) for i in range(n)] if r == 0 else None, src=0)
    return {"gather": gathered, "scatter": network.stats()["bytes"].get("scatter", 0), "got": float(t[0]),
            "ranks": [float(b[0]) for b in bucket] if bucket else None}


def test_gather_and_scatter_charge_each_rank_what_it_sends():
    numel, world = 1000, 3
    out = dpcourse.launch(_gather_scatter, world, numel, network="ideal", timeout=60)
    size = numel * 4
    assert out[0]["ranks"] == [0.0, 1.0, 2.0] and [o["got"] for o in out] == [0.0, 1.0, 2.0]
    assert out[0]["gather"] == 0 and out[1]["gather"] == size  # the root only receives
    assert out[0]["scatter"] == (world - 1) * size and out[1]["scatter"] == 0
