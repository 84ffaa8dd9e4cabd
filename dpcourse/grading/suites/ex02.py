"""Exercise 02: ``accumulate_gradients(model, loss_fn, x, y, micro_batches) -> float``.

It must leave in ``.grad`` exactly the gradient of the full-batch mean loss (also when the batch does
not split evenly), starting from zeroed gradients, and return the full-batch loss; the model may see
only one micro-batch at a time, and a ``micro_batches`` outside 1..N is a ``ValueError``.
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


# --------------------------------------------------------------------------- memory and bad input

def _run_sizes(learner: Any, params: dict, ctx: Context) -> dict:
    """Record the batch size of every forward pass the model makes."""
    model, loss_fn, x, y = _problem(ctx.seed, params["batch"], params["task"])
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda module, inputs: sizes.append(int(inputs[0].shape[0])))
    learner.accumulate_gradients(model, loss_fn, x, y, params["micro_batches"])
    return {"sizes": sizes}


def _judge_sizes(raw: Any, params: dict, seed: int) -> None:
    n, k = params["batch"], params["micro_batches"]
    largest = -(-n // k)
    sizes = raw.get("sizes") if isinstance(raw, dict) else None
    if not isinstance(sizes, list) or not all(isinstance(s, int) for s in sizes):
        raise Fail("could not read back the sizes of the forward passes.")
    if max(sizes, default=0) > largest:
        raise Fail(f"the model saw {max(sizes)} samples in one forward pass; with {n} samples in {k} micro-batches "
                   f"no pass may see more than {largest}: compute the returned loss from the micro-batches too.")
    if sum(sizes) != n:
        raise Fail(f"the forward passes saw {sum(sizes)} samples in all ({sizes}), expected each of the {n} "
                   "samples exactly once.")


def _run_bad_input(learner: Any, params: dict, ctx: Context) -> dict:
    """What each bad ``micro_batches`` raised: ``[type name, is a ValueError, message]``, or None."""
    outcome = {}
    for bad in params["bad"]:
        model, loss_fn, x, y = _problem(ctx.seed, params["batch"], params["task"])
        try:
            learner.accumulate_gradients(model, loss_fn, x, y, bad)
            outcome[repr(bad)] = None
        except NotImplementedError:
            raise  # not written yet: reported as such, like every other test
        except Exception as exc:  # noqa: BLE001  which exception is exactly what is graded
            outcome[repr(bad)] = [type(exc).__name__, isinstance(exc, ValueError), str(exc)[:200]]
    return outcome


def _judge_bad_input(raw: Any, params: dict, seed: int) -> None:
    if not isinstance(raw, dict):
        raise Fail("could not read back what the bad inputs raised.")
    for bad in params["bad"]:
        got = raw.get(repr(bad))
        if got is None:
            raise Fail(f"micro_batches={bad!r} with {params['batch']} samples raised nothing: raise ValueError "
                       "saying that micro_batches must be a whole number from 1 to len(x).")
        if not (isinstance(got, list) and len(got) == 3 and got[1] is True):
            name = got[0] if isinstance(got, list) and got else "?"
            raise Fail(f"micro_batches={bad!r} raised {name}, expected ValueError.")
        if not str(got[2]).strip():
            raise Fail(f"micro_batches={bad!r}: the ValueError has no message; say what is allowed.")


SUITE.add("the model sees one micro-batch at a time", _run_sizes, _judge_sizes,
          params={"batch": 10, "micro_batches": 3, "task": "classification"}, visible=False,
          hint="run forward and backward on each piece; build the returned loss from the pieces' losses, not from "
               "a forward pass over the whole batch.")
SUITE.add("micro_batches outside 1..N raises ValueError", _run_bad_input, _judge_bad_input,
          params={"batch": 6, "task": "classification", "bad": [0, 7, -1, 2.5]}, visible=False,
          hint="check micro_batches first: a whole number from 1 to len(x), else raise ValueError(...).")
