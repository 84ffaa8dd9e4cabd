"""Exercise 05: ``average_gradients(model)`` and ``class BucketedDDP(nn.Module)``.

Graded by equivalence with single-process training on the full batch (computed here, in the grader),
and by counting collectives: one all-reduce per bucket per step, none inside ``no_sync()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpcourse.grading.framework import Context, Fail, Suite, calls, reset_calls
from dpcourse.grading.suites._common import compare

SUITE = Suite("05", names=("average_gradients", "BucketedDDP"), title="DDP by hand",
              reference_modules=("dpcourse.collectives", "dpcourse.ddp", "torch.nn.parallel"))

_BATCH = 12  # global batch: divisible by 1, 2, 3 and 4 ranks


def _model(kind: str, seed: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()

    class Tricky(nn.Module):
        """A frozen layer, a layer used twice (shared weights), an unused layer and a buffer."""

        def __init__(self) -> None:
            super().__init__()
            self.frozen = nn.Linear(6, 6)
            self.frozen.requires_grad_(False)
            self.shared = nn.Linear(6, 6)
            self.head = nn.Linear(6, 3)
            self.unused = nn.Linear(6, 3)
            self.register_buffer("scale", 1.0 + torch.rand(6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.frozen(x)) * self.scale
            h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
            return self.head(h)

    return Tricky().double()


def _batches(seed: int, steps: int) -> list[tuple[Any, Any]]:
    import torch

    g = torch.Generator().manual_seed(seed + 99)
    return [(torch.randn(_BATCH, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (_BATCH,), generator=g))
            for _ in range(steps)]


def _shard(t: Any, rank: int, world: int) -> Any:
    per = t.shape[0] // world
    return t[rank * per:(rank + 1) * per]


# --------------------------------------------------------------------------- average_gradients

def _average_worker(fn: Any, seed: int) -> dict:
    import torch.distributed as dist
    from torch import nn

    rank, world = dist.get_rank(), dist.get_world_size()
    model = _model("mlp", seed)
    (x, y), = _batches(seed, 1)
    nn.CrossEntropyLoss()(model(_shard(x, rank, world)), _shard(y, rank, world)).backward()
    reset_calls()
    fn(model)
    return {"grads": [p.grad for p in model.parameters()], "calls": calls()}


def _run_average(learner: Any, p: dict, ctx: Context) -> list[dict]:
    return ctx.launch(_average_worker, p["world_size"], learner.average_gradients, ctx.seed)


def _judge_average(raw: Any, p: dict, seed: int) -> None:
    from torch import nn

    n = p["world_size"]
    if not isinstance(raw, list) or len(raw) != n:
        raise Fail("the workers did not report back.")
    model = _model("mlp", seed)
    (x, y), = _batches(seed, 1)
    nn.CrossEntropyLoss()(model(x), y).backward()
    wants = [q.grad.numpy() for q in model.parameters()]
    for r, out in enumerate(raw):
        grads = out.get("grads") or []
        if len(grads) != len(wants) or any(g is None for g in grads):
            raise Fail(f"rank {r}: some gradients are missing afterwards.")
        for i, (got, want) in enumerate(zip(grads, wants)):
            if isinstance(got, np.ndarray) and got.shape == want.shape and n > 1 and np.allclose(got, n * want):
                raise Fail(f"rank {r}: the gradients are {n}x too large: divide the all-reduced sum by the "
                           "world size.")
            compare(f"rank {r}, gradient of parameter {i}", got, want, 1e-7, 1e-10)


# --------------------------------------------------------------------------- BucketedDDP

def _ddp_worker(cls: Any, seed: int, kind: str, steps: int, bucket_mb: Any, accumulate: bool) -> dict:
    import torch
    import torch.distributed as dist
    from torch import nn

    rank, world = dist.get_rank(), dist.get_world_size()
    model = _model(kind, seed + 1000 * rank)  # different on every rank: construction must broadcast rank 0's
    ddp = cls(model) if bucket_mb == "default" else cls(model, bucket_mb=bucket_mb)
    if getattr(ddp, "module", None) is not model:
        raise AttributeError("BucketedDDP(model).module must be the wrapped model itself.")
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.2)
    loss_fn = nn.CrossEntropyLoss()
    batches = _batches(seed, steps * (2 if accumulate else 1))
    per_step, in_no_sync = [], []
    for step in range(steps):
        opt.zero_grad()
        if accumulate:
            x, y = batches[2 * step]
            reset_calls()
            with ddp.no_sync():
                loss_fn(ddp(_shard(x, rank, world)), _shard(y, rank, world)).backward()
            in_no_sync.append(sum(calls().values()))
            x, y = batches[2 * step + 1]
        else:
            x, y = batches[step]
        reset_calls()
        loss_fn(ddp(_shard(x, rank, world)), _shard(y, rank, world)).backward()
        ddp.finish_gradient_synchronization()
        per_step.append(calls().get("all_reduce", 0))
        opt.step()
    return {"params": [q.detach() for q in model.parameters()], "buffers": [b for b in model.buffers()],
            "all_reduce_per_step": per_step, "calls_in_no_sync": in_no_sync,
            "trainable": sum(1 for q in model.parameters() if q.requires_grad)}


def _run_ddp(learner: Any, p: dict, ctx: Context) -> list[dict]:
    return ctx.launch(_ddp_worker, p["world_size"], learner.BucketedDDP, ctx.seed, p["kind"], p["steps"],
                      p["bucket_mb"], p["accumulate"])


def _reference(p: dict, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Single-process training on the full batches, from rank 0's initial model."""
    import torch
    from torch import nn

    model = _model(p["kind"], seed)
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.2)
    batches = _batches(seed, p["steps"] * (2 if p["accumulate"] else 1))
    per = 2 if p["accumulate"] else 1
    for step in range(p["steps"]):
        opt.zero_grad()
        for x, y in batches[per * step: per * step + per]:
            nn.CrossEntropyLoss()(model(x), y).backward()
        opt.step()
    return [q.detach().numpy() for q in model.parameters()], [b.numpy() for b in model.buffers()]


