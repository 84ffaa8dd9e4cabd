"""Exercise 02: ``accumulate_gradients(model, loss_fn, x, y, micro_batches) -> float``.

It must leave in ``.grad`` exactly the gradient of the full-batch mean loss (also when the batch does
not split evenly), starting from zeroed gradients, and return the full-batch loss; the model may see
only one micro-batch at a time, and a ``micro_batches`` outside 1..N is a ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpcourse.grading.framework import Context, Fail, Judged, Suite
from dpcourse.grading.suites._common import compare_rel, tolerance

RTOL = tolerance("float64", 64)  # float64 sums of a few terms: a float32 step or a missing term is far above it

SUITE = Suite("02", names=("accumulate_gradients",), title="gradient accumulation", defaults={"per_rank": True})


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


def _one(raw: Any) -> dict:
    if not isinstance(raw, list) or len(raw) != 1 or not isinstance(raw[0], dict):
        raise Fail("the test did not report back (internal result missing).")
    return raw[0]


def _judge(raw: Any, params: dict, ctx: Judged) -> None:
    raw, seed = _one(raw), ctx.seed
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
        # relative to the tensor's largest gradient: a small element that is a sum of cancelling terms
        # carries the rounding of its big neighbours, and an honest float64 sum must not fail on it
        scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-30)
        compare_rel(f"gradient of parameter {i}", got, want, RTOL, scale=scale)
    got_loss = raw.get("loss")
    if isinstance(got_loss, np.ndarray) and got_loss.size == 1:
        got_loss = float(got_loss.reshape(-1)[0])
    if isinstance(got_loss, bool) or not isinstance(got_loss, (int, float)):
        raise Fail(f"return the full-batch loss as a float (e.g. total.item()), got {type(got_loss).__name__}.")
    rel = abs(got_loss - loss.item()) / max(abs(loss.item()), 1e-12)
    if not rel <= RTOL:
        raise Fail(f"returned loss {got_loss:.12g}, expected the full-batch mean loss {loss.item():.12g} "
                   f"(relative error {rel:.2e}).")


def _add(name: str, batch: int, micro_batches: int, visible: bool, hint: str, task: str = "classification",
         stale: bool = False) -> None:
    SUITE.add(name, _run, _judge, params={"batch": batch, "micro_batches": micro_batches, "task": task,
                                          "stale": stale}, visible=visible, hint=hint)


# --------------------------------------------------------------------------- diagnoses (recomputed here)

def _variant(params: dict, seed: int, weights: str) -> tuple[list[np.ndarray], list[float]]:
    """Gradients and micro-batch losses of a common wrong weighting: ``"none"`` (each micro-batch's mean loss
    as it is) or ``"equal"`` (1/k each, the mean of means)."""
    import torch

    model, loss_fn, x, y = _problem(seed, params["batch"], params["task"])
    k = params["micro_batches"]
    losses = []
    for xs, ys in zip(torch.tensor_split(x, k), torch.tensor_split(y, k)):
        loss = loss_fn(model(xs), ys)
        losses.append(loss.item())
        (loss if weights == "none" else loss / k).backward()
    return [p.grad.numpy() for p in model.parameters()], losses


def _grads_match(raw: Any, grads: list[np.ndarray]) -> bool:
    got = _one(raw).get("grads") or []
    return len(got) == len(grads) and all(isinstance(g, np.ndarray) and g.shape == w.shape and
                                          np.allclose(g, w, rtol=1e-9, atol=1e-12) for g, w in zip(got, grads))


@SUITE.diagnose("micro-batch losses not scaled", "the gradient is the sum of the micro-batches' mean-loss gradients: "
                "scale each micro-batch's loss by its share of the batch (len(xs) / len(x)) before backward().")
def _unscaled(raw: Any, params: dict, ctx: Judged) -> bool:
    return params.get("micro_batches", 1) > 1 and _grads_match(raw, _variant(params, ctx.seed, "none")[0])


@SUITE.diagnose("mean of means", "every micro-batch weighs 1/k, but the pieces differ in size: weight each by its "
                "number of samples (len(xs) / len(x)), not by 1 / micro_batches.")
def _mean_of_means(raw: Any, params: dict, ctx: Judged) -> bool:
    n, k = params.get("batch", 0), params.get("micro_batches", 1)
    return k > 1 and n % k != 0 and _grads_match(raw, _variant(params, ctx.seed, "equal")[0])


@SUITE.diagnose("gradients not zeroed first", "what was in .grad before the call is still in it: call "
                "model.zero_grad() first.")
def _stale(raw: Any, params: dict, ctx: Judged) -> bool:
    if not params.get("stale"):
        return False
    model, loss_fn, x, y = _problem(ctx.seed, params["batch"], params["task"])
    loss_fn(model(x), y).backward()
    return _grads_match(raw, [3.0 + p.grad.numpy() for p in model.parameters()])


@SUITE.diagnose("returns the last micro-batch's loss", "the returned loss is the last piece's: return the "
                "full-batch loss, the sum of the scaled micro-batch losses.")
def _last_loss(raw: Any, params: dict, ctx: Judged) -> bool:
    got = _one(raw).get("loss")
    got = float(np.asarray(got).reshape(-1)[0]) if isinstance(got, (int, float, np.ndarray)) else None
    last = _variant(params, ctx.seed, "none")[1][-1]
    return got is not None and params.get("micro_batches", 1) > 1 and abs(got - last) <= 1e-9 * max(1, abs(last))


_add("12 samples in 3 micro-batches", 12, 3, True, "")
_add("10 samples in 3 micro-batches (uneven)", 10, 3, True, "")
_add("one micro-batch is plain backward", 9, 1, True, "")
_add("gradients left over from before are cleared", 8, 2, True, "", stale=True)  # visible: the commonest bug


# --------------------------------------------------------------------------- memory and bad input

def _run_sizes(learner: Any, params: dict, ctx: Context) -> dict:
    """Record the batch size of every forward pass the model makes."""
    model, loss_fn, x, y = _problem(ctx.seed, params["batch"], params["task"])
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda module, inputs: sizes.append(int(inputs[0].shape[0])))
    learner.accumulate_gradients(model, loss_fn, x, y, params["micro_batches"])
    return {"sizes": sizes}


def _judge_sizes(raw: Any, params: dict, ctx: Judged) -> None:
    raw = _one(raw)
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


def _judge_bad_input(raw: Any, params: dict, ctx: Judged) -> None:
    raw = _one(raw)
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
          params={"batch": 10, "micro_batches": 3, "task": "classification"})
SUITE.add("micro_batches outside 1..N raises ValueError", _run_bad_input, _judge_bad_input,
          params={"batch": 6, "task": "classification", "bad": [0, 7, -1, 2.5]})
