"""Exercise 07: ``train_ddp(config) -> {"params": {name: tensor}, "start_epoch": int}`` on every rank.

Graded by equivalence with a reference run computed here, in the grader: one process training on the
global batch (``world_size * batch_size``) in the order ``DistributedSampler`` deals out. Then by
behaviour: ``no_sync`` on all but the last micro-batch of a step, output from rank 0 only, a checkpoint
written by rank 0 and loaded by every rank, and a resumed run that continues where the checkpoint left
off (and only trains the missing epochs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpcourse.grading.framework import COURSE_REFERENCES, Context, Fail, Judged, Suite
from dpcourse.grading.suites._common import compare_rel, tolerance

SUITE = Suite("07", names=("train_ddp",), title="DDP training",
              reference_modules=COURSE_REFERENCES + ("dpcourse.torch_ddp",),
              defaults={"per_rank": True, "shared_scratch": True})
RTOL = tolerance("float64", 4096)  # float64 training: summation order moves ~1e-15; a float32 step moves ~1e-8

BASE = {"n": 48, "features": 8, "classes": 3, "hidden": 16, "epochs": 2, "batch_size": 4, "accumulate": 1,
        "lr": 0.1, "momentum": 0.9, "checkpoint": None, "resume": False}


def _config(seed: int, **changes: Any) -> dict:
    return {**BASE, "seed": seed % 10_000, **changes}


# --------------------------------------------------------------------------- the reference (grader side)

def reference(config: dict, world_size: int, same_order: bool = False) -> dict[str, np.ndarray]:
    """One process, global batch ``world_size * batch_size``, ``DistributedSampler``'s shuffle."""
    import torch
    from torch import nn

    from dpcourse.data import synthetic_classification

    data = synthetic_classification(config["n"], config["features"], config["classes"], seed=config["seed"])
    x, y = data.tensors
    x = x.double()
    torch.manual_seed(config["seed"])
    model = nn.Sequential(nn.Linear(config["features"], config["hidden"]), nn.Tanh(),
                          nn.Linear(config["hidden"], config["classes"])).double()
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    batch, acc = world_size * config["batch_size"], config["accumulate"]
    for epoch in range(config["epochs"]):
        shuffle = torch.Generator().manual_seed(config["seed"] + (0 if same_order else epoch))
        order = torch.randperm(len(y), generator=shuffle)
        for i, start in enumerate(range(0, len(y), batch)):
            idx = order[start:start + batch]
            (nn.functional.cross_entropy(model(x[idx]), y[idx]) / acc).backward()
            if (i + 1) % acc == 0:
                opt.step()
                opt.zero_grad()
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- the child side

def _instrumented(train_ddp: Any, config: dict) -> dict:
    """Run the learner's train_ddp on this rank, recording what it printed, saved, loaded and synced."""
    import contextlib
    import io

    import torch
    from torch.nn.parallel import DistributedDataParallel

    seen = {"no_sync": 0, "save": 0, "load": 0, "steps": 0}
    original_no_sync, original_save, original_load = DistributedDataParallel.no_sync, torch.save, torch.load

    def no_sync(self: Any) -> Any:
        seen["no_sync"] += 1
        return original_no_sync(self)

    def save(*args: Any, **kwargs: Any) -> Any:
        seen["save"] += 1
        return original_save(*args, **kwargs)

    def load(*args: Any, **kwargs: Any) -> Any:
        seen["load"] += 1
        return original_load(*args, **kwargs)

    def count_step(*_: Any) -> None:
        seen["steps"] += 1

    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(count_step)
    DistributedDataParallel.no_sync, torch.save, torch.load = no_sync, save, load
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            result = train_ddp(dict(config))
    finally:
        DistributedDataParallel.no_sync, torch.save, torch.load = original_no_sync, original_save, original_load
        handle.remove()
    if not isinstance(result, dict) or not isinstance(result.get("params"), dict):
        raise TypeError("train_ddp must return a dict with 'params': {name: tensor} (and 'start_epoch').")
    params = {str(k): v.detach().cpu().numpy().copy() if isinstance(v, torch.Tensor) else v
              for k, v in result["params"].items()}
    return {"params": params, "start_epoch": result.get("start_epoch"), "printed": out.getvalue(), **seen}


def run(learner: Any, p: dict, ctx: Context) -> Any:
    """On every rank: each config in turn (checkpoints in the folder all ranks of this test share)."""
    import os

    configs = []
    for c in p["configs"]:
        c = _config(ctx.seed, **c)
        if c.get("checkpoint"):
            c["checkpoint"] = os.path.join(ctx.scratch, c["checkpoint"])
        configs.append(c)
    return [_instrumented(learner.train_ddp, c) for c in configs]



