"""One device, one training loop, measured: the baseline every later lesson compares against.

    >>> from dpcourse.data import digits_split
    >>> from dpcourse.models import build_model
    >>> train_set, test_set = digits_split()
    >>> history = train(build_model("digits-mlp"), train_set, epochs=3, test_set=test_set)
    >>> history.test_accuracy[-1] > 0.8
    True

``train`` is a plain loop (shuffle, forward, loss, backward, step); ``evaluate`` measures loss and
accuracy; ``throughput`` times whole training steps in samples per second; ``time_step_phases``
splits one step into data, forward, backward and optimizer time, synchronising the GPU between
phases (CUDA runs asynchronously, so without a sync the time lands in whichever phase waits).
Mixed precision (``amp=True``) uses ``torch.autocast`` and needs a CUDA GPU. ``gradient_vector``
and ``max_difference`` compare two runs, as lesson 02 does.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Iterator, Union

import torch
from torch import nn
from torch.utils.data import TensorDataset

__all__ = [
    "History", "pick_device", "batches", "train", "evaluate", "throughput", "time_step_phases",
    "PHASES", "num_threads", "gradient_vector", "max_difference",
]

PHASES = ("data", "forward", "backward", "optimizer")

Data = Union[TensorDataset, "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class History:
    """What ``train`` measured: one entry per epoch, plus the loss of every step."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    batch_size: int = 0
    samples_seen: int = 0

    @property
    def samples_per_second(self) -> float:
        """Training samples per second over all epochs (evaluation time excluded)."""
        total = sum(self.seconds)
        return self.samples_seen / total if total > 0 else float("nan")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the first CUDA GPU when there is one, else the CPU."""
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for but no CUDA GPU is available: use 'cpu'.")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tensors(data: object) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        x, y = data.tensors
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    else:
        raise TypeError(f"expected a TensorDataset of (inputs, targets) or a tuple (x, y), got {type(data).__name__}.")
    if len(x) != len(y):
        raise ValueError(f"inputs and targets differ in length ({len(x)} vs {len(y)}).")
    if len(x) == 0:
        raise ValueError("the data set is empty: nothing to train on.")
    return x, y


def _check_positive(**values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")


def batches(data: Data, batch_size: int, shuffle: bool = True, seed: int = 0,
            drop_last: bool = False, device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(x, y)`` mini-batches, shuffled by ``seed``, moved to ``device``.

    The data sit in memory, so a batch is one indexing operation (a ``DataLoader`` would fetch and
    collate it sample by sample)."""
    _check_positive(batch_size=batch_size)
    x, y = _tensors(data)
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        xb, yb = x[idx], y[idx]
        if device is not None and device.type != "cpu":
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        yield xb, yb


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if not amp:
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise ValueError("amp=True (mixed precision) needs a CUDA GPU; on the CPU leave amp=False.")
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    # float16 needs loss scaling to keep small gradients from flushing to zero; bfloat16 does not.
    fp16 = amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=fp16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, opt: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler, device: torch.device, amp: bool) -> torch.Tensor:
    """One training step: forward (under autocast when ``amp``), backward, optimizer step; the loss."""
    with _autocast(device, amp):
        loss = loss_fn(model(x), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # the scaler is a no-op unless fp16 needs it
    scaler.step(opt)
    scaler.update()
    return loss


def _optimizer(model: nn.Module, lr: float, momentum: float) -> torch.optim.Optimizer:
    if not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def train(model: nn.Module, train_set: Data, *, epochs: int = 5, batch_size: int = 64, lr: float = 0.05,
          momentum: float = 0.9, test_set: Data | None = None, seed: int = 0, device: str | torch.device | None = None,
          amp: bool = False, loss_fn: nn.Module | None = None,
          optimizer: torch.optim.Optimizer | None = None) -> History:
    """Train ``model`` in place with SGD for ``epochs`` epochs; return the measured ``History``.

    Epoch ``e`` shuffles with seed ``seed + e``, so the same ``seed`` and initial weights give the
    same run. ``test_set`` (optional) is evaluated after every epoch."""
    _check_positive(epochs=epochs, batch_size=batch_size)
    device = pick_device(device)
    model.to(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    opt = optimizer or _optimizer(model, lr, momentum)
    scaler = _scaler(device, amp)
    history = History(batch_size=batch_size)
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        start = time.perf_counter()
        for x, y in batches(train_set, batch_size, seed=seed + epoch, device=device):
            # .item() also waits for the GPU, so the epoch time is honest
            value = _sgd_step(model, x, y, loss_fn, opt, scaler, device, amp).item()
            history.step_loss.append(value)
            total += value * len(x)
            count += len(x)
        history.seconds.append(time.perf_counter() - start)
        history.samples_seen += count
        history.epoch.append(epoch + 1)
        history.train_loss.append(total / count)
        if test_set is not None:
            test_loss, accuracy = evaluate(model, test_set, device=device, loss_fn=loss_fn)
            history.test_loss.append(test_loss)
            history.test_accuracy.append(accuracy)
    return history


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, batch_size: int = 512, device: str | torch.device | None = None,
             loss_fn: nn.Module | None = None) -> tuple[float, float]:
    """Mean loss and accuracy (fraction of argmax predictions equal to the label) of ``model`` on ``data``."""
    device = pick_device(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    for x, y in batches(data, batch_size, shuffle=False, device=device):
        out = model(x)
        total += loss_fn(out, y).item() * len(x)
        correct += (out.argmax(dim=1) == y).sum().item()
        count += len(x)
    model.train(was_training)
    return total / count, correct / count


def _step_source(data: Data, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches without end: epoch after epoch (seeds 0, 1, ...), full batches only."""
    x, _ = _tensors(data)
    if len(x) < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the data set ({len(x)} samples): "
                         "use a smaller batch.")
    seed = 0
    while True:
        yield from batches(data, batch_size, seed=seed, drop_last=True, device=device)
        seed += 1


def _timed_setup(model: nn.Module, data: Data, batch_size: int, steps: int, lr: float, device, amp: bool,
                 loss_fn: nn.Module | None) -> tuple:
    """What a timed run needs: the device, the loss, plain SGD, the scaler and an endless batch source."""
    _check_positive(batch_size=batch_size, steps=steps)
    device = pick_device(device)
    model.to(device).train()
    opt, scaler = _optimizer(model, lr, 0.0), _scaler(device, amp)
    return device, loss_fn or nn.CrossEntropyLoss(), opt, scaler, _step_source(data, batch_size, device)


def throughput(model: nn.Module, data: Data, batch_size: int = 128, steps: int = 20, warmup: int = 3,
               lr: float = 0.01, device: str | torch.device | None = None, amp: bool = False,
               loss_fn: nn.Module | None = None) -> float:
    """Training samples per second: ``steps`` whole steps (data, forward, backward, SGD) after ``warmup``.

    The model is trained in place (pass a copy to keep it)."""
    device, loss_fn, opt, scaler, source = _timed_setup(model, data, batch_size, steps, lr, device, amp, loss_fn)

    def step() -> None:
        _sgd_step(model, *next(source), loss_fn, opt, scaler, device, amp)

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def time_step_phases(model: nn.Module, data: Data, batch_size: int = 128, steps: int = 20, warmup: int = 3,
                     lr: float = 0.01, device: str | torch.device | None = None, amp: bool = False,
                     loss_fn: nn.Module | None = None) -> dict[str, float]:
    """Median seconds per phase of a training step: ``{"data", "forward", "backward", "optimizer"}``.

    The GPU is synchronised at every phase boundary, so each phase is charged its own work (the
    syncs themselves make the whole step a little slower than ``throughput`` measures)."""
    device, loss_fn, opt, scaler, source = _timed_setup(model, data, batch_size, steps, lr, device, amp, loss_fn)
    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        x, y = next(source)
        _sync(device)
        t1 = time.perf_counter()
        with _autocast(device, amp):
            loss = loss_fn(model(x), y)
        _sync(device)
        t2 = time.perf_counter()
        scaler.scale(loss).backward()
        _sync(device)
        t3 = time.perf_counter()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t4 = time.perf_counter()
        if i >= warmup:
            for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[phase].append(seconds)
    return {phase: statistics.median(values) for phase, values in times.items()}


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` intra-op threads (``torch.set_num_threads``), then restore the old count."""
    _check_positive(threads=n)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


def gradient_vector(model: nn.Module) -> torch.Tensor:
    """All parameter gradients of ``model`` as one flat vector (a missing ``.grad`` counts as zeros)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
                      for p in model.parameters()])


def max_difference(a: nn.Module | torch.Tensor, b: nn.Module | torch.Tensor) -> float:
    """Largest absolute element-wise difference between two tensors, or between two models' parameters."""
    if isinstance(a, nn.Module) and isinstance(b, nn.Module):
        pa, pb = list(a.parameters()), list(b.parameters())
        if [p.shape for p in pa] != [p.shape for p in pb]:
            raise ValueError("the two models have different parameter shapes: compare copies of one architecture.")
        return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(pa, pb))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")
        return (a.detach() - b.detach()).abs().max().item() if a.numel() else 0.0
    raise TypeError("max_difference compares two models or two tensors.")
