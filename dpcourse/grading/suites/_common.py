"""Helpers shared by the suites: seeded inputs that the child and the grader build identically."""

from __future__ import annotations

import numpy as np

from dpcourse.grading.framework import Fail

__all__ = ["rank_array", "compare", "first_bad"]


def rank_array(seed: int, rank: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Rank ``rank``'s input for seed ``seed``: standard normal values of ``shape`` and ``dtype``."""
    rng = np.random.default_rng([seed, rank])
    return rng.standard_normal(shape).astype(dtype)


def first_bad(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str:
    """A short description of the first element where ``got`` and ``want`` disagree."""
    bad = ~np.isclose(got, want, rtol=rtol, atol=atol)
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    where = index[0] if len(index) == 1 else index
    return (f"{int(bad.sum())} of {want.size} elements wrong; first at index {where}: "
            f"got {got[index]:.6g}, expected {want[index]:.6g}")


def compare(what: str, got: object, want: np.ndarray, rtol: float, atol: float) -> None:
    """Raise :class:`Fail` unless ``got`` is an array of ``want``'s shape with close values."""
    if not isinstance(got, np.ndarray):
        raise Fail(f"{what}: expected a tensor, got {type(got).__name__}.")
    if got.shape != want.shape:
        raise Fail(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}.")
    if got.dtype != want.dtype:
        raise Fail(f"{what}: dtype {got.dtype}, expected {want.dtype} (keep the input's dtype).")
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        raise Fail(f"{what}: {first_bad(got, want, rtol, atol)}.")
