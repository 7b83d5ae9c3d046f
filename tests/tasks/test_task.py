"""Task construction: validation, split hygiene, standardisation, pickling, the built-ins."""
import pickle

import numpy as np
import pytest

from lossforge.primitives import LossforgeError
from lossforge.tasks import Task, TaskError, get, names, tasks_table
from lossforge.tasks.builtin import _split


def _data(n=60, d=3, seed=0, kind="multiclass"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, 3, size=n) if kind == "multiclass" else X @ np.arange(1, d + 1)
    return X, y


def _task(**kw):
    Xtr, ytr = _data(60)
    Xva, yva = _data(20, seed=1)
    args = dict(kind="multiclass", metric="accuracy", model="mlp:8", steps=5, batch_size=16)
    args.update(kw)
    return Task.from_arrays(Xtr, ytr, Xva, yva, **args)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("change, message", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=2.5), "steps must be a positive integer"),
    (dict(batch_size=-1), "batch_size must be a positive integer"),
    (dict(lr=0), "lr must be a positive finite number"),
    (dict(lr=float("nan")), "lr must be a positive finite number"),
    (dict(metric="mse"), "metric 'mse' does not apply to a multiclass task"),
    (dict(metric="acuracy"), "did you mean 'accuracy'"),
    (dict(kind="multiclas"), "did you mean 'multiclass'"),
    (dict(optimizer="adma"), "did you mean 'adam'"),
    (dict(model="mlp:0"), "every width must be positive"),
    (dict(model="cnn:8"), "segmentation tasks need a fully convolutional"),
    (dict(model="transformer"), "unknown model"),
    (dict(momentum=0.9), "momentum applies to optimizer 'sgd' only"),
])
def test_bad_options_raise_task_error_naming_the_fix(change, message):
    with pytest.raises(TaskError, match=message):
        _task(**change)


def test_bad_data_raises_task_error():
    X, y = _data(30)
    Xv, yv = _data(10, seed=1)
    with pytest.raises(TaskError, match="X_train has 30 samples but y_train has 29"):
        Task.from_arrays(X, y[:-1], Xv, yv, kind="multiclass")
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(TaskError, match="X_train contains 1 NaN"):
        Task.from_arrays(Xn, y, Xv, yv, kind="multiclass")
    with pytest.raises(TaskError, match="y_val contains"):
        Task.from_arrays(X, y, Xv, np.where(yv > 0, yv, np.inf), kind="multiclass")
    with pytest.raises(TaskError, match="integer class labels"):
        Task.from_arrays(X, y + 0.5, Xv, yv, kind="multiclass")
    with pytest.raises(TaskError, match="must be 0/1"):
        Task.from_arrays(X, y, Xv, yv, kind="binary")
    with pytest.raises(TaskError, match="sample shape"):
        Task.from_arrays(X, y, Xv[:, :2], yv, kind="multiclass")
    with pytest.raises(TaskError, match="give both X_test and y_test"):
        Task.from_arrays(X, y, Xv, yv, X_test=Xv, kind="multiclass")
    with pytest.raises(TaskError, match="single class"):
        Task.from_arrays(X, np.zeros(30), Xv, yv, kind="multiclass")
    with pytest.raises(TaskError, match="not a numeric array"):
        Task.from_arrays(np.full(X.shape, "a"), y, Xv, yv, kind="multiclass")


def test_task_error_is_a_lossforge_key_and_value_error():
    with pytest.raises(TaskError) as info:
        get("digts")
    assert isinstance(info.value, (LossforgeError, KeyError, ValueError))
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert "did you mean 'digits'" in str(info.value) and not str(info.value).startswith("'")


# ----------------------------------------------------------------------------- splits and standardisation
def test_builtin_split_is_disjoint_complete_and_fixed():
    ids = np.arange(500, dtype=float)[:, None]
    y = np.arange(500) % 5
    a = _split(ids, y, stratify=True)
    b = _split(ids, y, stratify=True)
    parts = [set(a[i][:, 0]) for i in (0, 2, 4)]
    assert all(not (p & q) for i, p in enumerate(parts) for q in parts[i + 1:])
    assert set().union(*parts) == set(range(500))
    assert [len(p) for p in parts] == [300, 100, 100]
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "friedman_outliers", "quantile90"])
def test_builtin_splits_share_no_samples(name):
    t = get(name)
    train = {row.tobytes() for row in t.X_train}
    assert not any(row.tobytes() in train for row in t.X_val)
    assert not any(row.tobytes() in train for row in t.X_test)


