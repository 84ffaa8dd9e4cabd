"""Exercise 09: ``class ZeroOptimizer``, ZeRO stage 1 around any ``torch.optim`` optimizer class.

Graded by equivalence with single-process training on the full batch (computed here, in the grader) with
SGD with momentum and AdamW, at 1 to 4 ranks, with parameter counts that do not divide by the world size;
by the optimizer state each rank holds (``.optimizer.state``: about 1/N of the full state); by the
collectives of a step (counted on the process group itself: no all-reduce); and by a ``state_dict``
round trip in the middle of training. More ranks, world size 1 and other optimizers are the instructor's
hidden tests (``instructor/suites/ex09_zero.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpcourse.grading.framework import COURSE_REFERENCES, Context, Fail, Suite
from dpcourse.grading.suites._common import compare

SUITE = Suite("09", names=("ZeroOptimizer",), title="ZeRO-1 optimizer",
              reference_modules=COURSE_REFERENCES + ("dpcourse.zero", "torch.distributed.optim",
                                                     "torch.distributed.fsdp"))

_BATCH = 24  # global batch: divisible by 1, 2, 3 and 4 ranks
_OPTIMIZERS = {"sgd": ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
               "adamw": ("AdamW", {"lr": 0.05, "weight_decay": 0.1})}
# The process-group methods every torch.distributed collective ends in (whatever name the learner called).
_PG_METHODS = {"allreduce": "all-reduce", "allreduce_coalesced": "all-reduce", "reduce": "reduce",
               "broadcast": "broadcast", "reduce_scatter": "reduce-scatter",
               "reduce_scatter_single": "reduce-scatter", "_reduce_scatter_base": "reduce-scatter",
               "reduce_scatter_tensor_coalesced": "reduce-scatter", "allgather": "all-gather",
               "all_gather_single": "all-gather", "_allgather_base": "all-gather",
               "allgather_into_tensor_coalesced": "all-gather", "alltoall": "all-to-all",
               "alltoall_base": "all-to-all", "send": "send", "recv": "recv", "gather": "gather", "scatter": "scatter"}


def _model(kind: str, seed: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if kind == "even":   # 6*6+6 + 6*3+3 + 3 = 66 parameters: divisible by 2
        return nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3), nn.Tanh(),
                             nn.Linear(3, 1, bias=False)).double()
    if kind == "odd":    # 6*5+5 + 5*3+3 = 53 parameters: a prime, so no world size above 1 divides it
        return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    return nn.Sequential(nn.Linear(6, 40), nn.Tanh(), nn.Linear(40, 30), nn.Tanh(), nn.Linear(30, 3)).double()


def _out_features(kind: str) -> int:
    return 1 if kind == "even" else 3


def _batches(seed: int, steps: int, kind: str) -> list[tuple[Any, Any]]:
    import torch

    g = torch.Generator().manual_seed(seed + 99)
    return [(torch.randn(_BATCH, 6, generator=g, dtype=torch.float64),
             torch.randn(_BATCH, _out_features(kind), generator=g, dtype=torch.float64)) for _ in range(steps)]


def _shard(t: Any, rank: int, world: int) -> Any:
    per = t.shape[0] // world
    return t[rank * per:(rank + 1) * per]


def _count_collectives() -> dict[str, int]:
    """Count every collective from now on, at the process group, where all of torch.distributed's paths meet."""
    import torch

    counts: dict[str, int] = {}
    pg = torch._C._distributed_c10d.ProcessGroup
    for method, op in _PG_METHODS.items():
        original = getattr(pg, method, None)
        if original is None or getattr(original, "_ex09_counted", False):
            continue

        def counted(self: Any, *args: Any, _op: str = op, _original: Any = original, **kwargs: Any) -> Any:
            counts[_op] = counts.get(_op, 0) + 1
            return _original(self, *args, **kwargs)

        counted._ex09_counted = True  # type: ignore[attr-defined]
        setattr(pg, method, counted)
    return counts


