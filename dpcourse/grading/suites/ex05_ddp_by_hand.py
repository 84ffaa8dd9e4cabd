"""Exercise 05: ``average_gradients(model)`` and ``class BucketedDDP(nn.Module)``.

Every test uses :class:`dpcourse.models.Quirky` (a frozen layer, a weight shared by two layers, a
layer only some samples use, a layer nobody uses, a buffer). The grader draws each rank's initial
weights and each rank's shard of every batch, and sends them to that rank only: a rank cannot
rebuild rank 0's model or another rank's data, so broadcasting and averaging are the only way to
the right numbers. The batches are drawn so that the rarely used layer is used by rank 0 alone in
the first step, by nobody in the second, and by several ranks later.

Graded by equivalence with one process training on the full batches (computed here, with the same
optimizer: plain SGD, SGD with momentum and weight decay, AdamW), buffers first on every rank; by
``.grad`` staying ``None`` exactly where no rank produced a gradient; and by the operations the
grader's process group carried, step by step: one all-reduce per parameter for ``average_gradients``,
one per bucket, in bucket order, for ``BucketedDDP``, nothing else while training, nothing inside
``no_sync()``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dpcourse.grading.framework import COURSE_REFERENCES, Context, Fail, Judged, Suite
from dpcourse.grading.suites._common import compare_rel, reports, tolerance

SUITE = Suite("05", names=("average_gradients", "BucketedDDP"), title="DDP by hand",
              reference_modules=COURSE_REFERENCES + ("torch.nn.parallel",),
              defaults={"per_rank": True})

_PER_RANK = 3  # samples per rank in every batch
RTOL = tolerance("float64", 2048)  # float64: summation order moves ~1e-15; a float32 step ~1e-8, a missing term more


# --------------------------------------------------------------------------- the model, the data (grader side)

def _names() -> list[str]:
    from dpcourse.models import Quirky

    return [n for n, _ in Quirky().named_parameters()]


def _state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random initial state for Quirky: every parameter and the buffer drawn afresh."""
    from dpcourse.models import Quirky

    m = Quirky()
    out = {}
    for name, t in m.state_dict().items():
        out[name] = (rng.standard_normal(tuple(t.shape)) * (0.4 if t.dim() > 1 else 0.1)).astype("float64")
    out["scale"] = rng.uniform(0.5, 1.5, size=tuple(m.scale.shape)).astype("float64")
    return out


def _data(rng: np.random.Generator, world: int, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Global batches: step 0 only rank 0's first sample uses the rare layer, step 1 nobody, later every rank."""
    batch = world * _PER_RANK
    out = []
    for s in range(steps):
        x = np.clip(rng.standard_normal((batch, 6)), -0.9, 0.9)
        if s % 3 == 0:
            x[0, 0] = 1.5 + rng.uniform()
        elif s % 3 == 2:
            x[::_PER_RANK, 0] = 1.5 + rng.uniform(size=world)
        y = rng.integers(0, 3, size=batch)
        out.append((x, y))
    return out


def _micro(params: dict) -> int:
    return 2 if params.get("accumulate") else 1


def inputs(params: dict, rng: np.random.Generator) -> list[dict]:
    n, steps = params["world_size"], params.get("steps", 1)
    states = [_state(rng) for _ in range(n)]
    if params["kind"] == "average":
        states = [states[0]] * n  # average_gradients: one model, already equal on every rank
    data = _data(rng, n, steps * _micro(params))
    return [{"state": states[r],
             "x": [x[r * _PER_RANK:(r + 1) * _PER_RANK] for x, _ in data],
             "y": [y[r * _PER_RANK:(r + 1) * _PER_RANK] for _, y in data]} for r in range(n)]


def _optimizer(kind: str, params: list) -> Any:
    import torch

    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.2)
    if kind == "momentum":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.05)
    return torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)


def _model(state: dict) -> Any:
    import torch

    from dpcourse.models import Quirky

    m = Quirky().double()
    with torch.no_grad():
        m.load_state_dict({k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in state.items()})
    return m