def test_standardisation_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    Xtr = rng.normal(5, 2, size=(200, 4))
    Xva = rng.normal(50, 20, size=(50, 4))  # a very different validation distribution
    ytr = (Xtr[:, 0] > 5).astype(int)
    yva = (Xva[:, 0] > 50).astype(int)
    t = Task.from_arrays(Xtr, ytr, Xva, yva, kind="binary")
    np.testing.assert_allclose(t.feature_mean[0], Xtr.mean(0))
    np.testing.assert_allclose(t.X_train.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(t.X_train.std(0), 1, atol=1e-5)
    np.testing.assert_allclose(t.X_val, ((Xva - Xtr.mean(0)) / Xtr.std(0)).astype(np.float32), rtol=1e-5)
    # Changing the validation data leaves the training features untouched.
    t2 = Task.from_arrays(Xtr, ytr, Xva * 3, yva, kind="binary")
    assert np.array_equal(t.X_train, t2.X_train)


def test_regression_targets_standardised_for_training_metric_in_original_units():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2))
    y = 1000 * X[:, 0] + 5000 + rng.normal(size=300)
    t = Task.from_arrays(X[:200], y[:200], X[200:], y[200:], kind="regression", metric="mae", steps=300,
                         batch_size=32, lr=1e-2, model="linear")
    assert t.target_mean == pytest.approx(y[:200].mean()) and t.target_std == pytest.approx(y[:200].std())
    assert np.array_equal(t.y_val, y[200:])  # kept in original units
    (res,) = t.evaluate(["(p-y)**2"])
    assert res.ok and res.metric < 0.05 * np.abs(y[200:] - y[200:].mean()).mean()


def test_constant_features_do_not_divide_by_zero():
    X, y = _data(40)
    X[:, 1] = 7.0
    t = Task.from_arrays(X, y, X, y, kind="multiclass")
    assert np.all(t.X_train[:, 1] == 0) and np.all(np.isfinite(t.X_val))


def test_arrays_are_read_only():
    t = _task()
    with pytest.raises(ValueError):
        t.X_train[0, 0] = 1.0


# ----------------------------------------------------------------------------- built-ins
def test_builtin_names_properties_and_table():
    assert names()[:2] == ["digits", "digits_noisy"] and len(names()) >= 10
    t = get("digits")
    assert (t.kind, t.metric, t.direction, t.steps, t.batch_size) == ("multiclass", "accuracy", "max", 500, 64)
    assert t.describe_model() == "mlp 64-64-10" and t.expression_space == "probability"
    assert t.baseline == "cross_entropy" and get("breast_cancer").baseline == "bce_with_logits"
    assert get("shapes").baseline == "bce_with_logits" and get("diabetes").baseline == "mse"
    assert get("diabetes").expression_space == "real"
    table = tasks_table()
    for n in names():
        assert n in table
    assert "500 x 64" in table and "pinball:0.9" in table


def test_digits_noisy_flips_40_percent_of_training_labels_only():
    clean, noisy = get("digits"), get("digits_noisy")
    assert np.array_equal(clean.X_train, noisy.X_train)
    flipped = np.mean(clean.y_train != noisy.y_train)
    assert flipped == pytest.approx(0.4, abs=0.002)
    assert np.array_equal(clean.y_val, noisy.y_val) and np.array_equal(clean.y_test, noisy.y_test)


def test_task_pickles_small_and_round_trips():
    t = get("digits")
    t.evaluate(["p"], steps=1)  # fills the device tensor cache, which must not be pickled
    blob = pickle.dumps(t)
    assert len(blob) < 1.2 * (t.X_train.nbytes + t.X_val.nbytes + t.X_test.nbytes) + 100_000
    u = pickle.loads(blob)
    assert u.name == "digits" and np.array_equal(u.X_val, t.X_val) and u.metric == t.metric
    assert not u.X_train.flags.writeable
    a = t.evaluate(["-y*log(p)"], steps=20)[0].metric
    b = u.evaluate(["-y*log(p)"], steps=20)[0].metric
    assert a == b


def test_cli_prints_the_tasks_table(capsys):
    from lossforge.search.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "shapes" in out
