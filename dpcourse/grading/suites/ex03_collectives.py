"""Exercise 03: ``broadcast_by_hand(tensor, src=0)`` and ``all_gather_by_hand(tensor)`` from send/recv.

Each rank's tensor is drawn in the grader and sent to that rank only; the ranks' process group
carries send/recv (and barrier) and nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpcourse.grading.framework import POINT_TO_POINT, Context, Fail, Judged, Suite
from dpcourse.grading.suites._common import compare_rel, normal_inputs, reports

SUITE = Suite("03", names=("broadcast_by_hand", "all_gather_by_hand"), title="collectives by hand",
              defaults={"per_rank": True, "allowed": POINT_TO_POINT, "allowed_what": "send/recv",
                        "inputs": normal_inputs})


def run_broadcast(learner: Any, p: dict, ctx: Context) -> dict:
    import torch

    t = torch.from_numpy(np.array(ctx.input, copy=True))
    ret = learner.broadcast_by_hand(t) if p["src"] is None else learner.broadcast_by_hand(t, src=p["src"])
    return {"tensor": t, "returned_same": ret is t}


def run_gather(learner: Any, p: dict, ctx: Context) -> dict:
    import torch

    t = torch.from_numpy(np.array(ctx.input, copy=True))
    out = learner.all_gather_by_hand(t)
    ok_type = isinstance(out, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in out)
    aliases = [o.data_ptr() == t.data_ptr() for o in out] if ok_type else []
    return {"list": list(out) if ok_type else None, "type": type(out).__name__, "input": t, "aliases": aliases}


def run_bad_src(learner: Any, p: dict, ctx: Context) -> dict:
    """What broadcast_by_hand raised for each src that is not a rank: [type name, is a ValueError, message]."""
    import torch

    out = {}
    for bad in (ctx.world_size, -1):
        try:
            learner.broadcast_by_hand(torch.zeros(3), src=bad)
            out[str(bad)] = None
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001  which exception is exactly what is graded
            out[str(bad)] = [type(exc).__name__, isinstance(exc, ValueError), str(exc)[:200]]
    return out


def judge_bad_src(raw: Any, p: dict, ctx: Judged) -> None:
    n = p["world_size"]
    for r, out in enumerate(reports(raw, n)):
        for bad in (n, -1):
            got = out.get(str(bad))
            if got is None:
                raise Fail(f"rank {r}: broadcast_by_hand(tensor, src={bad}) with {n} ranks raised nothing: raise "
                           f"ValueError saying that src must be a rank from 0 to {n - 1}.")
            if not got[1]:
                raise Fail(f"rank {r}: src={bad} raised {got[0]}, expected ValueError.")
            if not str(got[2]).strip():
                raise Fail(f"rank {r}: src={bad}: the ValueError has no message; say which values are allowed.")


def judge_broadcast(raw: Any, p: dict, ctx: Judged) -> None:
    n, src = p["world_size"], p["src"] or 0
    raw = reports(raw, n)
    want = ctx.inputs[src]
    for r, out in enumerate(raw):
        got = out.get("tensor")
        if isinstance(got, np.ndarray) and got.shape == want.shape and src and r != src \
                and np.array_equal(got, ctx.inputs[0]) and not np.array_equal(want, ctx.inputs[0]):
            raise Fail(f"rank {r} holds rank 0's tensor, but src was {src}: send from `src`, not from rank 0.")
        compare_rel(f"rank {r}", got, want, 0.0, exact=True)
        if not out.get("returned_same"):
            raise Fail(f"rank {r}: return the tensor you were given, filled in place.")


def judge_gather(raw: Any, p: dict, ctx: Judged) -> None:
    n = p["world_size"]
    raw = reports(raw, n)
    wants = ctx.inputs
    for r, out in enumerate(raw):
        got = out.get("list")
        if got is None:
            raise Fail(f"rank {r} returned a {out.get('type')}; return a list of tensors, one per rank.")
        if len(got) != n:
            raise Fail(f"rank {r} returned {len(got)} tensors; expected {n}, one per rank.")
        for src, (g, w) in enumerate(zip(got, wants)):
            if isinstance(g, np.ndarray) and g.shape == w.shape and not np.array_equal(g, w):
                owner = [k for k, ww in enumerate(wants) if np.array_equal(g, ww)]
                if owner:
                    raise Fail(f"rank {r}: item {src} holds rank {owner[0]}'s tensor: put rank k's tensor at "
                               "index k.")
            compare_rel(f"rank {r}, item {src}", g, w, 0.0, exact=True)
        compare_rel(f"rank {r}'s input (must not change)", out.get("input"), wants[r], 0.0, exact=True)
        if n > 1 and any(a for i, a in enumerate(out.get("aliases") or []) if i != r):
            raise Fail(f"rank {r}: an item of the list is the input tensor itself; each item must be a tensor of "
                       "its own.")


# --------------------------------------------------------------------------- diagnoses

def _lists(raw: Any) -> list | None:
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        return None
    return raw


@SUITE.diagnose("broadcast ignores src", "the ranks ended with rank 0's tensor although src was another rank: "
                "the sender is `src`, and every other rank (rank 0 included) receives from it.")
def _ignores_src(raw: Any, p: dict, ctx: Judged) -> bool:
    src = p.get("src") or 0
    raw = _lists(raw)
    return bool(raw and src and "tensor" in raw[0] and all(
        isinstance(o.get("tensor"), np.ndarray) and np.array_equal(o["tensor"], ctx.inputs[0])
        for r, o in enumerate(raw) if r != src))


@SUITE.diagnose("items in the wrong order", "item k of the list holds another rank's tensor: put what came from "
                "rank k at index k (receive from rank k into list[k]), your own at index rank.")
def _order(raw: Any, p: dict, ctx: Judged) -> bool:
    raw = _lists(raw)
    if not raw or "list" not in raw[0]:
        return False
    for o in raw:
        for k, g in enumerate(o.get("list") or []):
            owners = [j for j, w in enumerate(ctx.inputs) if isinstance(g, np.ndarray) and g.shape == w.shape
                      and np.array_equal(g, w)]
            if owners and k not in owners:
                return True
    return False


@SUITE.diagnose("received into the input", "a rank's own tensor changed: receive into fresh tensors "
                "(torch.empty_like(tensor)), never into the tensor you were given.")
def _clobbered(raw: Any, p: dict, ctx: Judged) -> bool:
    raw = _lists(raw)
    return bool(raw and "input" in raw[0] and any(
        isinstance(o.get("input"), np.ndarray) and not np.array_equal(o["input"], ctx.inputs[r])
        for r, o in enumerate(raw)))


# --------------------------------------------------------------------------- the tests

def _bcast(name: str, n: int, shape: tuple[int, ...], dtype: str, src: int | None, visible: bool = True) -> None:
    SUITE.add(name, run_broadcast, judge_broadcast,
              params={"world_size": n, "shape": list(shape), "dtype": dtype, "src": src}, visible=visible)


def _gather(name: str, n: int, shape: tuple[int, ...], dtype: str, visible: bool = True) -> None:
    SUITE.add(name, run_gather, judge_gather, params={"world_size": n, "shape": list(shape), "dtype": dtype},
              visible=visible)


_bcast("broadcast: 2 ranks from rank 0 (default src)", 2, (6,), "float32", None)
_bcast("broadcast: 3 ranks from rank 2", 3, (5,), "float64", 2)
SUITE.add("broadcast: a src that is not a rank raises ValueError", run_bad_src, judge_bad_src,
          params={"world_size": 2}, inputs=None)
_gather("all_gather: 2 ranks", 2, (4,), "float32")
_gather("all_gather: 3 ranks", 3, (5,), "float64")