# --------------------------------------------------------------------------- the ranks

def run_average(learner: Any, params: dict, ctx: Context) -> dict:
    import torch
    from torch import nn

    from dpcourse.grading.relay import mark

    model = _model(ctx.input["state"])
    x, y = torch.as_tensor(ctx.input["x"][0]), torch.as_tensor(ctx.input["y"][0])
    nn.functional.cross_entropy(model(x), y).backward()
    mark("average_gradients")
    learner.average_gradients(model)
    mark("done")
    return {"grads": [p.grad for p in model.parameters()]}


def run_ddp(learner: Any, params: dict, ctx: Context) -> dict:
    import torch
    from torch import nn

    from dpcourse.grading.relay import mark

    model = _model(ctx.input["state"])
    mark("construction")
    bucket = params["bucket_mb"]
    ddp = learner.BucketedDDP(model) if bucket == "default" else learner.BucketedDDP(model, bucket_mb=bucket)
    if getattr(ddp, "module", None) is not model:
        raise AttributeError("BucketedDDP(model).module must be the wrapped model itself.")
    buffers = [b.detach().clone() for b in model.buffers()]
    opt = _optimizer(params["optimizer"], [q for q in model.parameters() if q.requires_grad])
    xs, ys, micro = ctx.input["x"], ctx.input["y"], _micro(params)
    none_after = []
    for step in range(params["steps"]):
        opt.zero_grad(set_to_none=True)
        for m in range(micro):
            x, y = torch.as_tensor(xs[step * micro + m]), torch.as_tensor(ys[step * micro + m])
            last = m == micro - 1
            mark(f"step {step}" if last else f"no_sync {step}")
            if last:
                nn.functional.cross_entropy(ddp(x), y).backward()
                ddp.finish_gradient_synchronization()
            else:
                with ddp.no_sync():
                    nn.functional.cross_entropy(ddp(x), y).backward()
                    ddp.finish_gradient_synchronization()
        none_after.append([q.grad is None for q in model.parameters()])
        mark("optimizer")
        opt.step()
    mark("done")
    return {"buffers": buffers, "params": [q.detach() for q in model.parameters()], "none_after": none_after}


# --------------------------------------------------------------------------- the references (grader side)

def _global(ctx: Judged, index: int) -> tuple[Any, Any]:
    import torch

    x = np.concatenate([np.asarray(i["x"][index]) for i in ctx.inputs])
    y = np.concatenate([np.asarray(i["y"][index]) for i in ctx.inputs])
    return torch.as_tensor(x), torch.as_tensor(y)


def _reference_average(ctx: Judged) -> list[np.ndarray | None]:
    from torch import nn

    model = _model(ctx.inputs[0]["state"])
    nn.functional.cross_entropy(model(*_global(ctx, 0)[:1]), _global(ctx, 0)[1]).backward()
    out = []
    for p in model.parameters():
        if not p.requires_grad:
            out.append(None)
        else:  # an unused parameter takes part with zeros, and so averages to zero
            out.append(np.zeros(tuple(p.shape)) if p.grad is None else p.grad.numpy().copy())
    return out


def _reference_ddp(params: dict, ctx: Judged) -> tuple[list[np.ndarray], list[list[bool]], list[np.ndarray]]:
    from torch import nn

    model = _model(ctx.inputs[0]["state"])
    opt = _optimizer(params["optimizer"], [q for q in model.parameters() if q.requires_grad])
    micro, nones = _micro(params), []
    for step in range(params["steps"]):
        opt.zero_grad(set_to_none=True)
        for m in range(micro):
            x, y = _global(ctx, step * micro + m)
            (nn.functional.cross_entropy(model(x), y)).backward()
        nones.append([q.grad is None for q in model.parameters()])
        opt.step()
    params_out = [q.detach().numpy().copy() for q in model.parameters()]
    buffers = [b.numpy().copy() for b in model.buffers()]
    return params_out, nones, buffers


