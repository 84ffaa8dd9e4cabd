"""Data that ships with the course: the UCI 8x8 handwritten digits, and a synthetic workload.

Nothing is downloaded. ``assets/digits.npz`` holds the 1,797 images of the UCI "Optical Recognition of
Handwritten Digits" test set (8x8 pixels, values 0-16; Alpaydin & Kaynak, 1998; CC BY 4.0).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["load_digits", "digits_split", "synthetic_regression", "synthetic_classification", "shard"]


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(images, labels)``: float32 ``(N, 1, 8, 8)`` scaled to [0, 1], int64 ``(N,)``."""
    with resources.files("dpcourse").joinpath("assets", "digits.npz").open("rb") as f:
        arrays = np.load(f)
        images, labels = arrays["images"], arrays["labels"]
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """A fixed, shuffled train/test split of the digits as two ``TensorDataset`` s."""
    x, y = load_digits()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def synthetic_classification(n: int = 4096, features: int = 256, classes: int = 10, seed: int = 0) -> TensorDataset:
    """Random inputs labelled by a fixed random linear teacher: learnable, any size, no download."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    teacher = torch.randn(features, classes, generator=g)
    y = (x @ teacher).argmax(dim=1)
    return TensorDataset(x, y)


def synthetic_regression(n: int = 1024, features: int = 32, outputs: int = 1, noise: float = 0.1,
                         seed: int = 0) -> TensorDataset:
    """``y = x @ w + noise`` for a fixed random ``w``: the smallest honest training problem."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, outputs, generator=g)
    y = x @ w + noise * torch.randn(n, outputs, generator=g)
    return TensorDataset(x, y)


def shard(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of a global batch (the first ``len % world_size`` ranks get one more)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
    n = batch.shape[0]
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return batch[start:start + base + (1 if rank < extra else 0)]
