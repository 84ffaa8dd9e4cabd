"""Exercise 04: ``ring_all_reduce(tensor) -> tensor``, an in-place sum over the default group, send/recv only.

Each rank's tensor is drawn in the grader and sent to that rank alone, so the sum can only be had by
communicating. The ranks' process group carries send/recv (and barrier) only and counts the bytes
each rank sends: a ring sends at most ``2(N-1)`` chunks of ``ceil(numel/N)`` elements.
"""

from __future__ import annotations

import functools
from itertools import combinations
from typing import Any, Callable

import numpy as np

from dpcourse.grading.framework import COURSE_REFERENCES, POINT_TO_POINT, Context, Fail, Judged, Suite
from dpcourse.grading.suites._common import chunks, compare_rel, normal_inputs, reports, tolerance

SUITE = Suite("04", names=("ring_all_reduce",), title="ring all-reduce",
              reference_modules=COURSE_REFERENCES,
              defaults={"per_rank": True, "allowed": POINT_TO_POINT, "allowed_what": "send/recv",
                        "inputs": normal_inputs})


def run(learner: Any, params: dict, ctx: Context) -> dict:
    import torch

    t = torch.from_numpy(np.array(ctx.input, copy=True))
    ret = learner.ring_all_reduce(t)
    same = ret is t
    return {"tensor": t, "returned_same": same, "returned": None if same or ret is None else ret}


def _want(params: dict, ctx: Judged) -> tuple[np.ndarray, np.ndarray]:
    """The sum (computed here in float64, then rounded once) and the scale its rounding errors are relative to."""
    inputs = [np.asarray(x, dtype=np.float64) for x in ctx.inputs]
    return sum(inputs).astype(params["dtype"]), sum(np.abs(x) for x in inputs)