def buckets(bucket_mb: Any) -> list[list[int]]:
    """The exercise's bucket rule on Quirky: indices (into parameters()) of each bucket, in bucket order."""
    from dpcourse.models import Quirky

    ps = list(Quirky().double().parameters())
    cap = math.inf if bucket_mb is None else (25.0 if bucket_mb == "default" else bucket_mb) * 2**20
    out: list[list[int]] = []
    for i in reversed([i for i, p in enumerate(ps) if p.requires_grad]):
        if out and sum(ps[j].numel() * 8 for j in out[-1]) < cap:
            out[-1].append(i)
        else:
            out.append([i])
    return out


# --------------------------------------------------------------------------- judging

def _phases(stats: dict) -> dict[str, list[list]]:
    """The rank's operations between the marks its worker made."""
    phases: dict[str, list[list]] = {}
    current = "before"
    for entry in (stats or {}).get("sequence") or []:
        if entry and entry[0] == "mark":
            current = str(entry[1])
            phases.setdefault(current, [])
        else:
            phases.setdefault(current, []).append(entry)
    return phases


def _grad_or_none(g: Any) -> Any:
    return None if g is None else g


def judge_average(raw: Any, params: dict, ctx: Judged) -> None:
    n = params["world_size"]
    raw = reports(raw, n)
    wants = _reference_average(ctx)
    names = _names()
    for r, out in enumerate(raw):
        grads = out.get("grads") or []
        if len(grads) != len(wants):
            raise Fail(f"rank {r}: the model has {len(grads)} parameters afterwards, expected {len(wants)}.")
        for i, (got, want) in enumerate(zip(grads, wants)):
            if want is None:
                if got is not None:
                    raise Fail(f"rank {r}: {names[i]} is frozen (requires_grad=False) but has a gradient afterwards: "
                               "skip parameters that do not require gradients.")
                continue
            if got is None:
                raise Fail(f"rank {r}: {names[i]}.grad is None afterwards; every parameter that requires a gradient "
                           "must hold the average (zeros where no rank had a gradient).")
            if isinstance(got, np.ndarray) and got.shape == want.shape and n > 1 and np.abs(want).max() > 0 \
                    and np.allclose(got, n * want, rtol=1e-9):
                raise Fail(f"rank {r}: the gradients are {n}x too large: divide the all-reduced sum by the "
                           "world size.")
            compare_rel(f"rank {r}, gradient of {names[i]}", got, want, RTOL)
    trainable = sum(1 for w in wants if w is not None)
    for r in range(n if n > 1 else 0):
        ops = [e for e in _phases(ctx.stats[r]).get("average_gradients", [])]
        reduces = [e for e in ops if e[0] in ("allreduce", "allreduce_coalesced")]
        others = sorted({e[0] for e in ops if e[0] not in ("allreduce",)})
        if others:
            raise Fail(f"rank {r} called {', '.join(others)}: average_gradients uses one all-reduce per parameter "
                       "and nothing else.")
        if len(reduces) != trainable:
            flat = " (one flat all-reduce of everything)" if len(reduces) == 1 else ""
            raise Fail(f"rank {r} called all-reduce {len(reduces)} time(s){flat}; the task asks for exactly one per "
                       f"parameter that requires a gradient: {trainable} here.")


