"""The training loop (``trainer._train_seeded``) on tiny tasks: the plain PyTorch loop it must
equal (SGD, per-model clipping, scores in original units), module losses that fail or lose
their gradient mid-run, predictions that turn non-finite on the scored split, the modes the
model runs in, and one call holding modules and expressions together (found by mutation
testing, ``experiments/mutation.py trainer``).  Each test trains a few steps on at most a few
dozen samples."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from lossforge.tasks import Task
from lossforge.tasks.candidates import prepare
from lossforge.tasks.errors import TaskWarning
from lossforge.tasks.models import reference_model
from lossforge.tasks.trainer import Outcome, batch_schedule, train_population
from tests.tasks.conftest import FakeLoss

CPU = torch.device("cpu")


def _regression(n_val: int = 24, **kw) -> Task:
    """48 training samples of 3 features, targets far from mean 0 and std 1 (so that scoring in
    the standardised units would show)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48 + n_val, 3))
    y = 100 + 20 * (X @ np.array([1.0, -2.0, 0.5])) + rng.normal(size=len(X))
    options = dict(model="linear", steps=6, batch_size=8, lr=0.1)
    return Task.from_arrays(X[:48], y[:48], X[48:], y[48:], kind="regression", **{**options, **kw})


def _module(name: str, factory) -> FakeLoss:
    return FakeLoss(name, factory, "prediction", "value", ("regression",))


# ----------------------------------------------------------------------------- the plain loop
@pytest.mark.parametrize("grad_clip", [None, 0.5])
def test_sgd_trains_the_plain_pytorch_loop_and_scores_in_the_original_units(grad_clip):
    """Same init, batches and SGD with momentum (and clipping) as an ordinary model; scored on a
    split of two evaluation chunks (2048 + 52 samples), in the targets' units."""
    seed, steps = 3, 7
    t = _regression(n_val=2100, optimizer="sgd", momentum=0.5, grad_clip=grad_clip)
    (res,) = t.evaluate(["(p-y)**2"], seed=seed, steps=steps)
    assert res.status == "ok" and res.steps == steps, res

    torch.manual_seed(0)
    model = reference_model(t.model_spec, t.input_dim, t.output_dim, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=0.5, weight_decay=t.weight_decay)
    X = torch.tensor(t.X_train)
    y = torch.tensor((t.y_train - t.target_mean) / t.target_std, dtype=torch.float32)
    for idx in batch_schedule(t.n_train, t.batch_size, steps, seed):
        idx = torch.from_numpy(idx)
        loss = (model(X[idx]).squeeze(1) - y[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        if grad_clip is not None:
            assert torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) > grad_clip  # clipping acts
        opt.step()
    with torch.no_grad():
        pred = model(torch.tensor(t.X_val)).squeeze(1).double() * t.target_std + t.target_mean
    want = (pred - torch.tensor(t.y_val)).pow(2).mean().item()
    assert res.metric == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------- module losses
class _FailsAfter(nn.Module):
    """Squared error that raises from its 4th call on (training step 3)."""

    def __init__(self, reduction="none"):
        super().__init__()
        self.calls = 0

    def forward(self, input, target):
        self.calls += 1
        if self.calls > 3:
            raise RuntimeError("this loss gave up")
        return (input - target) ** 2


class _GradientNaNAfter(nn.Module):
    """Squared error whose value stays finite but whose gradient is NaN from step 3 on
    (d/dz sqrt(0 * |z|) is inf * 0)."""

    def __init__(self, reduction="none"):
        super().__init__()
        self.calls = 0

    def forward(self, input, target):
        self.calls += 1
        out = (input - target) ** 2
        return out + torch.sqrt(input.abs() * 0) if self.calls > 3 else out


def test_a_module_that_fails_or_loses_its_gradient_mid_run_is_stopped_at_that_step():
    t = _regression()
    mse = _module("mse", nn.MSELoss)
    res = t.evaluate([mse, _module("fails", _FailsAfter), _module("nan_gradient", _GradientNaNAfter), "(p-y)**2"],
                     seed=1, steps=6)
    assert [r.status for r in res] == ["ok", "error", "diverged", "ok"], res
    assert res[1].error == "loss module failed at step 3: RuntimeError: this loss gave up" and res[1].steps == 3
    assert res[2].error == "non-finite gradient at step 3" and res[2].steps == 3
    assert res[0].steps == res[3].steps == 6
    (alone,) = t.evaluate([mse], seed=1, steps=6)
    assert res[0].metric == pytest.approx(alone.metric, rel=1e-6)  # the others train on unaffected


def test_a_population_that_all_diverges_reports_each_loss():
    t = _regression()
    res = t.evaluate(["(1000000*p)**6*exp(30)*exp(30)"], steps=5)  # inf for every p but 0
    assert [(r.status, r.error, r.steps) for r in res] == [("diverged", "non-finite loss at step 0", 0)]


class _Constant(nn.Module):
    """Predicts 0.75 for every sample at initialisation."""

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.full((1,), 0.75))

    def forward(self, x):
        return self.b.expand(x.shape[0], 1) + 0 * x[:, :1]


