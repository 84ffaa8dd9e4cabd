"""The data and models that ship with the course: shapes, determinism, sharding, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dpcourse.data import digits_split, load_digits, shard, synthetic_classification, synthetic_regression
from dpcourse.models import DigitsCNN, DigitsMLP, TinyTransformer, WideMLP, build_model, count_parameters

# --------------------------------------------------------------------------- data

def test_load_digits_shapes_range_and_labels():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    counts = torch.bincount(y, minlength=10)
    assert len(counts) == 10 and counts.min().item() > 150  # every digit well represented


def test_digits_split_is_a_disjoint_cover_and_repeatable():
    x, _ = load_digits()
    train, test = digits_split(test_fraction=0.2, seed=0)
    assert len(train) + len(test) == len(x)
    assert len(test) == round(0.2 * len(x))
    rows = {tuple(r.flatten().tolist()) for r in x}
    seen = [tuple(r.flatten().tolist()) for r in torch.cat([train.tensors[0], test.tensors[0]])]
    assert set(seen) == rows
    again_train, _ = digits_split(test_fraction=0.2, seed=0)
    assert (torch.equal(train.tensors[0], again_train.tensors[0])
            and torch.equal(train.tensors[1], again_train.tensors[1]))
    other_train, _ = digits_split(test_fraction=0.2, seed=1)
    assert not torch.equal(train.tensors[1], other_train.tensors[1])


def test_synthetic_classification_is_seeded_and_shaped():
    a = synthetic_classification(n=300, features=16, classes=5, seed=3)
    b = synthetic_classification(n=300, features=16, classes=5, seed=3)
    c = synthetic_classification(n=300, features=16, classes=5, seed=4)
    assert a.tensors[0].shape == (300, 16) and a.tensors[1].shape == (300,)
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(a.tensors[0], c.tensors[0])
    assert 0 <= a.tensors[1].min() and a.tensors[1].max() < 5
    assert len(torch.unique(a.tensors[1])) > 1


def test_synthetic_regression_is_seeded_and_nearly_linear():
    x, y = synthetic_regression(n=500, features=8, outputs=2, noise=0.1, seed=0).tensors
    assert x.shape == (500, 8) and y.shape == (500, 2)
    x2, y2 = synthetic_regression(n=500, features=8, outputs=2, noise=0.1, seed=0).tensors
    assert torch.equal(x, x2) and torch.equal(y, y2)
    w = torch.linalg.lstsq(x, y).solution
    residual = (x @ w - y).std().item()
    assert 0.05 < residual < 0.2  # what is left after a least-squares fit is the noise


@pytest.mark.parametrize("n", [0, 1, 5, 7, 8, 64, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_shard_covers_the_batch_exactly_once(n, world):
    batch = torch.arange(n)
    parts = [shard(batch, r, world) for r in range(world)]
    assert torch.equal(torch.cat(parts), batch)  # contiguous, in order, nothing lost or repeated
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the extra samples go to the first ranks


def test_shard_works_on_rows_of_any_tensor():
    batch = torch.randn(10, 3, 4)
    parts = [shard(batch, r, 3) for r in range(3)]
    assert [p.shape for p in parts] == [(4, 3, 4), (3, 3, 4), (3, 3, 4)]
    assert torch.equal(torch.cat(parts), batch)


@pytest.mark.parametrize("rank, world", [(-1, 2), (2, 2), (0, 0)])
def test_shard_rejects_a_rank_outside_the_world(rank, world):
    with pytest.raises(ValueError, match="rank must be in"):
        shard(torch.arange(4), rank, world)


# --------------------------------------------------------------------------- models

@pytest.mark.parametrize("name, make_input, out_shape", [
    ("digits-mlp", lambda: torch.rand(5, 1, 8, 8), (5, 10)),
    ("digits-cnn", lambda: torch.rand(5, 1, 8, 8), (5, 10)),
    ("tiny", lambda: torch.randn(5, 256), (5, 10)),
    ("small", lambda: torch.randn(5, 256), (5, 10)),
    ("transformer", lambda: torch.randint(0, 64, (3, 32)), (3, 32, 64)),
])
def test_build_model_forward_shapes(name, make_input, out_shape):
    model = build_model(name, seed=0)
    assert model(make_input()).shape == out_shape


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "tiny", "transformer"])
def test_same_seed_same_weights_other_seed_other_weights(name):
    a, b, c = build_model(name, seed=1), build_model(name, seed=1), build_model(name, seed=2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_build_model_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*digits-cnn.*tiny"):
        build_model("resnet")


def test_transformer_is_causal():
    model = build_model("transformer", seed=0).eval()
    tokens = torch.randint(0, 64, (1, 16))
    changed = tokens.clone()
    changed[0, 10] = (tokens[0, 10] + 1) % 64
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)  # earlier positions cannot see position 10
    assert not torch.allclose(a[0, 10:], b[0, 10:], atol=1e-6)


def test_count_parameters_by_hand():
    assert count_parameters(nn.Linear(3, 4)) == 3 * 4 + 4
    assert count_parameters(DigitsMLP(hidden=64)) == 64 * 64 + 64 + 64 * 10 + 10
    assert count_parameters(WideMLP(features=8, width=16, depth=2, classes=3)) == (
        (8 * 16 + 16) + (16 * 16 + 16) + (16 * 3 + 3))


def test_count_parameters_counts_shared_once_and_skips_frozen():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert count_parameters(model) == 20
    frozen = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    for p in frozen[0].parameters():
        p.requires_grad_(False)
    assert count_parameters(frozen) == 4 * 2 + 2


def test_model_sizes_match_their_docstrings():
    assert 140_000 < count_parameters(DigitsCNN()) < 160_000        # "about 150 k"
    assert 3_300_000 < count_parameters(WideMLP(256, 1024, 4)) < 3_500_000   # "about 3.4 M"
    assert 8_500_000 < count_parameters(WideMLP(256, 2048, 3)) < 9_500_000   # "about 9 M"
    assert count_parameters(build_model("medium")) == count_parameters(WideMLP(256, 1024, 4))
    assert isinstance(build_model("transformer"), TinyTransformer)
