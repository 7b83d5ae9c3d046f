"""A user's own nn.Module and data: model forms, population independence, the vmap fallback, bad input."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from lossforge.tasks import Task, TaskError
from lossforge.tasks.errors import TaskWarning
from lossforge.tasks.population import PopulationModel

CE = "-y*log(p)"
LOSSES = [CE, "(p-y)**2", "abs(p-y)", "-y*(1-p)**2*log(p)", "exp(-y*p)", "-y*log(p + 0.01)", "y*(1-p)",
          "-y*tanh(p)"]
INFINITE = "(1000000*p)**6*exp(30)*exp(30)"


class DropBN(nn.Module):
    """An MLP with BatchNorm and dropout: per-model state and randomness."""

    def __init__(self, inputs: int = 8, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(inputs, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(32, classes))

    def forward(self, x):
        return self.body(x)


class Branchy(DropBN):
    """The same computation with data-dependent control flow, which vmap cannot batch."""

    def forward(self, x):
        h = self.body[0](x)
        if h.sum() > -1e30:  # always true, but a Python branch on a tensor
            h = self.body[2](self.body[1](h))
        return self.body[4](self.body[3](h))


def _data(n=500, f=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    a, b = int(n * 0.6), int(n * 0.8)
    return X[:a], y[:a], X[a:b], y[a:b], X[b:], y[b:]


def _task(model, **kw):
    kw.setdefault("steps", 40)
    return Task.from_arrays(*_data(), kind="multiclass", model=model, batch_size=32, **kw)


def metrics(results):
    return [r.metric for r in results]


# ----------------------------------------------------------------------------- independence
def test_a_loss_gives_the_same_result_alone_and_in_a_population_of_8():
    t = _task(DropBN)
    alone = t.evaluate([CE], seed=3)[0]
    crowd = t.evaluate(LOSSES, seed=3)
    assert alone.ok and crowd[0].ok
    assert crowd[0].metric == alone.metric
    shuffled = t.evaluate(LOSSES[::-1], seed=3)
    assert metrics(shuffled)[::-1] == metrics(crowd)
    chunked = t.evaluate(LOSSES, seed=3, max_population=3)  # how a search with more workers splits them
    assert metrics(chunked) == metrics(crowd)


def test_batched_population_equals_the_per_model_fallback():
    batched = _task(DropBN).evaluate(LOSSES, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        looped = _task(Branchy).evaluate(LOSSES, seed=1)
    reasons = [str(w.message) for w in caught if issubclass(w.category, TaskWarning)]
    assert len(reasons) == 1 and "vmap cannot batch model Branchy" in reasons[0]
    assert "data-dependent control flow" in reasons[0]
    assert metrics(looped) == pytest.approx(metrics(batched), abs=1e-12)


def test_dropout_masks_are_drawn_from_the_seed_and_differ_per_model_when_asked():
    same = _task(DropBN)
    assert metrics(same.evaluate([CE, CE], seed=0)) == metrics(same.evaluate([CE], seed=0)) * 2
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    for randomness, equal in (("same", True), ("different", False)):
        pop = PopulationModel(same.model_source, "multiclass", 2, seed=0, randomness=randomness)
        z = pop(x)  # train mode: dropout active; two identical models
        assert torch.equal(z[0], z[1]) == equal
        assert torch.equal(pop(x, train=False)[0], pop(x, train=False)[1])  # no dropout when scoring
    state = torch.get_rng_state()
    same.evaluate([CE], seed=0, steps=5)
    assert torch.equal(state, torch.get_rng_state())


def test_batchnorm_running_statistics_are_per_model():
    t = _task(DropBN)
    pop = PopulationModel(t.model_source, "multiclass", 2, seed=0)
    with torch.no_grad():
        pop.params[pop.param_names.index("body.0.weight")][1].mul_(3.0)  # model 1 differs from model 0
    pop(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)))
    mean = pop.buffers["body.1.running_mean"]
    assert mean.shape == (2, 32) and not torch.equal(mean[0], mean[1])
    assert pop.buffers["body.1.num_batches_tracked"].tolist() == [1, 1]


def test_one_diverging_model_is_masked_without_touching_the_others():
    t = _task(DropBN)
    clean = t.evaluate(LOSSES[:4], seed=0)
    mixed = t.evaluate([LOSSES[0], INFINITE, *LOSSES[1:4]], seed=0)
    bad = mixed.pop(1)
    assert bad.status == "diverged" and math.isnan(bad.metric)
    assert metrics(mixed) == metrics(clean)


def test_spec_fast_path_equals_the_torch_func_path():
    kw = dict(kind="multiclass", model="mlp:16", steps=40, batch_size=32)
    fast = Task.from_arrays(*_data(), **kw).evaluate(LOSSES[:4], seed=2)
    func = Task.from_arrays(*_data(), fast_path=False, **kw).evaluate(LOSSES[:4], seed=2)
    assert metrics(func) == pytest.approx(metrics(fast), abs=2.5 / 100)  # rounding apart: <= 2 val samples
    assert sum(a.metric == b.metric for a, b in zip(fast, func)) >= 3


# ----------------------------------------------------------------------------- model forms
def test_model_forms_class_factory_and_template():
    by_class = _task(DropBN).evaluate([CE], seed=0)[0].metric
    by_factory = _task(lambda: DropBN()).evaluate([CE], seed=0)[0].metric
    assert by_factory == by_class  # both built under torch's RNG seeded from the seed
    template = DropBN()
    t = _task(template)
    first = t.model_source.make(0)
    assert torch.equal(first.body[0].weight, t.model_source.make(0).body[0].weight)
    assert not torch.equal(first.body[0].weight, t.model_source.make(1).body[0].weight)  # re-initialised per seed
    assert t.evaluate([CE], seed=0)[0].ok
    with torch.no_grad():
        template.body[0].weight.fill_(7.0)  # the task keeps its own copy
    assert not torch.equal(t.model_source.make(0).body[0].weight, template.body[0].weight)


def test_a_module_without_reset_parameters_keeps_the_template_values():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.full((8, 3), 0.1))

        def forward(self, x):
            return x @ self.w

    t = _task(Scale())
    assert torch.equal(t.model_source.make(0).w, t.model_source.make(5).w)


def test_sequences_channels_and_images_with_their_own_models():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2, 16))
    y = (X[:, 0, :8].mean(axis=1) > 0).astype(int)

    class Conv1(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 3, padding=1)
            self.out = nn.Linear(64, 1)

        def forward(self, x):
            return self.out(torch.relu(self.conv(x)).flatten(1))

    t = Task.from_arrays(X[:200], y[:200], X[200:], y[200:], kind="binary", model=Conv1, steps=30, batch_size=32)
    assert t.sample_shape == (2, 16)
    assert np.allclose(t.X_train.mean(axis=(0, 2)), 0, atol=1e-5)  # standardised per channel
    assert all(r.ok for r in t.evaluate([CE, "(p-y)**2"], seed=0))
    images = rng.normal(size=(120, 1, 6, 6))
    labels = (images[:, 0, :3].mean(axis=(1, 2)) > 0).astype(int)
    cnn = lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))  # noqa: E731
    ti = Task.from_arrays(images[:80], labels[:80], images[80:], labels[80:], kind="multiclass", model=cnn,
                          steps=20, batch_size=16)
    assert ti.evaluate([CE], seed=0)[0].ok
    seq = Task.from_arrays(X[:200, 0], y[:200], X[200:, 0], y[200:], kind="binary", steps=10)  # [N, L], default MLP
    assert seq.evaluate([CE], seed=0)[0].ok


def test_tensors_datasets_and_standardize_false():
    X_tr, y_tr, X_va, y_va, _, _ = _data()
    from_tensors = Task.from_arrays(torch.tensor(X_tr), torch.tensor(y_tr), torch.tensor(X_va), torch.tensor(y_va),
                                    kind="multiclass", steps=10)
    from_arrays = Task.from_arrays(X_tr, y_tr, X_va, y_va, kind="multiclass", steps=10)
    assert np.array_equal(from_tensors.X_train, from_arrays.X_train)
    ds_train = torch.utils.data.TensorDataset(torch.tensor(X_tr), torch.tensor(y_tr))
    ds_val = torch.utils.data.TensorDataset(torch.tensor(X_va), torch.tensor(y_va))
    from_ds = Task.from_datasets(ds_train, ds_val, kind="multiclass", steps=10)
    assert np.array_equal(from_ds.X_train, from_arrays.X_train) and np.array_equal(from_ds.y_val, from_arrays.y_val)
    raw = Task.from_arrays(X_tr * 10 + 3, y_tr, X_va, y_va, kind="multiclass", steps=10, standardize=False)
    assert np.allclose(raw.X_train, (X_tr * 10 + 3).astype(np.float32))
    with pytest.raises(TaskError, match="pass y_train=None"):
        Task.from_arrays(ds_train, y_tr, ds_val, None, kind="multiclass")


def test_a_user_metric_function_with_its_direction():
    def worst_class_recall(decisions, targets):
        return min(float(np.mean(decisions[targets == c] == c)) for c in np.unique(targets))

    t = _task(DropBN, metric=worst_class_recall, metric_direction="max")
    assert (t.metric, t.direction) == ("worst_class_recall", "max")
    res = t.evaluate([CE, "(p-y)**2"], seed=0)
    assert all(r.ok and 0 <= r.metric <= 1 for r in res)
    with pytest.raises(TaskError, match="metric_direction='max'"):
        _task(DropBN, metric=worst_class_recall)


# ----------------------------------------------------------------------------- bad input
def test_model_output_of_the_wrong_shape_is_the_tasks_error_naming_both_shapes():
    with pytest.raises(TaskError, match=r"output has shape \[8, 5\].*multiclass task needs \[8, 3\]"):
        _task(lambda: nn.Linear(8, 5))
    with pytest.raises(TaskError, match=r"regression task needs \[8\] or \[8, 1\]"):
        Task.from_arrays(*_data(), kind="regression", model=lambda: nn.Linear(8, 2))


def test_a_model_that_raises_on_the_first_batch():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch in my layer")

    with pytest.raises(TaskError, match="Broken raised RuntimeError on a batch of shape .*shape mismatch in my"):
        _task(Broken)
    with pytest.raises(TaskError, match="not an nn.Module"):
        _task(lambda: "not a model")
    with pytest.raises(TaskError, match="an nn.Module subclass, a zero-argument factory"):
        _task(42)


def test_bad_labels_and_non_finite_data():
    X_tr, y_tr, X_va, y_va, _, _ = _data()
    with pytest.raises(TaskError, match="integer class labels"):
        Task.from_arrays(X_tr, y_tr + 0.5, X_va, y_va, kind="multiclass")
    with pytest.raises(TaskError, match="must be 0/1"):
        Task.from_arrays(X_tr, y_tr + 1, X_va, y_va, kind="binary")
    bad = X_tr.copy()
    bad[3, 2] = np.inf
    with pytest.raises(TaskError, match="1 NaN or infinite values"):
        Task.from_arrays(bad, y_tr, X_va, y_va, kind="multiclass")


def test_fingerprint_changes_with_the_data_and_survives_pickling():
    import pickle

    a = _task(DropBN)
    assert a.fingerprint() == _task(DropBN).fingerprint()
    X_tr, y_tr, X_va, y_va, X_te, y_te = _data()
    y_tr = y_tr.copy()
    y_tr[0] = (y_tr[0] + 1) % 3
    changed = Task.from_arrays(X_tr, y_tr, X_va, y_va, X_te, y_te, kind="multiclass", model=DropBN, steps=40,
                               batch_size=32)
    assert changed.fingerprint() != a.fingerprint()
    assert pickle.loads(pickle.dumps(a)).fingerprint() == a.fingerprint()