# --------------------------------------------------------------------------- the grader side

def _ranks(raw: Any, world: int, runs: int) -> list[list[dict]]:
    if not isinstance(raw, list) or len(raw) != world or any(not isinstance(r, list) or len(r) != runs for r in raw):
        raise Fail("the workers did not report back.")
    return raw


def _check_params(got: Any, config: dict, world: int, seed: int, what: str) -> None:
    want = reference(_config(seed, **config), world)
    if not isinstance(got, dict) or set(got) != set(want):
        names = sorted(got) if isinstance(got, dict) else got
        prefixed = any("module." in str(n) for n in names or [])
        hint = " (return model.module's state: no 'module.' prefix)" if prefixed else ""
        raise Fail(f"{what}: params has names {names}, expected {sorted(want)}{hint}.")
    for name in want:
        compare_rel(f"{what}, parameter {name}", got[name], want[name], RTOL)


def _judge_equivalence(raw: Any, p: dict, ctx: Judged) -> None:
    seed = ctx.seed
    world = p["world_size"]
    ranks = _ranks(raw, world, 1)
    for r in range(world):
        _check_params(ranks[r][0]["params"], p["configs"][0], world, seed, f"rank {r}")
    c = _config(seed, **p["configs"][0])
    steps = c["n"] // (world * c["batch_size"] * c["accumulate"]) * c["epochs"]
    for r in range(world if world > 1 else 0):
        reduced = ctx.ops(r).get("allreduce", 0)
        same = (ctx.stats[r] or {}).get("same_as_all", 0)
        if reduced and same == reduced:
            raise Fail(f"rank {r}: every rank all-reduced exactly the same gradients in all {reduced} steps: each rank "
                       "must compute on its own shard of the batch (DistributedSampler), not on the whole batch.")
        if reduced < steps:
            raise Fail(f"rank {r}: {reduced} gradient all-reduce(s) reached the process group in {steps} optimizer "
                       "steps: the gradients must be averaged by DistributedDataParallel (each rank trains on its "
                       "own shard), not computed from the whole batch on every rank.")


def _judge_no_sync(raw: Any, p: dict, ctx: Judged) -> None:
    seed = ctx.seed
    _judge_equivalence(raw, p, ctx)
    c = _config(seed, **p["configs"][0])
    micro = c["n"] // (p["world_size"] * c["batch_size"]) * c["epochs"]
    expected = micro - micro // c["accumulate"]
    steps = micro // c["accumulate"]
    for r in range(p["world_size"]):  # counted by the grader's process group, whatever the code patched
        reduced = ctx.ops(r).get("allreduce", 0)
        if reduced != steps:
            raise Fail(f"rank {r}: {reduced} gradient all-reduces reached the process group in {steps} optimizer steps "
                       f"of {c['accumulate']} micro-batches; expected one per optimizer step (no_sync on the others).")
    for r, runs in enumerate(raw):
        if runs[0]["no_sync"] != expected:
            raise Fail(f"rank {r} entered ddp.no_sync() {runs[0]['no_sync']} times in {micro} micro-batches; "
                       f"expected {expected}: all but the last micro-batch of each optimizer step.")


def _judge_logging(raw: Any, p: dict, ctx: Judged) -> None:
    ranks = _ranks(raw, p["world_size"], 1)
    if not ranks[0][0]["printed"].strip():
        raise Fail("rank 0 printed nothing: keep the per-epoch log line, on rank 0.")
    for r in range(1, len(ranks)):
        if ranks[r][0]["printed"].strip():
            raise Fail(f"rank {r} printed {ranks[r][0]['printed'].strip().splitlines()[0]!r}: only rank 0 should log.")


def _judge_checkpoint(raw: Any, p: dict, ctx: Judged) -> None:
    ranks = _ranks(raw, p["world_size"], 2)
    if ranks[0][0]["save"] < 1:
        raise Fail("rank 0 never called torch.save: write a checkpoint at the end of every epoch.")
    for r in range(1, len(ranks)):
        if ranks[r][0]["save"] or ranks[r][1]["save"]:
            raise Fail(f"rank {r} called torch.save: only rank 0 writes the checkpoint (then a barrier).")
    for r in range(len(ranks)):
        if ranks[r][1]["load"] < 1:
            raise Fail(f"rank {r} did not torch.load the checkpoint when resuming: every rank loads it.")
    saved = p["configs"][-1]["epochs"]  # one checkpoint per epoch trained, over both runs
    for r in range(len(ranks)):
        barriers = ctx.ops(r).get("barrier", 0)
        if barriers < saved:
            raise Fail(f"rank {r} waited at dist.barrier() {barriers} time(s) for {saved} checkpoints: after rank 0 "
                       "saves, every rank waits at the barrier (so nobody reads a half-written file).")