def _state_bytes(opt: Any) -> Any:
    import torch

    inner = getattr(opt, "optimizer", None)
    if not isinstance(inner, torch.optim.Optimizer):
        return None
    return int(sum(t.numel() * t.element_size()
                   for s in inner.state.values() for t in s.values() if torch.is_tensor(t)))


def _train_worker(cls: Any, seed: int, kind: str, optimizer: str, steps: int, round_trip_at: Any) -> dict:
    import torch
    import torch.distributed as dist
    from torch import nn

    rank, world = dist.get_rank(), dist.get_world_size()
    counts = _count_collectives()
    name, options = _OPTIMIZERS[optimizer]
    optimizer_class = getattr(torch.optim, name)
    model = _model(kind, seed)
    opt = cls(model.parameters(), optimizer_class, **options)
    per_step, state = [], None
    for step, (x, y) in enumerate(_batches(seed, steps, kind)):
        if step == round_trip_at:    # save, rebuild from scratch, load, go on
            saved_model, saved_opt = {k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict()
            model = _model(kind, seed + 1)          # other parameters: everything must come from the saved state
            opt = cls(model.parameters(), optimizer_class, **options)
            model.load_state_dict(saved_model)
            opt.load_state_dict(saved_opt)
        nn.functional.mse_loss(model(_shard(x, rank, world)), _shard(y, rank, world)).backward()
        counts.clear()
        opt.step()
        per_step.append(dict(counts))
        opt.zero_grad()
        state = _state_bytes(opt)
    return {"params": [p.detach() for p in model.parameters()], "collectives": per_step, "state_bytes": state}


def _run(learner: Any, p: dict, ctx: Context) -> list[dict]:
    return ctx.launch(_train_worker, p["world_size"], learner.ZeroOptimizer, ctx.seed, p["kind"], p["optimizer"],
                      p["steps"], p.get("round_trip_at"))


def _reference(p: dict, seed: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Single-process training on the full batches: final parameters, initial ones, full state bytes."""
    import torch
    from torch import nn

    model = _model(p["kind"], seed)
    initial = [q.detach().numpy().copy() for q in model.parameters()]
    name, options = _OPTIMIZERS[p["optimizer"]]
    opt = getattr(torch.optim, name)(model.parameters(), **options)
    for x, y in _batches(seed, p["steps"], p["kind"]):
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    return [q.detach().numpy() for q in model.parameters()], initial, int(state)


def _missing_all_gather(got: list, want: list, initial: list, rank: int, world: int) -> bool:
    """True when (nearly) every element outside this rank's shard kept its initial value though it should move."""
    def flat(arrays: list) -> np.ndarray:
        return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])

    g, w, w0 = flat(got), flat(want), flat(initial)
    size = -(-g.size // world)
    outside = np.ones(g.size, dtype=bool)
    outside[rank * size:(rank + 1) * size] = False
    should_move = outside & ~np.isclose(w, w0, rtol=0, atol=1e-12)
    stale = should_move & (g == w0)
    return bool(should_move.any()) and stale.sum() >= 0.9 * should_move.sum()


def _judge_training(raw: Any, p: dict, seed: int) -> None:
    n = p["world_size"]
    if not isinstance(raw, list) or len(raw) != n:
        raise Fail("the workers did not report back.")
    want, initial, _ = _reference(p, seed)
    for r, out in enumerate(raw):
        got = out.get("params") or []
        same_shapes = all(isinstance(g, np.ndarray) and g.shape == w.shape for g, w in zip(got, want))
        if len(got) != len(want) or not same_shapes:
            raise Fail(f"rank {r}: the model lost parameters or changed their shapes.")
        if n > 1 and _missing_all_gather(got, want, initial, r, n):
            raise Fail(f"rank {r}: the parameters outside its own shard never changed from their initial values: "
                       "the other ranks' updated shards never reached it (all-gather the shards after the step).")
        for i, (g, w) in enumerate(zip(got, want)):
            what = f"rank {r}, parameter {i} after {p['steps']} steps (vs. one process on the full batch)"
            compare(what, g, w, 1e-7, 1e-9)


def _judge_state(raw: Any, p: dict, seed: int) -> None:
    n = p["world_size"]
    if not isinstance(raw, list) or len(raw) != n:
        raise Fail("the workers did not report back.")
    _, _, full = _reference(p, seed)
    per_rank = [out.get("state_bytes") for out in raw]
    if any(b is None for b in per_rank):
        raise Fail("ZeroOptimizer has no .optimizer attribute holding the wrapped torch.optim optimizer: keep it "
                   "as self.optimizer, so that its state can be measured.")
    numel = sum(q.size for q in _reference(p, seed)[1])
    allowance = full / n + 16 * n + 64 * 8  # padding elements and a few per-tensor step counters
    for r, b in enumerate(per_rank):
        if b > allowance:
            raise Fail(f"rank {r} holds {b} bytes of optimizer state; one process holds {full} for {numel} "
                       f"parameters, so each of {n} ranks should hold about {full / n:.0f}: build the wrapped "
                       "optimizer on this rank's shard only.")
    if sum(per_rank) < 0.9 * full:
        raise Fail(f"the ranks together hold {sum(per_rank)} bytes of optimizer state, less than the {full} one "
                   "process holds: some parameters are not stepped by any rank.")


def _judge_collectives(raw: Any, p: dict, seed: int) -> None:
    _judge_training(raw, p, seed)
    for r, out in enumerate(raw):
        for step, used in enumerate(out.get("collectives") or []):
            if used.get("all-reduce"):
                raise Fail(f"rank {r}, step {step}: {used['all-reduce']} all-reduce(s) inside step(): ZeRO-1 "
                           "reduce-scatters the gradient instead (each rank needs only its own shard's sum, and "
                           "an all-reduce sends twice the bytes a reduce-scatter does).")
            if not used.get("reduce-scatter"):
                raise Fail(f"rank {r}, step {step}: no reduce-scatter inside step() (collectives: {used}).")


BASE = {"kind": "odd", "optimizer": "adamw", "steps": 3}  # the instructor's hidden tests (instructor/suites) start here


def _add(name: str, judge: Any, visible: bool, hint: str, **params: Any) -> None:
    SUITE.add(name, _run, judge, params={**BASE, **params}, visible=visible, hint=hint)


_add("SGD with momentum, 2 ranks, an even parameter count: matches one process", _judge_training, True,
     "reduce-scatter the flat gradient, divide by the world size, step your shard, all-gather the shards.",
     kind="even", optimizer="sgd", world_size=2)
_add("AdamW with weight decay, 2 ranks: matches one process", _judge_training, True,
     "every rank must end with the full updated parameters, not only its own shard.", world_size=2)
_add("a parameter count that does not divide by the world size (4 ranks: shards end inside parameters)",
     _judge_training, True, "pad the flat buffer to N * ceil(numel / N); a piece of a parameter takes its "
     "gradient from the same offset in the reduce-scattered shard as its own offset in your shard.", world_size=4)
_add("optimizer state per rank is about 1/N (4 ranks)", _judge_state, True,
     "give the wrapped optimizer only the pieces of your shard, never all parameters.", kind="wide", world_size=4,
     steps=1)
_add("no all-reduce of the full gradient: one reduce-scatter per step", _judge_collectives, True,
     "use dist.reduce_scatter_single (or reduce_scatter_tensor) on the flat gradient, not all_reduce.",
     world_size=2)
_add("state_dict round trip in the middle of training continues the same training", _judge_training, True,
     "state_dict() returns what load_state_dict() needs to continue exactly; the model's own state_dict holds the "
     "parameters.", optimizer="adamw", world_size=2, steps=4, round_trip_at=2)