def judge_ddp(raw: Any, params: dict, ctx: Judged) -> None:
    n, steps = params["world_size"], params["steps"]
    raw = reports(raw, n)
    want_params, want_nones, want_buffers = _reference_ddp(params, ctx)
    names = _names()
    for r, out in enumerate(raw):  # buffers first, on every rank: a buffer never broadcast is named as such
        for b, (g, w) in enumerate(zip(out.get("buffers") or [], want_buffers)):
            compare_rel(f"rank {r}, buffer {b} right after construction (must be rank 0's: broadcast buffers too)",
                        g, w, 0.0, exact=True)
    _judge_counts(params, ctx)  # before the numbers: buckets out of order mix gradients up, and this says how
    for r, out in enumerate(raw):
        nones = out.get("none_after") or []
        for step, (got, want) in enumerate(zip(nones, want_nones)):
            for i, (g, w) in enumerate(zip(got, want)):
                if w and not g:
                    raise Fail(f"rank {r}, step {step}: {names[i]}.grad is a tensor, but no rank used {names[i]} in "
                               "this step: its .grad must stay None (with momentum or weight decay a zero gradient "
                               "still moves it).")
                if g and not w:
                    raise Fail(f"rank {r}, step {step}: {names[i]}.grad is None, but some rank produced a gradient "
                               "for it: write the averaged gradient into .grad.")
        got = out.get("params") or []
        if len(got) != len(want_params):
            raise Fail(f"rank {r}: the model has {len(got)} parameters, expected {len(want_params)}.")
        for i, (g, w) in enumerate(zip(got, want_params)):
            compare_rel(f"rank {r}, {names[i]} after {steps} steps of {params['optimizer']} "
                        "(vs. one process on the full batches)", g, w, RTOL)


def _judge_counts(params: dict, ctx: Judged) -> None:
    n = params["world_size"]
    if n == 1:
        return
    expected = buckets(params["bucket_mb"])
    ps = [p.numel() for p in __import__("dpcourse.models", fromlist=["Quirky"]).Quirky().parameters()]
    for r in range(n):
        phases = _phases(ctx.stats[r])
        for label, ops in phases.items():
            if label.startswith("no_sync") and ops:
                raise Fail(f"rank {r}: {len(ops)} operation(s) ({ops[0][0]} first) inside no_sync(): nothing may be "
                           "communicated there; the gradients accumulate locally.")
            if label.startswith("step"):
                other = sorted({e[0] for e in ops if e[0] != "allreduce"})
                if other:
                    raise Fail(f"rank {r}, {label}: called {', '.join(other)} while training; only the buckets' "
                               "all-reduces may travel.")
                if len(ops) != len(expected):
                    raise Fail(f"rank {r}, {label}: {len(ops)} all-reduce(s); expected {len(expected)}, one per bucket "
                               f"(bucket_mb={params['bucket_mb']}).")
                for j, (entry, bucket) in enumerate(zip(ops, expected)):
                    numel = sum(ps[i] for i in bucket)
                    if not numel <= entry[1] <= numel + len(bucket):
                        raise Fail(f"rank {r}, {label}: all-reduce {j} carried {entry[1]} values; bucket {j} holds "
                                   f"{numel} (its parameters, reverse order of module.parameters()): buckets are "
                                   "started strictly in bucket order.")
        total = sum(1 for e in (ctx.stats[r] or {}).get("sequence") or [] if e and e[0] == "allreduce")
        if total != params["steps"] * len(expected):  # whatever the marks say: the harness counted every call
            raise Fail(f"rank {r}: {total} all-reduces in {params['steps']} steps; expected {len(expected)} per step "
                       f"(one per bucket, bucket_mb={params['bucket_mb']}) and none elsewhere.")


# --------------------------------------------------------------------------- diagnoses

def _log(ctx: Judged, text: str) -> bool:
    return any(text in line for line in ctx.log)


@SUITE.diagnose("skips parameters whose .grad is None", "the ranks called different all-reduces when some rank had no "
                "gradient for a parameter: give such a parameter a zero gradient (torch.zeros_like) and all-reduce "
                "it anyway, so every rank calls the same collectives in the same order.")
def _skips_none(raw: Any, params: dict, ctx: Judged) -> bool:
    return params["kind"] == "average" and _log(ctx, "called different collectives")


@SUITE.diagnose("wrong bucket order", "the ranks started their buckets in different orders (or in a different order "
                "from the one the task gives): start bucket i+1 only after bucket i, each in reverse "
                "module.parameters() order.")
def _order(raw: Any, params: dict, ctx: Judged) -> bool:
    return params["kind"] == "ddp" and _log(ctx, "called different collectives")


@SUITE.diagnose("sum instead of average", "every gradient is world-size times the average: divide the all-reduced "
                "sum by dist.get_world_size().")
