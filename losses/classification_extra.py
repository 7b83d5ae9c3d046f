"""Classification losses of the reviews' lists not covered elsewhere: weighted and
label-smoothing cross-entropy as their own entries, GHM-C, the zero-one metric-loss,
the Gini impurity of a soft split, and the sensitivity-specificity segmentation loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .classification import CrossEntropyLoss, _cross_entropy_expr, _weighted_cross_entropy, cross_entropy_loss
from .errors import LossInputError, LossParameterError
from .loss import CatalogueLoss, check_class_target, check_same_shape, in_range, reduce, reference_loss
from .segmentation import _SHAPE as _SEG_SHAPE
from .segmentation import class_mean, present_classes, probabilities_and_targets

_SHAPE = """
    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, d_1, ..., d_K)` logits.
        - Target: :math:`(N)` or :math:`(N, d_1, ..., d_K)` class indices in :math:`[0, C)` (``torch.long``).
        - Output: scalar; :math:`(N)` or :math:`(N, d_1, ..., d_K)` with ``reduction='none'``.
"""
_RED = "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n"


# ------------------------------------------------------------------ functional forms
def weighted_cross_entropy_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                                reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy with per-class weights; see :class:`WeightedCELoss`."""
    check_class_target(input, target)
    if weight is None:
        weight = torch.ones(input.shape[1], dtype=input.dtype, device=input.device)
    weight = torch.as_tensor(weight)
    if weight.dim() != 1:
        raise LossInputError(f"weight must be one weight per class, shape ({input.shape[1]},), got "
                             f"{tuple(weight.shape)}")
    return _weighted_cross_entropy(input, target, weight, reduction)


def ghm_c_loss(input: torch.Tensor, target: torch.Tensor, bins: float = 10, momentum: float = 0.0,
               reduction: str = "mean", acc_sum: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient-harmonized binary cross-entropy; see :class:`GHMCLoss`.  ``acc_sum`` is the
    running bin count that ``momentum > 0`` updates in place (the module keeps it)."""
    check_same_shape(input, target)
    GHMCLoss.check_params(bins=bins, momentum=momentum)
    if not bool(((target == 0) | (target == 1)).all()):
        raise LossInputError("target must hold 0/1 labels")
    n_bins = int(bins)
    t = target.to(input.dtype)
    g = (torch.sigmoid(input.detach()) - t).abs()  # the gradient norm of BCE with respect to the logit
    index = (g * n_bins).floor().long().clamp(max=n_bins - 1)
    counts = torch.bincount(index.flatten(), minlength=n_bins).to(input.dtype)
    total = float(max(g.numel(), 1))
    if momentum > 0:
        if acc_sum is None:
            raise LossParameterError("ghm_c with momentum > 0 keeps a running count: use the module "
                                     "(get('ghm_c').module(momentum=...)), or pass acc_sum")
        with torch.no_grad():
            seen = counts > 0
            acc_sum[seen] = momentum * acc_sum[seen] + (1 - momentum) * counts[seen]
        density = acc_sum.to(input.dtype)
    else:
        density = counts
    filled = (counts > 0).sum().clamp_min(1)
    weights = (total / density.clamp_min(1e-12))[index] / filled
    bce = F.binary_cross_entropy_with_logits(input, t, reduction="none")
    return reduce(weights.detach() * bce, reduction)


def zero_one_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """1 where the arg-max class is wrong, else 0; see :class:`ZeroOneLoss`."""
    check_class_target(input, target)
    wrong = (input.argmax(dim=1) != target).to(input.dtype)
    # connected to the input with a zero gradient, so that .backward() works (and does nothing)
    return reduce(wrong + 0 * (input - input.detach()).sum(dim=1), reduction)


def gini_impurity_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Gini impurity of a soft split of the batch; see :class:`GiniImpurityLoss`."""
    if input.dim() != 2:
        raise LossInputError(f"input must be [N, K] routing logits (K children of the split), got shape "
                             f"{tuple(input.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise LossInputError(f"target must hold integer class indices (torch.long), got dtype {target.dtype}")
    if target.shape != input.shape[:1]:
        raise LossInputError(f"input shape {tuple(input.shape)} needs target shape {tuple(input.shape[:1])}, "
                             f"got {tuple(target.shape)}")
    q = F.softmax(input, dim=1)                                    # [N, K]: sample n's share in child k
    onehot = F.one_hot(target.long()).to(input.dtype)              # [N, C]
    mass = q.sum(dim=0)                                            # [K]
    pi = (q.T @ onehot) / mass.clamp_min(1e-12)[:, None]          # [K, C]: class proportions per child
    return reduce((q * (1 - pi[:, target.long()].T)).sum(dim=1), reduction)


def sensitivity_specificity_loss(input: torch.Tensor, target: torch.Tensor, r: float = 0.05, eps: float = 1e-8,
                                 reduction: str = "mean") -> torch.Tensor:
    """Sensitivity-specificity loss per sample; see :class:`SensitivitySpecificityLoss`."""
    SensitivitySpecificityLoss.check_params(r=r, eps=eps)
    p, t = probabilities_and_targets(input, target)
    err = (t - p) ** 2
    sensitivity = (err * t).sum(dim=2) / (t.sum(dim=2) + eps)
    specificity = (err * (1 - t)).sum(dim=2) / ((1 - t).sum(dim=2) + eps)
    return reduce(class_mean(r * sensitivity + (1 - r) * specificity, present_classes(t)), reduction)


# ------------------------------------------------------------------ modules
class WeightedCELoss(CatalogueLoss):
    __doc__ = r"""Weighted cross-entropy: class :math:`c` weighs :math:`w_c`.

    The unreduced loss is :math:`w_y \cdot (-\log \mathrm{softmax}(z)_y)`, equal to
    ``F.cross_entropy(z, y, weight=w, reduction='none')`` (and ``'sum'``).  ``'mean'``
    averages over the samples, as every catalogue entry; torch's weighted ``'mean'``
    divides by :math:`\sum_n w_{y_n}` instead (``reduction='sum'`` divided by
    ``weight[target].sum()`` gives it).

    Args:
        weight: per-class weights, a sequence or tensor of :math:`C` values. Default: all 1.
""" + _RED + _SHAPE
    functional = staticmethod(weighted_cross_entropy_loss)

    def __init__(self, weight=None, *, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.get_default_dtype())
        if w is not None and (w.dim() != 1 or bool((w < 0).any())):
            raise LossParameterError(f"weight must be a 1-d sequence of non-negative per-class weights, got "
                                     f"{weight!r}")
        self.register_buffer("weight", w)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return weighted_cross_entropy_loss(input, target, self.weight, self.reduction)


class LabelSmoothingCELoss(CrossEntropyLoss):
    __doc__ = r"""Label-smoothing cross-entropy (Szegedy et al. 2016), smoothing 0.1 by default.

    The target puts :math:`1 - \varepsilon + \varepsilon / C` on the true class and
    :math:`\varepsilon / C` on each other one; the unreduced loss is
    :math:`-\sum_c ((1 - \varepsilon) [c = y] + \varepsilon / C) \log \mathrm{softmax}(z)_c`,
    equal to ``F.cross_entropy(z, y, label_smoothing=eps)`` (the ``cross_entropy``
    entry with ``label_smoothing=0.1``).

    Args:
        label_smoothing: :math:`\varepsilon`, in [0, 1]. Default: 0.1.
""" + _RED + _SHAPE
    defaults = {"label_smoothing": 0.1}
    functional = staticmethod(cross_entropy_loss)


class GHMCLoss(CatalogueLoss):
    __doc__ = r"""Gradient harmonizing mechanism for classification, GHM-C (Li, Liu & Wang 2019).

    With the gradient norm :math:`g = |\sigma(z) - y|` of each element's binary
    cross-entropy, split :math:`[0, 1]` into ``bins`` equal bins; an element whose
    bin holds :math:`n_b` of the :math:`M` elements (:math:`M` in total, :math:`k` bins
    non-empty) weighs :math:`\beta = M / (n_b k)`, and the unreduced loss is
    :math:`\beta \cdot \mathrm{BCE}(z, y)` (weights not differentiated).  ``'mean'``
    equals mmdetection's ``GHMC(bins, momentum)``.  With ``momentum > 0`` the module
    keeps an exponential moving average of the bin counts across calls (buffer
    ``acc_sum``).

    Args:
        bins: number of bins, a positive integer. Default: 10.
        momentum: the moving average's momentum, in [0, 1). Default: 0 (this batch's counts).
""" + _RED + """
    Shape:
        - Input: :math:`(N)` or :math:`(N, *)` logits.
        - Target: the same shape, 0/1 labels.
        - Output: scalar; the input's shape with ``reduction='none'``.
"""
    defaults = {"bins": 10.0, "momentum": 0.0}
    functional = staticmethod(ghm_c_loss)

    def __init__(self, *, reduction: str = "mean", **params: float):
        super().__init__(reduction=reduction, **params)
        self.register_buffer("acc_sum", torch.zeros(int(self.params["bins"]), dtype=torch.float64))

    @classmethod
    def check_params(cls, bins: float, momentum: float) -> None:
        if bins != int(bins) or bins < 1:
            raise LossParameterError(f"bins must be a positive integer, got {bins}")
        if not 0 <= momentum < 1:
            raise LossParameterError(f"momentum must be in [0, 1), got {momentum}")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ghm_c_loss(input, target, **self.params, reduction=self.reduction, acc_sum=self.acc_sum)


class ZeroOneLoss(CatalogueLoss):
    __doc__ = r"""Zero-one loss, a metric-loss: 1 for a misclassified sample, 0 otherwise.

    The unreduced loss is :math:`[\arg\max_c z_c \ne y]`, equal to
    ``sklearn.metrics.zero_one_loss(y, z.argmax(1), normalize=False)`` per sample;
    ``'mean'`` is the error rate.  It is **not differentiable**: its gradient is zero
    everywhere, so it measures a model and cannot train one.

    Args:
""" + _RED + _SHAPE
    functional = staticmethod(zero_one_loss)


class GiniImpurityLoss(CatalogueLoss):
    __doc__ = r"""Gini impurity of a soft split (Breiman et al. 1984, CART), a differentiable split criterion.

    Each sample :math:`n` goes to child :math:`k` of a split with probability
    :math:`q_{nk} = \mathrm{softmax}(z_n)_k`; child :math:`k` holds the class
    proportions :math:`\pi_{kc} = \sum_m q_{mk} [y_m = c] / \sum_m q_{mk}` and the Gini
    impurity :math:`G_k = 1 - \sum_c \pi_{kc}^2`.  The unreduced loss of sample
    :math:`n` is :math:`\sum_k q_{nk} (1 - \pi_{k y_n})`, so ``'mean'`` is the weighted
    impurity of the children, :math:`\sum_k (\sum_m q_{mk} / N) G_k`: with hard routing
    the CART split criterion, with one child (:math:`K = 1`) the impurity
    :math:`1 - \sum_c p_c^2` of the batch's labels (the review's ``gini_impurity.py``).

    Args:
""" + _RED + """
    Shape:
        - Input: :math:`(N, K)` routing logits over :math:`K \\ge 1` children.
        - Target: :math:`(N)` class indices.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
    functional = staticmethod(gini_impurity_loss)


class SensitivitySpecificityLoss(CatalogueLoss):
    __doc__ = r"""Sensitivity-specificity loss (Brosch et al. 2015).

    Per sample and class, with :math:`e = (t - p)^2` over the pixels,
    :math:`r \sum e\, t / \sum t + (1 - r) \sum e (1 - t) / \sum (1 - t)` (eps added to
    each denominator): the squared error on the foreground (sensitivity) and on
    the background (specificity); the unreduced loss is the mean over the classes
    present in the sample.

    Args:
        r: the weight of the sensitivity term, in [0, 1]. Default: 0.05 (the paper's).
        eps: added to the denominators. Default: 1e-8.
""" + _RED + _SEG_SHAPE
    defaults = {"r": 0.05, "eps": 1e-8}
    functional = staticmethod(sensitivity_specificity_loss)

    @classmethod
    def check_params(cls, r: float, eps: float) -> None:
        in_range("r", r, 0.0, 1.0, closed=True)
        if not eps >= 0:
            raise LossParameterError(f"eps must be >= 0, got {eps}")


_MULTI = dict(input="logits", target="index", task_kinds=("multiclass",))

ENTRIES = [
    reference_loss("weighted_ce", family="imbalance", formula="w_y*CE, per-class weights w", module=WeightedCELoss,
                   params={}, extra_args=("weight",), reference="torch.nn.CrossEntropyLoss(weight=...); "
                   "Li, Liu & Liu, A Survey of Loss Functions in Deep Learning, Mathematics 2025 (WCE)",
                   notes="needs per-class weights (a dataset statistic): no elementwise form", **_MULTI),
    reference_loss("label_smoothing_ce", family="multiclass",
                   formula="-sum_c ((1 - ls)*y_c + ls/C)*log(p_c), p = softmax(z), ls = 0.1",
                   module=LabelSmoothingCELoss, expression=_cross_entropy_expr, space="probability",
                   reference="Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016; "
                   "torch.nn.CrossEntropyLoss(label_smoothing=...)",
                   notes="the smoothing mass ls/C needs the number of classes, not a grammar terminal: no "
                   "expression for ls > 0", **_MULTI),
    reference_loss("ghm_c", family="imbalance", formula="beta*BCE(z, y), beta = M/(n_bin(g)*k), g = |sigmoid(z) - y|",
                   module=GHMCLoss, input="logits", target="binary", task_kinds=("binary",),
                   reference="Li, Liu & Wang, Gradient Harmonized Single-stage Detector, AAAI 2019; mmdetection GHMC",
                   notes="weights from the batch's gradient-norm histogram: no elementwise form"),
    reference_loss("zero_one", family="multiclass", formula="[argmax_c z_c != y] (zero gradient)", module=ZeroOneLoss,
                   reference="Li, Liu & Liu, A Survey of Loss Functions in Deep Learning, Mathematics 2025; "
                   "sklearn.metrics.zero_one_loss",
                   notes="metric-loss: not differentiable (zero gradient), for measuring, not training", **_MULTI),
    reference_loss("gini_impurity", family="multiclass", formula="sum_k q_k*(1 - pi_k[y]), mean = weighted child "
                   "impurity sum_k w_k*(1 - sum_c pi_kc**2)", module=GiniImpurityLoss, input="routing_logits",
                   target="index", task_kinds=(), reference="Breiman et al., Classification and Regression Trees, "
                   "1984; the review's gini_impurity.py; sklearn DecisionTreeClassifier(criterion='gini')",
                   notes="reference-only: a split criterion over the batch (routing logits), not a classifier loss"),
    reference_loss("sensitivity_specificity", family="segmentation",
                   formula="mean_c r*sum (t - p)**2 t/sum t + (1 - r)*sum (t - p)**2 (1 - t)/sum (1 - t)",
                   module=SensitivitySpecificityLoss, input="logits", target="index", task_kinds=("segmentation",),
                   reference="Brosch et al., Deep Convolutional Encoder Networks for Multiple Sclerosis Lesion "
                   "Segmentation, MICCAI 2015", notes="ratio of sums over the pixels: no elementwise form"),
]
