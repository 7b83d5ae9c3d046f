"""Task metrics, computed for a whole population at once.

Every metric takes the decisions (class indices or 0/1 for classification,
predictions in the original units for regression) of K models as a ``[K, N]``
tensor and the targets as ``[N]``, and returns ``[K]`` float64 values.  They
agree with scikit-learn's definitions (tested): balanced accuracy is the mean
recall over the classes present in the targets; macro-F1 averages over the
classes present in the targets or the predictions; IoU is the foreground
intersection over union pooled over all samples (1 when both are empty).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lossforge.primitives import did_you_mean

from .errors import TaskError

CLASSIFICATION = ("multiclass", "binary")


@dataclass(frozen=True)
class Metric:
    """A metric: its name (with parameter, e.g. ``pinball:0.9``), direction and kinds."""

    name: str
    direction: str  # "max" or "min"
    kinds: tuple[str, ...]
    fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
    description: str

    def __call__(self, decisions: torch.Tensor, targets: torch.Tensor, num_classes: int = 2) -> torch.Tensor:
        return self.fn(decisions, targets, num_classes)

    def better(self, a: float, b: float) -> bool:
        """True if ``a`` is strictly better than ``b``."""
        return a > b if self.direction == "max" else a < b


def _accuracy(d, t, c):
    return (d == t).double().mean(dim=1)


def _confusion_counts(d, t, c):
    """True positives, predicted counts and true counts per class: [K, C] each."""
    k = d.shape[0]
    one = torch.ones_like(d, dtype=torch.float64)
    tp = torch.zeros(k, c, dtype=torch.float64, device=d.device)
    tp.scatter_add_(1, d, (d == t).double())
    pred = torch.zeros(k, c, dtype=torch.float64, device=d.device).scatter_add_(1, d, one)
    true = torch.bincount(t, minlength=c).double().to(d.device).expand(k, c)
    return tp, pred, true


def _balanced_accuracy(d, t, c):
    tp, _, true = _confusion_counts(d, t, c)
    present = true > 0
    recall = torch.where(present, tp / true.clamp(min=1), torch.zeros_like(tp))
    return recall.sum(dim=1) / present.sum(dim=1)


def _macro_f1(d, t, c):
    tp, pred, true = _confusion_counts(d, t, c)
    denom = pred + true  # 2TP + FP + FN
    used = denom > 0
    f1 = torch.where(used, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    return f1.sum(dim=1) / used.sum(dim=1).clamp(min=1)


def _iou(d, t, c):
    d, t = d.bool(), t.bool()
    inter = (d & t).double().sum(dim=1)
    union = (d | t).double().sum(dim=1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _dice(d, t, c):
    d, t = d.bool(), t.bool()
    inter = (d & t).double().sum(dim=1)
    total = d.double().sum(dim=1) + t.double().sum()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def _mse(d, t, c):
    return (d.double() - t.double()).pow(2).mean(dim=1)


def _rmse(d, t, c):
    return _mse(d, t, c).sqrt()


def _mae(d, t, c):
    return (d.double() - t.double()).abs().mean(dim=1)


def _r2(d, t, c):
    t = t.double()
    ss_res = (d.double() - t).pow(2).sum(dim=1)
    ss_tot = (t - t.mean()).pow(2).sum()
    return 1 - ss_res / ss_tot.clamp(min=1e-300)


def _pinball(q: float):
    def fn(d, t, c):
        r = t.double() - d.double()
        return torch.maximum(q * r, (q - 1) * r).mean(dim=1)

    return fn


_SIMPLE: dict[str, tuple[str, tuple[str, ...], Callable, str]] = {
    "accuracy": ("max", ("multiclass", "binary", "segmentation"), _accuracy, "fraction correct (pixels for segmentation)"),
    "balanced_accuracy": ("max", CLASSIFICATION, _balanced_accuracy, "mean recall over classes"),
    "macro_f1": ("max", CLASSIFICATION, _macro_f1, "F1 averaged over classes"),
    "iou": ("max", ("binary", "segmentation"), _iou, "foreground intersection over union"),
    "dice": ("max", ("binary", "segmentation"), _dice, "foreground Dice coefficient"),
    "mse": ("min", ("regression",), _mse, "mean squared error (original units)"),
    "rmse": ("min", ("regression",), _rmse, "root mean squared error (original units)"),
    "mae": ("min", ("regression",), _mae, "mean absolute error (original units)"),
    "r2": ("max", ("regression",), _r2, "coefficient of determination"),
}
METRIC_NAMES = tuple(_SIMPLE) + ("pinball",)


def metrics_for(kind: str) -> list[str]:
    """Metric names valid for a task kind."""
    out = [n for n, (_, kinds, _, _) in _SIMPLE.items() if kind in kinds]
    if kind == "regression":
        out.append("pinball:<quantile>")
    return out


def get_metric(spec: str, kind: str | None = None) -> Metric:
    """A metric from its name: ``"accuracy"``, ``"mae"``, ``"pinball:0.9"`` ...

    With ``kind``, the metric must apply to that kind of task.
    """
    if not isinstance(spec, str) or not spec:
        raise TaskError(f"metric must be a metric name such as 'accuracy', got {spec!r}")
    name, _, param = spec.partition(":")
    name = name.strip().lower()
    if name == "pinball":
        try:
            q = float(param) if param else 0.5
        except ValueError:
            raise TaskError(f"metric '{spec}': the quantile after 'pinball:' must be a number, e.g. 'pinball:0.9'") from None
        if not 0.0 < q < 1.0:
            raise TaskError(f"metric '{spec}': the quantile must be strictly between 0 and 1")
        metric = Metric(f"pinball:{q:g}", "min", ("regression",), _pinball(q), f"pinball (quantile) loss at {q:g}")
    elif name in _SIMPLE and not param:
        direction, kinds, fn, description = _SIMPLE[name]
        metric = Metric(name, direction, kinds, fn, description)
    else:
        raise TaskError(f"unknown metric '{spec}'{did_you_mean(name, METRIC_NAMES)}; "
                        f"known metrics: {', '.join(METRIC_NAMES)} (pinball takes a quantile: 'pinball:0.9')")
    if kind is not None and kind not in metric.kinds:
        raise TaskError(f"metric '{metric.name}' does not apply to a {kind} task; "
                        f"use one of: {', '.join(metrics_for(kind))}")
    return metric


def user_metric(fn: Callable, direction: str | None, kind: str) -> Metric:
    """A user's ``metric(decisions, targets) -> float`` as a population metric.

    ``decisions`` and ``targets`` reach ``fn`` as numpy arrays, one model at a
    time: class indices (or 0/1) for classification, predictions in the
    original units for regression.  ``direction`` is ``"max"`` or ``"min"``.
    """
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if direction not in ("max", "min"):
        raise TaskError(f"metric {name!r} is a function: give its direction, metric_direction='max' (higher is "
                        f"better) or 'min', got {direction!r}")

    def population(d: torch.Tensor, t: torch.Tensor, c: int) -> torch.Tensor:
        targets = t.cpu().numpy()
        values = []
        for row in d.cpu().numpy():
            try:
                v = float(fn(row, targets))
            except Exception as exc:  # the user's metric failed: that model has no score
                raise TaskError(f"metric {name!r} raised {type(exc).__name__}: {exc}") from None
            values.append(v)
        return torch.tensor(values, dtype=torch.float64)

    return Metric(name, direction, (kind,), population, f"user metric {name} ({direction})")