def test_an_expression_whose_gradient_overflows_while_its_value_is_finite_stops_at_that_step():
    # 3e38 * p**6 at p = 0.75 is 5.3e37 (finite in float32); its derivative 1.8e39 * p**5 is not.
    t = _regression(model=_Constant, batch_size=4)
    bad, ok = t.evaluate(["(1000000*p)**6*300", "(p-y)**2"], steps=4)
    assert (bad.status, bad.error, bad.steps) == ("diverged", "non-finite gradient at step 0", 0)
    assert ok.status == "ok" and ok.steps == 4


# ----------------------------------------------------------------------------- scoring
def test_predictions_that_are_not_finite_on_the_scored_split_mark_the_model_diverged():
    """A validation feature of 1e39 overflows float32: every model's predictions for it are
    inf or nan, while the metric (balanced accuracy of the argmax, which needs the number of
    classes) stays finite; on the training split nothing overflows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    X_val = X[40:].copy()
    X_val[0, 0] = 1e39
    with pytest.warns(RuntimeWarning, match="overflow"):
        t = Task.from_arrays(X[:40], y[:40], X_val, y[40:], kind="multiclass", model="linear", steps=3, batch_size=8,
                             lr=0.05, metric="balanced_accuracy")
    res = t.evaluate(["-y*log(p)", "(p-y)**2"], steps=3)
    want = ("diverged", "non-finite predictions on the val split", 3)
    assert [(r.status, r.error, r.steps) for r in res] == [want, want]
    train = t.evaluate(["-y*log(p)"], steps=3, split="train")[0]
    assert train.status == "ok" and 0 <= train.metric <= 1 and train.steps == 3


class _Recorder(nn.Module):
    """A linear model that records the mode of each call; its data-dependent branch is one
    that ``torch.func.vmap`` cannot batch (the trainer must find that out on a probe batch)."""

    modes: list[bool] = []

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        _Recorder.modes.append(self.training)
        out = self.lin(x)
        return out * 2 if bool(out.abs().sum() > 1e9) else out


def test_models_train_in_training_mode_and_are_scored_in_eval_mode():
    _Recorder.modes.clear()
    t = _regression(model=_Recorder, steps=3)
    with pytest.warns(TaskWarning, match="cannot batch"):
        res = t.evaluate(["(p-y)**2", "abs(p-y)"], steps=3)
    assert [r.status for r in res] == ["ok", "ok"], res
    modes = _Recorder.modes
    assert modes[-1] is False and modes[-2] is False  # the two models, scored
    assert modes.count(False) == 2 and True in modes


# ----------------------------------------------------------------------------- train_population itself
def test_one_call_trains_modules_and_expressions_together_in_the_order_given():
    t = _regression()
    mse = _module("mse", nn.MSELoss)
    cands = [prepare(mse, t), prepare("(p-y)**2", t), prepare(_module("fails", _FailsAfter), t), prepare("abs(p-y)", t)]
    got = train_population(t, t._tensors(CPU), cands, seed=0, steps=5, split="val", device=CPU, deadline=None)
    assert [o.status for o in got] == ["ok", "ok", "error", "ok"], got
    assert got[0].metric == pytest.approx(got[1].metric, rel=1e-5)  # MSELoss is (p-y)**2
    (abs_alone,) = train_population(t, t._tensors(CPU), [prepare("abs(p-y)", t)], seed=0, steps=5, split="val",
                                    device=CPU, deadline=None)
    assert got[3].metric == pytest.approx(abs_alone.metric, rel=1e-6)


def test_a_deadline_already_past_stops_before_the_first_step():
    t = _regression()
    got = train_population(t, t._tensors(CPU), [prepare("(p-y)**2", t), prepare("abs(p-y)", t)], seed=0, steps=5,
                           split="val", device=CPU, deadline=time.perf_counter() - 1)
    assert got == [Outcome("error", error="time limit reached after 0 of 5 steps", steps=0)] * 2


def test_any_non_negative_seed_trains_even_beyond_64_bits():
    t = _regression()
    (huge,) = t.evaluate(["(p-y)**2"], seed=2**70, steps=2)
    assert huge.status == "ok" and huge.seed == 2**70 and huge.steps == 2