def _judge_ddp(raw: Any, p: dict, seed: int) -> None:
    n = p["world_size"]
    if not isinstance(raw, list) or len(raw) != n:
        raise Fail("the workers did not report back.")
    params, buffers = _reference(p, seed)
    for r, out in enumerate(raw):
        got = out.get("params") or []
        if len(got) != len(params):
            raise Fail(f"rank {r}: the model lost parameters.")
        for b, (g, w) in enumerate(zip(out.get("buffers") or [], buffers)):
            compare(f"rank {r}, buffer {b} (broadcast from rank 0 at construction)", g, w, 0, 0)
        for i, (g, w) in enumerate(zip(got, params)):
            compare(f"rank {r}, parameter {i} after {p['steps']} steps (vs. one process on the full batch)",
                    g, w, 1e-7, 1e-9)
    counts = raw[0].get("all_reduce_per_step") or []
    expected = p.get("all_reduce_per_step")
    if expected == "one-per-parameter":
        expected = raw[0].get("trainable")
    if expected is not None and any(c != expected for c in counts):
        raise Fail(f"{counts[0]} all-reduce call(s) per step; expected {expected} "
                   f"(one per bucket with bucket_mb={p['bucket_mb']}).")
    no_sync = [c for out in raw for c in out.get("calls_in_no_sync") or []]
    if any(no_sync):
        raise Fail(f"{max(no_sync)} collective(s) inside no_sync(): nothing may be communicated there.")


def _ddp(name: str, n: int, visible: bool, hint: str, kind: str = "mlp", steps: int = 3, bucket_mb: Any = None,
         accumulate: bool = False, all_reduce_per_step: Any = None) -> None:
    SUITE.add(name, _run_ddp, _judge_ddp, visible=visible, hint=hint,
              params={"world_size": n, "kind": kind, "steps": steps, "bucket_mb": bucket_mb,
                      "accumulate": accumulate, "all_reduce_per_step": all_reduce_per_step})


SUITE.add("average_gradients: 2 ranks give the full-batch gradient", _run_average, _judge_average,
          params={"world_size": 2}, hint="all-reduce each .grad (a sum), then divide by the world size.")
SUITE.add("average_gradients: 3 ranks", _run_average, _judge_average, params={"world_size": 3}, visible=False,
          hint="divide by dist.get_world_size(), not by a constant.")
_ddp("BucketedDDP: 2 ranks, one bucket, matches one process", 2, True,
     "broadcast rank 0's parameters at construction, average (not sum) the gradients.", bucket_mb=None,
     all_reduce_per_step=1)
_ddp("BucketedDDP: one all-reduce per parameter with a tiny bucket_mb", 2, True,
     "each bucket is all-reduced exactly once per step.", bucket_mb=1e-9, all_reduce_per_step="one-per-parameter")
_ddp("BucketedDDP: no_sync accumulates without communicating", 2, True,
     "inside no_sync() the hooks must do nothing; the next synchronised backward averages the accumulated sum.",
     accumulate=True, bucket_mb=None, all_reduce_per_step=1)
_ddp("BucketedDDP: 3 ranks, default bucket size", 3, False, "check several steps in a row: reset your buckets "
     "after finish_gradient_synchronization().", bucket_mb="default", steps=4)
_ddp("BucketedDDP: frozen, shared and unused parameters, and a buffer", 2, False,
     "broadcast buffers and frozen parameters too; reduce a shared parameter once; a parameter that gets no "
     "gradient must not stall its bucket.", kind="tricky", bucket_mb=1e-9)
_ddp("BucketedDDP: world size 1", 1, False, "with one rank, averaging changes nothing.", bucket_mb=None)
