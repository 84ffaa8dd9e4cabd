"""Helpers shared by the suites: inputs drawn in the grader, comparisons that report relative errors.

Tolerances scale with the dtype's machine epsilon and the size of the values summed, so an honest
float32 sum of four ranks passes on every draw, while a float64 result that went through float32
anywhere (relative error ~1e-8, far above 1e-13) fails on every draw.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpcourse.grading.framework import Fail

__all__ = ["normal_inputs", "compare", "compare_rel", "first_bad", "tolerance", "rel_error", "chunks", "reports",
           "rank_array"]


def rank_array(seed: int, rank: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Rank ``rank``'s input for seed ``seed`` (older suites; new ones draw inputs in the grader)."""
    return np.random.default_rng([seed, rank]).standard_normal(shape).astype(dtype)


def _same_kind(what: str, got: object, want: np.ndarray) -> None:
    """Raise :class:`Fail` unless ``got`` is an array of ``want``'s shape and dtype."""
    if not isinstance(got, np.ndarray):
        raise Fail(f"{what}: expected a tensor, got {'nothing' if got is None else type(got).__name__}.")
    if got.shape != want.shape:
        raise Fail(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}.")
    if got.dtype != want.dtype:
        raise Fail(f"{what}: dtype {got.dtype}, expected {want.dtype} (keep the input's dtype).")


def compare(what: str, got: object, want: np.ndarray, rtol: float, atol: float) -> None:
    """Raise :class:`Fail` unless ``got`` is an array of ``want``'s shape and dtype within ``rtol``/``atol``."""
    _same_kind(what, got, want)
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        raise Fail(f"{what}: {first_bad(got, want, rtol)}.")


def normal_inputs(params: dict, rng: np.random.Generator) -> list[np.ndarray]:
    """One tensor of ``params['shape']`` and ``params['dtype']`` per rank: standard normal values, or for an
    integer dtype whole numbers from a range wide enough that two ranks' tensors never coincide."""
    shape, dtype = tuple(params["shape"]), np.dtype(params["dtype"])
    if dtype.kind in "iu":
        return [rng.integers(0 if dtype.kind == "u" else -10_000, 10_000, size=shape).astype(dtype)
                for _ in range(params["world_size"])]
    return [rng.standard_normal(shape).astype(dtype) for _ in range(params["world_size"])]


def tolerance(dtype: Any, terms: int = 1) -> float:
    """Relative tolerance for a result made of ``terms`` rounded operations in ``dtype``."""
    return 8.0 * max(1, terms) * float(np.finfo(np.dtype(dtype)).eps)


def rel_error(got: np.ndarray, want: np.ndarray, scale: np.ndarray | float | None = None) -> np.ndarray:
    """Element-wise |got - want| / scale (scale: |want|, floored so that zeros do not divide)."""
    g, w = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    s = np.abs(w) if scale is None else np.broadcast_to(np.asarray(scale, dtype=np.float64), w.shape)
    floor = max(float(np.max(np.abs(w), initial=0.0)), 1e-30) * 1e-3
    return np.abs(g - w) / np.maximum(s, floor)


def first_bad(got: np.ndarray, want: np.ndarray, rtol: float, scale: Any = None) -> str:
    """A short description of the worst element where ``got`` and ``want`` disagree."""
    err = rel_error(got, want, scale)
    bad = ~(err <= rtol)
    index = np.unravel_index(int(np.nanargmax(np.where(np.isnan(err), np.inf, err))), err.shape) if err.size else ()
    where = index[0] if len(index) == 1 else tuple(int(i) for i in index)
    return (f"{int(bad.sum())} of {want.size} elements wrong; worst at index {where}: got {float(got[index]):.10g}, "
            f"expected {float(want[index]):.10g} (relative error {float(err[index]):.2e}, allowed {rtol:.1e})")


def compare_rel(what: str, got: object, want: np.ndarray, rtol: float, scale: Any = None, exact: bool = False) -> None:
    """Raise :class:`Fail` unless ``got`` is an array of ``want``'s shape and dtype with close values."""
    _same_kind(what, got, want)
    if exact:
        if not np.array_equal(got, want):
            raise Fail(f"{what}: {first_bad(got, want, 0.0, scale)} (must be an exact copy).")
        return
    err = rel_error(got, want, scale)
    if not np.all(err <= rtol):
        raise Fail(f"{what}: {first_bad(got, want, rtol, scale)}.")


def chunks(numel: int, world: int) -> list[list[tuple[int, int]]]:
    """The ways a ring cuts ``numel`` elements into ``world`` chunks: sizes differing by one, or equal
    sizes rounded up (the last chunks short or empty, as with zero padding)."""
    # numpy's split, as the course cuts: the first numel % world chunks one element longer (the judge
    # must not import the course's own code, which is hidden while a submission runs)
    edges = np.cumsum([0] + [len(part) for part in np.array_split(np.empty(numel), world)])
    even = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
    size = -(-numel // world)
    padded = [(min(i * size, numel), min((i + 1) * size, numel)) for i in range(world)]
    return [even] if even == padded else [even, padded]


def reports(raw: Any, n: int) -> list[dict]:
    """Every rank's dict of outputs, or a failure saying they did not come back."""
    if not isinstance(raw, list) or len(raw) != n or not all(isinstance(r, dict) for r in raw):
        raise Fail("the workers did not report back (internal result missing).")
    return raw
