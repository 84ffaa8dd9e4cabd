"""Exercise 03: ``broadcast_by_hand(tensor, src=0)`` and ``all_gather_by_hand(tensor)`` from send/recv."""

from __future__ import annotations

from typing import Any

import numpy as np

from dpcourse.grading.framework import Context, Fail, Suite, calls, forbid_collectives, reset_calls
from dpcourse.grading.suites._common import compare, rank_array

SUITE = Suite("03", names=("broadcast_by_hand", "all_gather_by_hand"), title="collectives by hand")


def _broadcast_worker(fn: Any, seed: int, shape: tuple[int, ...], dtype: str, src: int | None) -> dict:
    import torch
    import torch.distributed as dist

    reset_calls()
    t = torch.from_numpy(rank_array(seed, dist.get_rank(), shape, dtype))
    ret = fn(t) if src is None else fn(t, src=src)
    return {"tensor": t, "returned_same": ret is t, "calls": calls()}


def _gather_worker(fn: Any, seed: int, shape: tuple[int, ...], dtype: str) -> dict:
    import torch
    import torch.distributed as dist

    reset_calls()
    t = torch.from_numpy(rank_array(seed, dist.get_rank(), shape, dtype))
    out = fn(t)
    ok_type = isinstance(out, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in out)
    return {"list": list(out) if ok_type else None, "type": type(out).__name__, "input": t, "calls": calls()}


def _run_broadcast(learner: Any, p: dict, ctx: Context) -> list[dict]:
    return ctx.launch(_broadcast_worker, p["world_size"], learner.broadcast_by_hand, ctx.seed, tuple(p["shape"]),
                      p["dtype"], p["src"])


def _run_gather(learner: Any, p: dict, ctx: Context) -> list[dict]:
    return ctx.launch(_gather_worker, p["world_size"], learner.all_gather_by_hand, ctx.seed, tuple(p["shape"]),
                      p["dtype"])


def _check_reports(raw: Any, n: int) -> None:
    if not isinstance(raw, list) or len(raw) != n or not all(isinstance(r, dict) for r in raw):
        raise Fail("the workers did not report back.")
    forbid_collectives([r.get("calls") for r in raw])


def _judge_broadcast(raw: Any, p: dict, seed: int) -> None:
    n, shape, dtype, src = p["world_size"], tuple(p["shape"]), p["dtype"], p["src"]
    _check_reports(raw, n)
    want = rank_array(seed, src or 0, shape, dtype)
    for r, out in enumerate(raw):
        got = out.get("tensor")
        if isinstance(got, np.ndarray) and got.shape == want.shape and src and r != src \
                and np.array_equal(got, rank_array(seed, 0, shape, dtype)):
            raise Fail(f"rank {r} holds rank 0's tensor, but src was {src}: send from `src`, not from rank 0.")
        compare(f"rank {r}", got, want, 0.0, 0.0)
        if not out.get("returned_same"):
            raise Fail(f"rank {r}: return the tensor you were given, filled in place.")


def _judge_gather(raw: Any, p: dict, seed: int) -> None:
    n, shape, dtype = p["world_size"], tuple(p["shape"]), p["dtype"]
    _check_reports(raw, n)
    wants = [rank_array(seed, r, shape, dtype) for r in range(n)]
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
            compare(f"rank {r}, item {src}", g, w, 0.0, 0.0)
        compare(f"rank {r}'s input (must not change)", out.get("input"), wants[r], 0.0, 0.0)


def _bcast(name: str, n: int, shape: tuple[int, ...], dtype: str, src: int | None, visible: bool, hint: str) -> None:
    SUITE.add(name, _run_broadcast, _judge_broadcast,
              params={"world_size": n, "shape": list(shape), "dtype": dtype, "src": src}, visible=visible, hint=hint)


def _gather(name: str, n: int, shape: tuple[int, ...], dtype: str, visible: bool, hint: str) -> None:
    SUITE.add(name, _run_gather, _judge_gather, params={"world_size": n, "shape": list(shape), "dtype": dtype},
              visible=visible, hint=hint)


_bcast("broadcast: 2 ranks from rank 0 (default src)", 2, (6,), "float32", None, True,
       "the source sends its tensor to every other rank; every other rank receives into its tensor.")
_bcast("broadcast: 3 ranks from rank 2", 3, (5,), "float64", 2, True,
       "use `src` for the sender, and skip it in the list of receivers.")
_bcast("broadcast: 4 ranks, 2x3 matrix from rank 1", 4, (2, 3), "float64", 1, False,
       "recv writes into the tensor you pass it: receive straight into `tensor`.")
_bcast("broadcast: 1 rank", 1, (3,), "float32", 0, False, "with one rank there is nobody to send to.")
_gather("all_gather: 2 ranks", 2, (4,), "float32", True,
        "every rank needs every other rank's tensor: pair each send with a recv posted by the peer.")
_gather("all_gather: 3 ranks", 3, (5,), "float64", True,
        "with three or more ranks, blocking send/recv in the same order everywhere can deadlock: use isend/irecv "
        "or order the pairs.")
_gather("all_gather: 4 ranks, 2x2 matrices", 4, (2, 2), "float32", False,
        "receive into fresh tensors (torch.empty_like) and keep the input unchanged.")
_gather("all_gather: 1 rank", 1, (3,), "float64", False, "with one rank the list holds a copy of the tensor itself.")