def _summed(raw: Any, params: dict, ctx: Judged) -> bool:
    n = params["world_size"]
    if params["kind"] != "average" or n < 2:
        return False
    wants = _reference_average(ctx)
    got = raw[0]["grads"]
    pairs = [(g, w) for g, w in zip(got, wants) if w is not None and g is not None and np.abs(w).max() > 0]
    return bool(pairs) and all(np.allclose(g, n * w, rtol=1e-9) for g, w in pairs)


@SUITE.diagnose("no broadcast at start", "the ranks' buffers (or parameters) differ from rank 0's right after "
                "construction: broadcast every parameter and buffer from rank 0 in __init__.")
def _no_broadcast(raw: Any, params: dict, ctx: Judged) -> bool:
    if params["kind"] != "ddp" or params["world_size"] < 2:
        return False
    ref = np.asarray(ctx.inputs[0]["state"]["scale"])
    return any(not np.array_equal(out.get("buffers")[0], ref) for out in raw[1:])


@SUITE.diagnose("sync inside no_sync", "operations reached the process group inside no_sync(): in no_sync the hooks "
                "and finish_gradient_synchronization() must do nothing.")
def _syncs(raw: Any, params: dict, ctx: Judged) -> bool:
    return any(ops for s in ctx.stats for label, ops in _phases(s).items() if label.startswith("no_sync"))


@SUITE.diagnose("zeroed unused gradient", "a parameter no rank used got a zero .grad: when every rank's flag says "
                "'no gradient', leave .grad as None (the optimizer then skips it).")
def _zeroed(raw: Any, params: dict, ctx: Judged) -> bool:
    if params["kind"] != "ddp":
        return False
    _, want_nones, _ = _reference_ddp(params, ctx)
    return any(w and not g for out in raw for got, want in zip(out.get("none_after") or [], want_nones)
               for g, w in zip(got, want))


@SUITE.diagnose("all-reduces frozen parameters", "a parameter with requires_grad=False has no gradient to reduce "
                "(dist.all_reduce(None) fails): skip parameters that do not require gradients.")
def _frozen(raw: Any, params: dict, ctx: Judged) -> bool:
    return params["kind"] == "average" and "NoneType" in ctx.error and raw is None


@SUITE.diagnose("one flat all-reduce", "average_gradients is the simple version: one dist.all_reduce per parameter "
                "(packing everything into one tensor is what buckets do).")
def _flat(raw: Any, params: dict, ctx: Judged) -> bool:
    return params["kind"] == "average" and params["world_size"] > 1 and all(
        len([e for e in _phases(s).get("average_gradients", []) if e[0] == "allreduce"]) == 1 for s in ctx.stats)


# --------------------------------------------------------------------------- the tests

def average(name: str, n: int, visible: bool = True) -> dict:
    return dict(name=name, run=run_average, judge=judge_average, visible=visible, inputs=inputs,
                params={"world_size": n, "kind": "average"})


def ddp(name: str, n: int, visible: bool = True, *, bucket_mb: Any = None, steps: int = 3, optimizer: str = "sgd",
        accumulate: bool = False) -> dict:
    return dict(name=name, run=run_ddp, judge=judge_ddp, visible=visible, inputs=inputs,
                params={"world_size": n, "kind": "ddp", "bucket_mb": bucket_mb, "steps": steps,
                        "optimizer": optimizer, "accumulate": accumulate})


def _add(spec: dict) -> None:
    spec = dict(spec)
    SUITE.add(spec.pop("name"), spec.pop("run"), spec.pop("judge"), **spec)


_add(average("average_gradients: 2 ranks, a layer only rank 0 uses, one all-reduce per parameter", 2))
_add(ddp("BucketedDDP: 2 ranks, one bucket (an unused parameter inside it), plain SGD", 2, bucket_mb=None))
_add(ddp("BucketedDDP: one bucket per parameter, in bucket order, SGD with momentum and weight decay", 2,
         bucket_mb=1e-9, optimizer="momentum"))
_add(ddp("BucketedDDP: no_sync accumulates without communicating", 2, bucket_mb=0.0005, accumulate=True, steps=3))
