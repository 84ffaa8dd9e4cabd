"""Models the lessons train, importable by name from notebooks and from workers."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsMLP", "DigitsCNN", "WideMLP", "TinyTransformer", "Quirky", "build_model", "count_parameters"]


class DigitsMLP(nn.Module):
    """A two-layer perceptron for 8x8 digits (about 5 k parameters with ``hidden=64``)."""

    def __init__(self, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsCNN(nn.Module):
    """A small convolutional net for 8x8 digits (about 150 k parameters with ``width=32``)."""

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class WideMLP(nn.Module):
    """An MLP whose size a learner turns up: ``depth`` hidden layers of ``width`` units.

    ``WideMLP(256, 1024, 4)`` has about 3.4 M parameters; ``WideMLP(256, 2048, 3)`` about 9 M.
    """

    def __init__(self, features: int = 256, width: int = 1024, depth: int = 4, classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        size = features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyTransformer(nn.Module):
    """A small causal transformer language model over a toy vocabulary (pre-norm blocks)."""

    def __init__(self, vocab: int = 64, dim: int = 128, heads: int = 4, layers: int = 2, context: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.zeros(context, dim))
        block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.embed(tokens) + self.position[:t]
        return self.head(self.blocks(h, mask=self.mask[:t, :t], is_causal=True))


class Quirky(nn.Module):
    """Every awkward case a data-parallel wrapper must handle, in one small model (tests and grading use it).

    A frozen layer; a weight shared by two layers (one tensor, reduced once); a layer used only for
    samples whose first feature exceeds 1 (so, with the batches the tests draw, used on some ranks and
    not others, or on none); a layer never used (its gradient stays ``None``); and a buffer.
    """

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 12)
        self.frozen = nn.Linear(12, 12).requires_grad_(False)
        self.mid = nn.Linear(12, 12)
        self.out = nn.Linear(12, 12)
        self.out.weight = self.mid.weight  # tied: one tensor, used by two layers
        self.rare = nn.Linear(12, 12)      # only for samples whose first feature exceeds 1
        self.never = nn.Linear(12, 3)      # never used
        self.head = nn.Linear(12, 3)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x)) * self.scale
        h = torch.tanh(self.frozen(h))
        h = torch.tanh(self.out(torch.tanh(self.mid(h))))
        idx = torch.nonzero(x[:, 0] > 1.0).flatten()
        if len(idx):
            h = h.index_add(0, idx, torch.tanh(self.rare(h[idx])))
        return self.head(h)


_SIZES = {
    "tiny": lambda: WideMLP(256, 256, 2),
    "small": lambda: WideMLP(256, 1024, 2),
    "medium": lambda: WideMLP(256, 1024, 4),
    "large": lambda: WideMLP(256, 2048, 3),
}


def build_model(name: str, seed: int | None = 0) -> nn.Module:
    """A model by name: ``digits-mlp``, ``digits-cnn``, ``transformer``, or a ``WideMLP`` size
    (``tiny``, ``small``, ``medium``, ``large``). The same ``seed`` gives the same initial weights."""
    if seed is not None:
        torch.manual_seed(seed)
    factories = {"digits-mlp": DigitsMLP, "digits-cnn": DigitsCNN, "transformer": TinyTransformer, **_SIZES}
    if name not in factories:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(sorted(factories))}.")
    return factories[name]()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
