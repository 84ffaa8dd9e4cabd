"""Exercise 04: ``ring_all_reduce(tensor) -> tensor``, an in-place sum over the default group, send/recv only."""

from __future__ import annotations

from typing import Any

import numpy as np

from dpcourse.grading.framework import Context, Fail, Suite, calls, forbid_collectives, reset_calls
from dpcourse.grading.suites._common import compare, rank_array

SUITE = Suite("04", names=("ring_all_reduce",), title="ring all-reduce")


def _worker(fn: Any, seed: int, shape: tuple[int, ...], dtype: str) -> dict:
    import torch
    import torch.distributed as dist

    reset_calls()
    t = torch.from_numpy(rank_array(seed, dist.get_rank(), shape, dtype))
    ret = fn(t)
    same = ret is t
    return {"tensor": t, "returned_same": same, "returned": None if same or ret is None else ret, "calls": calls()}


def _run(learner: Any, params: dict, ctx: Context) -> list[dict]:
    return ctx.launch(_worker, params["world_size"], learner.ring_all_reduce, ctx.seed,
                      tuple(params["shape"]), params["dtype"])


def _judge(raw: Any, params: dict, seed: int) -> None:
    n, shape, dtype = params["world_size"], tuple(params["shape"]), params["dtype"]
    if not isinstance(raw, list) or len(raw) != n or not all(isinstance(r, dict) for r in raw):
        raise Fail("the workers did not report back (internal result missing).")
    forbid_collectives([r.get("calls") for r in raw])
    want = sum(rank_array(seed, r, shape, "float64") for r in range(n)).astype(dtype)
    rtol, atol = (1e-5, 1e-5 * n) if dtype == "float32" else (1e-12, 1e-12 * n)
    for r, out in enumerate(raw):
        try:
            compare(f"rank {r}", out.get("tensor"), want, rtol, atol)
        except Fail as fail:
            returned = out.get("returned")
            if isinstance(returned, np.ndarray) and returned.shape == want.shape and np.allclose(returned, want, rtol, atol):
                raise Fail(f"rank {r}: the returned tensor holds the sum but the input was not changed: "
                           "write the result into `tensor` in place (e.g. tensor.copy_(...)).") from None
            raise fail
        if not out.get("returned_same"):
            raise Fail(f"rank {r}: return the tensor you were given (after summing into it in place).")


def _add(name: str, world_size: int, shape: tuple[int, ...], dtype: str, visible: bool, hint: str,
         points: float = 1.0) -> None:
    SUITE.add(name, _run, _judge, params={"world_size": world_size, "shape": list(shape), "dtype": dtype},
              visible=visible, hint=hint, points=points)


_add("2 ranks, 12 float32 values", 2, (12,), "float32", True,
     "each rank must end with the element-wise sum of every rank's tensor.")
_add("3 ranks, 10 values (not divisible by 3)", 3, (10,), "float64", True,
     "when numel is not a multiple of the world size, chunks differ in size: make the chunk bounds cover every "
     "element exactly once.")
_add("4 ranks, 3 values (fewer than ranks)", 4, (3,), "float32", True,
     "some chunks are empty when there are fewer elements than ranks: sending and receiving an empty chunk must "
     "still work (or be skipped on both sides).")
_add("1 rank: the tensor is its own sum", 1, (5,), "float64", True,
     "with world size 1 there is nobody to talk to: return the tensor unchanged.")
_add("3 ranks, a 3x5 matrix", 3, (3, 5), "float64", False,
     "work on a flat view of the tensor (tensor.view(-1)) and keep its shape.")
_add("4 ranks, 1001 float32 values", 4, (1001,), "float32", False,
     "check the ring's send and receive chunk indices at every step.")
_add("2 ranks, 7 float64 values", 2, (7,), "float64", False,
     "odd sizes: chunk bounds must cover every element exactly once.")
