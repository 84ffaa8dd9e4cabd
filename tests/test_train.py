"""The single-device training loop and its measuring helpers (behaviour only, never speed)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from dpcourse.data import digits_split, synthetic_classification
from dpcourse.models import build_model
from dpcourse.train import (
    PHASES,
    History,
    batches,
    evaluate,
    gradient_vector,
    max_difference,
    num_threads,
    pick_device,
    throughput,
    time_step_phases,
    train,
)


@pytest.fixture(scope="module")
def digits():
    return digits_split()


@pytest.fixture(autouse=True)
def one_thread():
    with num_threads(1):
        yield


def test_batches_cover_an_epoch_once_and_follow_the_seed():
    data = TensorDataset(torch.arange(10).float(), torch.arange(10))
    got = list(batches(data, 4, seed=3))
    assert [len(x) for x, _ in got] == [4, 4, 2]
    seen = torch.cat([y for _, y in got])
    assert sorted(seen.tolist()) == list(range(10))
    for x, y in got:
        assert torch.equal(x.long(), y)  # inputs and targets stay paired
    assert torch.equal(seen, torch.cat([y for _, y in batches(data, 4, seed=3)]))
    assert not torch.equal(seen, torch.cat([y for _, y in batches(data, 4, seed=4)]))
    assert [len(x) for x, _ in batches(data, 4, drop_last=True)] == [4, 4]
    assert torch.equal(torch.cat([y for _, y in batches(data, 4, shuffle=False)]), torch.arange(10))


def test_train_learns_the_digits(digits):
    train_set, test_set = digits
    history = train(build_model("digits-mlp", seed=0), train_set, epochs=6, batch_size=64, lr=0.05,
                    test_set=test_set, device="cpu")
    assert history.epoch == [1, 2, 3, 4, 5, 6]
    assert history.train_loss[-1] < 0.3 * history.train_loss[0]
    assert history.test_accuracy[-1] > 0.9  # chance is 0.1
    assert len(history.step_loss) == 6 * math.ceil(len(train_set) / 64)
    assert history.samples_seen == 6 * len(train_set)
    assert history.samples_per_second > 0


def test_train_is_repeatable_with_a_seed(digits):
    train_set, _ = digits
    a, b = build_model("digits-mlp", seed=0), build_model("digits-mlp", seed=0)
    ha = train(a, train_set, epochs=2, batch_size=32, seed=5, device="cpu")
    hb = train(b, train_set, epochs=2, batch_size=32, seed=5, device="cpu")
    assert ha.step_loss == hb.step_loss
    assert max_difference(a, b) == 0.0
    c = build_model("digits-mlp", seed=0)
    hc = train(c, train_set, epochs=2, batch_size=32, seed=6, device="cpu")
    assert hc.step_loss != ha.step_loss


def test_train_accepts_a_tuple_and_its_own_loss_and_optimizer():
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = train(model, (x, y), epochs=30, batch_size=16, loss_fn=nn.MSELoss(), optimizer=opt, device="cpu")
    assert history.train_loss[-1] < 1e-3
    assert torch.allclose(model.weight, torch.tensor([[1.0, -2.0, 0.5]]), atol=0.05)


def test_evaluate_matches_a_hand_count(digits):
    _, test_set = digits
    model = build_model("digits-mlp", seed=0)
    model.train()
    loss, accuracy = evaluate(model, test_set, batch_size=50)
    x, y = test_set.tensors
    with torch.no_grad():
        out = model(x)
    assert accuracy == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert loss == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert model.training  # evaluate restores the mode it found


def test_evaluate_uses_eval_mode():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(64, 10))
    data = (torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,)))
    assert evaluate(model, data) == evaluate(model, data)  # dropout off: the same answer twice


def test_throughput_trains_and_reports_a_rate(digits):
    train_set, _ = digits
    model = build_model("digits-mlp", seed=0)
    before = copy.deepcopy(model)
    rate = throughput(model, train_set, batch_size=32, steps=3, warmup=1)
    assert math.isfinite(rate) and rate > 0
    assert max_difference(model, before) > 0  # it really took optimizer steps


def test_time_step_phases_names_every_phase(digits):
    _, test_set = digits
    model = build_model("digits-mlp", seed=0)
    before = copy.deepcopy(model)
    phases = time_step_phases(model, test_set, batch_size=64, steps=3, warmup=1)
    assert tuple(phases) == PHASES == ("data", "forward", "backward", "optimizer")
    assert all(v >= 0 for v in phases.values()) and sum(phases.values()) > 0
    assert max_difference(model, before) > 0


def test_measuring_runs_past_the_end_of_the_data():
    data = synthetic_classification(n=40, features=8, classes=3)
    model = nn.Linear(8, 3)
    assert throughput(model, data, batch_size=16, steps=10, warmup=2) > 0  # 12 steps of 16 from 40 samples


@pytest.mark.parametrize("call, match", [
    (lambda m, d: train(m, d, epochs=0), "epochs must be a whole number >= 1"),
    (lambda m, d: train(m, d, batch_size=0), "batch_size must be a whole number >= 1"),
    (lambda m, d: train(m, d, lr=0.0), "lr must be a positive number"),
    (lambda m, d: train(m, (d.tensors[0][:0], d.tensors[1][:0])), "empty"),
    (lambda m, d: train(m, (d.tensors[0][:5], d.tensors[1][:4])), "differ in length"),
    (lambda m, d: throughput(m, d, batch_size=10_000), "larger than the data set"),
    (lambda m, d: train(m, d, amp=True, device="cpu"), "needs a CUDA GPU"),
])
def test_bad_input_gets_a_clear_error(digits, call, match):
    with pytest.raises(ValueError, match=match):
        call(build_model("digits-mlp", seed=0), digits[1])


def test_a_non_dataset_is_refused():
    with pytest.raises(TypeError, match="TensorDataset"):
        list(batches([1, 2, 3], 2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without CUDA")
def test_asking_for_a_missing_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")
    assert pick_device() == torch.device("cpu")


def test_num_threads_restores_the_old_count():
    old = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
    with pytest.raises(ValueError, match="threads"):
        with num_threads(0):
            pass


def test_gradient_vector_and_max_difference():
    model = nn.Linear(3, 2)
    assert torch.equal(gradient_vector(model), torch.zeros(8))  # no grads yet count as zeros
    model(torch.ones(1, 3)).sum().backward()
    g = gradient_vector(model)
    assert g.shape == (8,) and torch.equal(g[:6], torch.ones(6)) and torch.equal(g[6:], torch.ones(2))
    other = copy.deepcopy(model)
    assert max_difference(model, other) == 0.0
    with torch.no_grad():
        other.bias[1] += 0.25
    assert max_difference(model, other) == pytest.approx(0.25)
    assert max_difference(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0])) == 0.5
    with pytest.raises(ValueError, match="different parameter shapes"):
        max_difference(nn.Linear(3, 2), nn.Linear(2, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        max_difference(torch.zeros(2), torch.zeros(3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_with_and_without_mixed_precision(digits):
    train_set, test_set = digits
    for amp in (False, True):
        model = build_model("digits-cnn", seed=0)
        history = train(model, train_set, epochs=3, batch_size=64, test_set=test_set, device="cuda", amp=amp)
        assert next(model.parameters()).device.type == "cuda"
        assert history.test_accuracy[-1] > 0.85
        phases = time_step_phases(model, train_set, batch_size=64, steps=3, device="cuda", amp=amp)
        assert tuple(phases) == PHASES
        assert throughput(model, train_set, batch_size=64, steps=3, device="cuda", amp=amp) > 0


def test_history_defaults():
    h = History()
    assert math.isnan(h.samples_per_second) and h.step_loss == []
