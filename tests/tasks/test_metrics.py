import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from lossforge.tasks import TaskError, get_metric


@pytest.fixture
def classification():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, size=200)
    d = np.where(rng.random((3, 200)) < 0.7, t, rng.integers(0, 4, size=(3, 200)))
    d[2] = np.where(d[2] == 3, 0, d[2])  # a model that never predicts class 3
    return torch.tensor(d), torch.tensor(t)


@pytest.mark.parametrize("name, reference", [
    ("accuracy", skm.accuracy_score),
    ("balanced_accuracy", skm.balanced_accuracy_score),
    ("macro_f1", lambda t, d: skm.f1_score(t, d, average="macro")),
])
def test_classification_metrics_match_sklearn(classification, name, reference):
    d, t = classification
    got = get_metric(name)(d, t, 4).numpy()
    want = [reference(t.numpy(), row) for row in d.numpy()]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_iou_and_dice_match_sklearn():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 2, size=500)
    d = rng.integers(0, 2, size=(2, 500))
    got = get_metric("iou")(torch.tensor(d), torch.tensor(t)).numpy()
    np.testing.assert_allclose(got, [skm.jaccard_score(t, row) for row in d], rtol=1e-12)
    got = get_metric("dice")(torch.tensor(d), torch.tensor(t)).numpy()
    np.testing.assert_allclose(got, [skm.f1_score(t, row) for row in d], rtol=1e-12)
    empty = torch.zeros(1, 10, dtype=torch.long)
    assert get_metric("iou")(empty, empty[0]).item() == 1.0  # nothing to find, nothing found


@pytest.mark.parametrize("name, reference", [
    ("mse", skm.mean_squared_error),
    ("mae", skm.mean_absolute_error),
    ("r2", skm.r2_score),
    ("pinball:0.9", lambda t, d: skm.mean_pinball_loss(t, d, alpha=0.9)),
])
def test_regression_metrics_match_sklearn(name, reference):
    rng = np.random.default_rng(2)
    t = rng.normal(size=100) * 10
    d = t + rng.normal(size=(3, 100)) * 3
    got = get_metric(name)(torch.tensor(d), torch.tensor(t)).numpy()
    np.testing.assert_allclose(got, [reference(t, row) for row in d], rtol=1e-10)


def test_metric_errors_name_the_fix():
    with pytest.raises(TaskError, match="did you mean 'accuracy'"):
        get_metric("acuracy")
    with pytest.raises(TaskError, match="does not apply to a regression task"):
        get_metric("accuracy", "regression")
    with pytest.raises(TaskError, match="strictly between 0 and 1"):
        get_metric("pinball:1.5")
    assert get_metric("pinball:0.9").name == "pinball:0.9"
    assert get_metric("mae").direction == "min" and get_metric("iou").direction == "max"