def _judge_resume(raw: Any, p: dict, ctx: Judged) -> None:
    seed = ctx.seed
    _judge_checkpoint(raw, p, ctx)
    first, second = p["configs"]
    c = _config(seed, **second)
    steps_per_epoch = c["n"] // (p["world_size"] * c["batch_size"] * c["accumulate"])
    want_steps = steps_per_epoch * (second["epochs"] - first["epochs"])
    for r, runs in enumerate(raw):
        if runs[1]["start_epoch"] != first["epochs"]:
            raise Fail(f"rank {r}: start_epoch is {runs[1]['start_epoch']!r} after resuming from a checkpoint "
                       f"written after epoch {first['epochs']}: expected {first['epochs']}.")
        if runs[1]["steps"] != want_steps:
            raise Fail(f"rank {r} took {runs[1]['steps']} optimizer steps when resuming; expected {want_steps} "
                       "(only the epochs that were missing).")
        _check_params(runs[1]["params"], second, p["world_size"], seed,
                      f"rank {r} after resuming (did you restore the optimizer state too?)")


# --------------------------------------------------------------------------- diagnoses (recomputed here)

def _params_match(got: Any, want: dict) -> bool:
    return isinstance(got, dict) and set(got) == set(want) and all(
        isinstance(got[k], np.ndarray) and got[k].shape == want[k].shape and np.allclose(got[k], want[k], rtol=1e-9)
        for k in want)


@SUITE.diagnose("no sampler.set_epoch", "every epoch used the same shuffle: call sampler.set_epoch(epoch) at the start "
                "of each epoch (DistributedSampler's order depends on it).")
def _no_set_epoch(raw: Any, p: dict, ctx: Judged) -> bool:
    c = _config(ctx.seed, **p["configs"][0])
    return c["epochs"] > 1 and _params_match(raw[0][0]["params"], reference(c, p["world_size"], same_order=True))


@SUITE.diagnose("all-reduce on every micro-batch", "no_sync() was never entered: wrap forward and backward of all "
                "but the last micro-batch of each step in `with ddp.no_sync():`.")
def _never_no_sync(raw: Any, p: dict, ctx: Judged) -> bool:
    return _config(ctx.seed, **p["configs"][0])["accumulate"] > 1 and all(runs[0]["no_sync"] == 0 for runs in raw)


@SUITE.diagnose("every rank prints", "a rank other than 0 printed: guard the log line with "
                "`if dist.get_rank() == 0:`.")
def _all_print(raw: Any, p: dict, ctx: Judged) -> bool:
    return any(runs[0]["printed"].strip() for runs in raw[1:])


@SUITE.diagnose("every rank saves", "ranks other than 0 called torch.save: save on rank 0 only, then dist.barrier() "
                "so that nobody loads a half-written file.")
def _all_save(raw: Any, p: dict, ctx: Judged) -> bool:
    return any(run["save"] for runs in raw[1:] for run in runs)


@SUITE.diagnose("optimizer state not restored", "after resuming, the parameters differ although the epochs are "
                "right: save and load the optimizer's state_dict too (momentum lives there).")
def _no_opt_state(raw: Any, p: dict, ctx: Judged) -> bool:
    if len(p["configs"]) < 2:
        return False
    first = p["configs"][0]["epochs"]
    return all(runs[1]["start_epoch"] == first for runs in raw) and not _params_match(
        raw[0][1]["params"], reference(_config(ctx.seed, **p["configs"][1]), p["world_size"]))


SUITE.add("2 ranks: same parameters as one process with the global batch", run, _judge_equivalence,
          params={"world_size": 2, "configs": [{}]}, points=3, timeout=60)
SUITE.add("no_sync accumulation: same result, all-reduce only on the last micro-batch", run, _judge_no_sync,
          params={"world_size": 2, "configs": [{"accumulate": 2}]}, points=2, timeout=60)
SUITE.add("only rank 0 prints", run, _judge_logging, params={"world_size": 2, "configs": [{"epochs": 1}]},
          points=1, timeout=60)
SUITE.add("rank 0 writes the checkpoint, every rank loads it", run, _judge_checkpoint,
          params={"world_size": 2, "configs": [{"epochs": 1, "checkpoint": "ckpt.pt"},
                                               {"epochs": 2, "checkpoint": "ckpt.pt", "resume": True}]},
          points=1, timeout=90)
SUITE.add("resuming continues the run exactly", run, _judge_resume,
          params={"world_size": 2, "configs": [{"epochs": 1, "checkpoint": "ckpt.pt"},
                                               {"epochs": 3, "checkpoint": "ckpt.pt", "resume": True}]},
          points=2, timeout=90)