def ring_bytes(numel: int, world: int, itemsize: int) -> int:
    """The most a ring all-reduce's rank sends: 2(N-1) steps of one chunk of at most ceil(numel/N) elements."""
    return 2 * (world - 1) * -(-numel // world) * itemsize


def judge(raw: Any, params: dict, ctx: Judged) -> None:
    n, dtype = params["world_size"], params["dtype"]
    raw = reports(raw, n)
    want, scale = _want(params, ctx)
    rtol = tolerance(dtype, n)
    for r, out in enumerate(raw):
        try:
            compare_rel(f"rank {r}", out.get("tensor"), want, rtol, scale)
        except Fail:
            returned = out.get("returned")
            if isinstance(returned, np.ndarray) and returned.shape == want.shape and \
                    np.allclose(returned, want, rtol=rtol, atol=rtol * float(scale.max(initial=1))):
                raise Fail(f"rank {r}: the returned tensor holds the sum but the input was not changed: "
                           "write the result into `tensor` in place (e.g. tensor.copy_(...)).") from None
            raise
        if not out.get("returned_same"):
            raise Fail(f"rank {r}: return the tensor you were given (after summing into it in place).")
    numel, itemsize = want.size, want.itemsize
    bound = ring_bytes(numel, n, itemsize)
    for r in range(n):
        sent = ctx.bytes_sent(r)
        if n > 1 and sent > bound:
            raise Fail(f"rank {r} sent {sent:,} bytes; a ring all-reduce of {numel} {dtype} values on {n} ranks sends "
                       f"at most 2(N-1) chunks of ceil(numel/N) elements = {bound:,} bytes "
                       f"({sent / max(1, numel * itemsize):.2f}x the tensor instead of at most "
                       f"{bound / max(1, numel * itemsize):.2f}x): pass one chunk per step, not the whole tensor.")


# --------------------------------------------------------------------------- diagnoses (from the outputs)

def _tensors(raw: Any) -> list[np.ndarray] | None:
    if not isinstance(raw, list):
        return None
    got = [r.get("tensor") if isinstance(r, dict) else None for r in raw]
    return got if all(isinstance(g, np.ndarray) for g in got) else None


def _close(a: np.ndarray, b: np.ndarray, dtype: str, n: int) -> bool:
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    return a.shape == b.shape and bool(np.all(np.abs(a.astype(np.float64) - b) <= tolerance(dtype, n) * 4 * scale))


def _per_chunk(raw: Any, params: dict, ctx: Judged):
    """``(outputs, inputs, sum, layouts)`` as flat float64 arrays, each layout the non-empty ``(start, stop)``
    chunks of one way to split the tensor; None when the outputs can't be read per chunk."""
    got = _tensors(raw)
    n = params["world_size"]
    if got is None or n < 2 or len(ctx.inputs) != n:
        return None
    inputs = [np.asarray(x, dtype=np.float64).reshape(-1) for x in ctx.inputs]
    layouts = [[(a, b) for a, b in bounds if b > a] for bounds in chunks(inputs[0].size, n)]
    return [g.reshape(-1) for g in got], inputs, sum(inputs), layouts


def _chunkwise(check: Callable[..., bool]) -> Callable[[Any, dict, Judged], bool]:
    """A diagnosis that reads the outputs chunk by chunk: ``check(outputs, inputs, sum, layouts, dtype)``;
    it does not apply when the outputs can't be read that way."""
    @functools.wraps(check)
    def diagnosis(raw: Any, params: dict, ctx: Judged) -> bool:
        found = _per_chunk(raw, params, ctx)
        return bool(found) and check(*found, params["dtype"])
    return diagnosis


@SUITE.diagnose("missing all-gather", "each rank holds the full sum in exactly one chunk: after the "
                "reduce-scatter phase, pass the finished chunks around the ring N-1 more times (copying, not adding).")
@_chunkwise
def _no_allgather(got: list, inputs: list, total: np.ndarray, layouts: list, dtype: str) -> bool:
    for real in layouts:
        full = [[_close(g[a:b], total[a:b], dtype, len(got)) for a, b in real] for g in got]
        if len(real) == len(got) and all(sum(f) == 1 for f in full) and len({f.index(True) for f in full}) == len(got):
            return True
    return False


@SUITE.diagnose("missing reduce-scatter", "every chunk holds one rank's own values, never a sum: first add the "
                "incoming chunk into yours for N-1 steps (reduce-scatter), then pass the sums around (all-gather); "
                "if you have both phases, the all-gather passes chunks the reduce-scatter never added into.")
@_chunkwise
def _no_reduce(got: list, inputs: list, total: np.ndarray, layouts: list, dtype: str) -> bool:
    for real in layouts:
        owners = [[[k for k, x in enumerate(inputs) if _close(g[a:b], x[a:b], dtype, 1)] for a, b in real]
                  for g in got]
        copied = all(o and not _close(g[a:b], total[a:b], dtype, len(got))
                     for g, os_ in zip(got, owners) for o, (a, b) in zip(os_, real))
        moved = any(r not in o for r, os_ in enumerate(owners) for o in os_)  # something did travel
        if copied and moved:
            return True
    return False


@SUITE.diagnose("sum vs average", "every value is the sum divided by the world size: this exercise returns the "
                "sum (averaging is for gradients, in lesson 05): drop the division.")
@_chunkwise
def _averaged(got: list, inputs: list, total: np.ndarray, layouts: list, dtype: str) -> bool:
    return all(_close(g, total / len(got), dtype, len(got)) for g in got)


@SUITE.diagnose("off-by-one chunk index", "the chunks hold sums of the right numbers in the wrong places (partial "
                "sums, or another chunk's sum): at step s, rank r sends chunk (r - s) mod N and adds into chunk "
                "(r - s - 1) mod N in the reduce-scatter, then passes chunk (r + 1 - s) mod N in the all-gather; "
                "check every step's indices.")
def _off_by_one(raw: Any, params: dict, ctx: Judged) -> bool:
    found = _per_chunk(raw, params, ctx)
    if not found or _no_allgather(raw, params, ctx) or _no_reduce(raw, params, ctx) or _averaged(raw, params, ctx):
        return False
    got, inputs, total, layouts = found
    n, dtype = len(got), params["dtype"]
    subsets = [ks for size in range(1, n + 1) for ks in combinations(range(n), size)]
    for real in layouts:
        wrong, explained = 0, True
        for g in got:
            for a, b in real:
                if _close(g[a:b], total[a:b], dtype, n):
                    continue
                wrong += 1
                explained &= any(_close(g[a:b], sum(inputs[k][c:d] for k in ks), dtype, n)
                                 for c, d in real if d - c == b - a for ks in subsets)
        if wrong and explained:
            return True
    return False


@SUITE.diagnose("not in place", "the returned tensor holds the sum but the tensor you were given did not change: "
                "write into it (chunks that are views of tensor.view(-1), or tensor.copy_(result)) and return it.")
def _not_in_place(raw: Any, params: dict, ctx: Judged) -> bool:
    if not isinstance(raw, list) or len(ctx.inputs) != len(raw):
        return False
    total = sum(np.asarray(x, dtype=np.float64) for x in ctx.inputs)
    return any(isinstance(r, dict) and isinstance(r.get("returned"), np.ndarray) and
               _close(r["returned"].reshape(total.shape), total, params["dtype"], len(raw)) and
               isinstance(r.get("tensor"), np.ndarray) and np.array_equal(r["tensor"], x)
               for r, x in zip(raw, ctx.inputs))


@SUITE.diagnose("chunk bounds differ between ranks", "a rank received a chunk of a different size than the one it "
                "expected: every rank must cut the tensor at the same bounds (base + 1 for the first numel % N).")
def _sizes_differ(raw: Any, params: dict, ctx: Judged) -> bool:
    return any("posted a receive for" in line for line in ctx.log)


# --------------------------------------------------------------------------- the tests

def _add(name: str, world_size: int, shape: tuple[int, ...], dtype: str, visible: bool = True,
         points: float = 1.0, hint: str = "") -> None:
    SUITE.add(name, run, judge, params={"world_size": world_size, "shape": list(shape), "dtype": dtype},
              visible=visible, points=points, hint=hint)


_add("2 ranks, 12 float32 values", 2, (12,), "float32")
_add("3 ranks, 10 values (not divisible by 3)", 3, (10,), "float64")
_add("4 ranks, 3 values (fewer than ranks)", 4, (3,), "float32")
_add("1 rank: the tensor is its own sum", 1, (5,), "float64")
_add("4 ranks, 64 float64 values: at most a ring's bytes", 4, (64,), "float64")
