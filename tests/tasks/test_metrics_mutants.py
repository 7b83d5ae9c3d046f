"""Metrics: edge cases the sklearn comparisons do not reach (absent classes, empty
masks, defaults, parsing of metric names, user metrics, directions)."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from lossforge.tasks import TaskError
from lossforge.tasks.metrics import METRIC_NAMES, get_metric, metrics_for, user_metric


def _t(x):
    return torch.tensor(x)


def test_accuracy_per_model_rows():
    d = _t([[0, 1, 2, 2], [0, 0, 0, 0]])
    t = _t([0, 1, 2, 1])
    assert get_metric("accuracy")(d, t, 3).tolist() == [0.75, 0.25]
    assert get_metric("accuracy")(d, t, 3).dtype == torch.float64


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn: "y_pred contains classes not in y_true"
def test_balanced_accuracy_and_macro_f1_with_classes_absent_from_targets_or_predictions():
    # class 3 is predicted but never a target; class 2 is neither predicted nor a target (num_classes 4)
    t = np.array([0, 0, 1, 1, 1, 0])
    d = np.array([[0, 3, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    got = get_metric("balanced_accuracy")(_t(d), _t(t), 4).numpy()
    want = [skm.balanced_accuracy_score(t, row) for row in d]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    got = get_metric("macro_f1")(_t(d), _t(t), 4).numpy()
    want = [skm.f1_score(t, row, average="macro", labels=sorted(set(t) | set(row))) for row in d]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[1] == pytest.approx(0.5 * (2 * 3 / (6 + 3)))  # class 0: F1 0, class 1: 2TP/(pred+true)


def test_binary_metrics_with_the_default_two_classes():
    d, t = _t([[1, 0, 1, 1]]), _t([1, 0, 0, 1])
    assert get_metric("balanced_accuracy")(d, t).item() == pytest.approx(0.75)
    assert get_metric("macro_f1")(d, t).item() == pytest.approx((2 / 3 + 0.8) / 2)


def test_iou_and_dice_values_and_empty_masks():
    d, t = _t([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]), _t([1, 0, 0, 0])
    assert get_metric("iou")(d, t).tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert get_metric("dice")(d, t).tolist() == pytest.approx([2 / 3, 0.0, 0.0])
    empty = torch.zeros(2, 5, dtype=torch.long)
    assert get_metric("dice")(empty, empty[0]).tolist() == [1.0, 1.0]
    assert get_metric("iou")(empty, empty[0]).tolist() == [1.0, 1.0]


def test_regression_metrics_exact_values():
    d = _t([[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]])
    t = _t([1.0, 3.0, 2.0])
    assert get_metric("mse")(d, t).tolist() == pytest.approx([5 / 3, 14 / 3])
    assert get_metric("rmse")(d, t).tolist() == pytest.approx([(5 / 3) ** 0.5, (14 / 3) ** 0.5])
    assert get_metric("mae")(d, t).tolist() == pytest.approx([1.0, 2.0])
    assert get_metric("r2")(d, t).tolist() == pytest.approx([1 - 5 / 2, 1 - 14 / 2])
    const = _t([2.0, 2.0, 2.0])
    assert get_metric("r2")(_t([[2.0, 2.0, 2.0]]), const).item() == 1.0  # no residual, no variance
    assert get_metric("rmse")(d, t).dtype == torch.float64


@pytest.mark.parametrize("spec, q", [("pinball", 0.5), ("pinball:0.1", 0.1), ("Pinball:0.9", 0.9)])
def test_pinball_quantiles_and_default(spec, q):
    t = np.array([1.0, -2.0, 0.5, 3.0])
    d = np.array([[0.0, 0.0, 0.0, 0.0], [2.0, -1.0, 1.0, 5.0]])
    m = get_metric(spec)
    assert m.name == f"pinball:{q:g}" and m.direction == "min" and m.kinds == ("regression",)
    np.testing.assert_allclose(m(_t(d), _t(t)).numpy(), [skm.mean_pinball_loss(t, row, alpha=q) for row in d],
                               rtol=1e-12)


@pytest.mark.parametrize("spec, fragment", [
    ("pinball:abc", "must be a number"),
    ("pinball:0", "strictly between 0 and 1"),
    ("pinball:1", "strictly between 0 and 1"),
    ("pinball:-0.5", "strictly between 0 and 1"),
    ("mae:2", "unknown metric 'mae:2'"),
    ("", "metric must be a metric name"),
    (None, "metric must be a metric name"),
    ("nope", "known metrics: accuracy"),
])
def test_bad_metric_names_raise_task_error(spec, fragment):
    with pytest.raises(TaskError) as info:
        get_metric(spec)
    assert fragment in str(info.value)


def test_names_are_normalised_and_kinds_checked():
    m = get_metric("  MAE ")
    assert m.name == "mae" and m.direction == "min"
    assert get_metric("accuracy", "segmentation").kinds == ("multiclass", "binary", "segmentation")
    assert get_metric("iou", "binary").name == "iou"
    with pytest.raises(TaskError, match="use one of: mse, rmse, mae, r2, pinball:<quantile>"):
        get_metric("iou", "regression")
    with pytest.raises(TaskError, match="does not apply to a multiclass task"):
        get_metric("pinball:0.3", "multiclass")
    assert set(METRIC_NAMES) == {"accuracy", "balanced_accuracy", "macro_f1", "iou", "dice", "mse", "rmse",
                                 "mae", "r2", "pinball"}


def test_metrics_for_each_kind():
    assert metrics_for("multiclass") == ["accuracy", "balanced_accuracy", "macro_f1"]
    assert metrics_for("binary") == ["accuracy", "balanced_accuracy", "macro_f1", "iou", "dice"]
    assert metrics_for("segmentation") == ["accuracy", "iou", "dice"]
    assert metrics_for("regression") == ["mse", "rmse", "mae", "r2", "pinball:<quantile>"]


def test_better_follows_the_direction_and_is_strict():
    hi, lo = get_metric("accuracy"), get_metric("mse")
    assert hi.better(0.9, 0.8) and not hi.better(0.8, 0.9) and not hi.better(0.8, 0.8)
    assert lo.better(0.8, 0.9) and not lo.better(0.9, 0.8) and not lo.better(0.8, 0.8)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "iou", "dice", "r2"):
        assert get_metric(name).direction == "max"
    for name in ("mse", "rmse", "mae"):
        assert get_metric(name).direction == "min"


def test_user_metric_runs_per_model_on_numpy_and_reports_failures():
    seen = []

    def hits(decisions, targets):
        seen.append((type(decisions), decisions.shape, targets.shape))
        return float((decisions == targets).sum())

    m = user_metric(hits, "max", "binary")
    assert m.name == "hits" and m.direction == "max" and m.kinds == ("binary",)
    assert "hits" in m.description
    out = m(_t([[1, 0, 1], [0, 0, 0]]), _t([1, 0, 0]))
    assert out.dtype == torch.float64 and out.tolist() == [2.0, 2.0]
    assert seen == [(np.ndarray, (3,), (3,))] * 2
    assert user_metric(hits, "min", "regression").better(1.0, 2.0)

    def broken(d, t):
        raise ZeroDivisionError("boom")

    with pytest.raises(TaskError, match=r"metric 'broken' raised ZeroDivisionError: boom"):
        user_metric(broken, "min", "regression")(_t([[1.0]]), _t([1.0]))
    with pytest.raises(TaskError, match="give its direction.*got None"):
        user_metric(hits, None, "binary")
    with pytest.raises(TaskError, match="got 'up'"):
        user_metric(hits, "up", "binary")


def test_user_metric_name_of_a_callable_object():
    class Scorer:
        def __call__(self, d, t):
            return 1.0

    assert user_metric(Scorer(), "max", "binary").name == "Scorer"


def test_class_counts_live_on_the_decisions_device(monkeypatch):
    # The meta device stands in for a GPU: every tensor the classification metrics make
    # must be on the decisions' device (torch.bincount has no meta kernel; a stand-in does).
    monkeypatch.setattr(torch, "bincount", lambda t, minlength=0: torch.zeros(minlength, dtype=torch.long,
                                                                               device=t.device))
    d, t = torch.zeros(2, 5, dtype=torch.long, device="meta"), torch.zeros(5, dtype=torch.long, device="meta")
    for name in ("balanced_accuracy", "macro_f1", "accuracy", "iou", "dice"):
        out = get_metric(name)(d, t, 3)
        assert out.device.type == "meta" and out.shape == (2,), name


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn: "y_pred contains classes not in y_true"
def test_small_counts_and_small_variances():
    # a class with a single target sample is present, with recall tp / 1
    got = get_metric("balanced_accuracy")(_t([[0, 0, 1, 2], [0, 0, 1, 0]]), _t([0, 0, 1, 2]), 3).tolist()
    assert got == [1.0, pytest.approx(2 / 3)]
    assert get_metric("balanced_accuracy")(_t([[0, 0, 1, 2]]), _t([0, 0, 1, 1]), 3).item() == \
        pytest.approx(skm.balanced_accuracy_score([0, 0, 1, 1], [0, 0, 1, 2]))
    # one foreground pixel, found: IoU 1
    assert get_metric("iou")(_t([[1, 0]]), _t([1, 0])).item() == 1.0
    # a single class in targets and predictions: macro-F1 over that one class
    assert get_metric("macro_f1")(_t([[0, 0, 0]]), _t([0, 0, 0]), 2).item() == 1.0
    # targets with a variance far below 1
    t = np.array([0.0, 0.1, 0.2])
    d = np.array([[0.0, 0.1, 0.3]])
    assert get_metric("r2")(_t(d), _t(t)).item() == pytest.approx(skm.r2_score(t, d[0]))


def test_descriptions_and_the_full_list_of_known_metrics():
    assert get_metric("mae").description == "mean absolute error (original units)"
    assert get_metric("accuracy").description == "fraction correct (pixels for segmentation)"
    assert get_metric("pinball:0.9").description == "pinball (quantile) loss at 0.9"
    with pytest.raises(TaskError) as info:
        get_metric("nope")
    assert str(info.value).endswith(
        "known metrics: accuracy, balanced_accuracy, macro_f1, iou, dice, mse, rmse, mae, r2, pinball "
        "(pinball takes a quantile: 'pinball:0.9')")
