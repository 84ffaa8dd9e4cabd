"""Exercise 02: ``accumulate_gradients(model, loss_fn, x, y, micro_batches) -> float``.

It must leave in ``.grad`` exactly the gradient of the full-batch mean loss (also when the batch does
not split evenly), starting from zeroed gradients, and return the full-batch loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpcourse.grading.framework import Context, Fail, Suite
from dpcourse.grading.suites._common import compare

SUITE = Suite("02", names=("accumulate_gradients",), title="gradient accumulation")


def _problem(seed: int, batch: int, task: str) -> tuple[Any, Any, Any, Any]:
    """A small float64 model, its loss and a batch, identical wherever they are built from ``seed``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    outputs = 3 if task == "classification" else 2
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, outputs)).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, 5, generator=g, dtype=torch.float64)
    if task == "classification":
        y, loss_fn = torch.randint(0, outputs, (batch,), generator=g), nn.CrossEntropyLoss()
    else:
        y, loss_fn = torch.randn(batch, outputs, generator=g, dtype=torch.float64), nn.MSELoss()
    return model, loss_fn, x, y


def _run(learner: Any, params: dict, ctx: Context) -> dict:
    import torch

    model, loss_fn, x, y = _problem(ctx.seed, params["batch"], params["task"])
    if params.get("stale"):
        for p in model.parameters():
            p.grad = torch.full_like(p, 3.0)
    loss = learner.accumulate_gradients(model, loss_fn, x, y, params["micro_batches"])
    if isinstance(loss, torch.Tensor):
        loss = loss.detach()
    return {"loss": loss, "grads": [p.grad for p in model.parameters()]}


def _judge(raw: Any, params: dict, seed: int) -> None:
    model, loss_fn, x, y = _problem(seed, params["batch"], params["task"])
    loss = loss_fn(model(x), y)
    loss.backward()
    wants = [p.grad.numpy() for p in model.parameters()]
    grads = raw.get("grads")
    if not isinstance(grads, list) or len(grads) != len(wants):
        raise Fail("could not read the model's gradients back.")
    if any(g is None for g in grads):
        raise Fail("some parameters have no gradient (.grad is None): call backward() on every micro-batch's loss.")
    for i, (got, want) in enumerate(zip(grads, wants)):
        if isinstance(got, np.ndarray) and got.shape == want.shape and np.allclose(got, 3.0 + want, atol=1e-9):
            raise Fail("the gradients still contain what was in .grad before the call: zero them first "
                       "(model.zero_grad()).")
        compare(f"gradient of parameter {i}", got, want, 1e-7, 1e-10)
    got_loss = raw.get("loss")
    if isinstance(got_loss, np.ndarray) and got_loss.size == 1:
        got_loss = float(got_loss.reshape(-1)[0])
    if isinstance(got_loss, bool) or not isinstance(got_loss, (int, float)):
        raise Fail(f"return the full-batch loss as a float (e.g. total.item()), got {type(got_loss).__name__}.")
    if not np.isclose(got_loss, loss.item(), rtol=1e-7, atol=1e-10):
        raise Fail(f"returned loss {got_loss:.6g}, expected the full-batch mean loss {loss.item():.6g}.")


def _add(name: str, batch: int, micro_batches: int, visible: bool, hint: str, task: str = "classification",
         stale: bool = False) -> None:
    SUITE.add(name, _run, _judge, params={"batch": batch, "micro_batches": micro_batches, "task": task,
                                          "stale": stale}, visible=visible, hint=hint)


_add("12 samples in 3 micro-batches", 12, 3, True,
     "scale each micro-batch's loss by its share of the batch (len(micro) / len(batch)) before backward().")
_add("10 samples in 3 micro-batches (uneven)", 10, 3, True,
     "micro-batches of 4, 3 and 3 samples do not weigh the same: weight each by its number of samples.")
_add("one micro-batch is plain backward", 9, 1, True,
     "with micro_batches=1 the result must be exactly loss_fn(model(x), y).backward().")
_add("regression, 7 samples in 4 micro-batches", 7, 4, False,
     "the weighting by micro-batch size holds for any mean loss, MSE included.", task="regression")
_add("one sample per micro-batch", 5, 5, False, "every micro-batch holds one sample here.")
_add("gradients left over from before are cleared", 8, 2, False,
     "start by zeroing the gradients: what was in .grad before the call must not leak into the result.",
     stale=True)
