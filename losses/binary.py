"""Binary classification losses on one logit (or probability) per element.

Margin losses (soft margin, hinge, squared hinge, modified Huber, exponential)
take targets in {-1, +1} and the margin ``m = y * z``; the cross-entropy family
takes 0/1 targets.  In the binary prediction space (p = [1 - sigmoid(z),
sigmoid(z)], one-hot targets, summed over the two columns) the margin is
``log(p) - log(1 - p)`` of the true column, which is how the margin losses get
their elementwise expressions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import LossParameterError
from .loss import CatalogueLoss, check_same_shape, check_signed_target, focal_factor, in_range, non_negative, num, \
    reduce, reference_loss

_SHAPE_01 = """
    Shape:
        - Input: :math:`(*)`, one logit per element, any number of dimensions.
        - Target: :math:`(*)`, same shape, 0/1 labels (probabilities in [0, 1] are accepted).
        - Output: scalar; :math:`(*)` with ``reduction='none'``.
"""

_SHAPE_SIGNED = """
    Shape:
        - Input: :math:`(*)`, one logit (score) per element.
        - Target: :math:`(*)`, same shape, labels in {-1, +1}.
        - Output: scalar; :math:`(*)` with ``reduction='none'``.
"""


# ------------------------------------------------------------------ functional forms
def bce_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """BCE of probabilities; see :class:`BCELoss`."""
    check_same_shape(input, target)
    return reduce(F.binary_cross_entropy(input, target, reduction="none"), reduction)


def bce_with_logits_loss(input: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0,
                         reduction: str = "mean") -> torch.Tensor:
    """BCE of logits; see :class:`BCEWithLogitsLoss`."""
    check_same_shape(input, target)
    non_negative("pos_weight", pos_weight)
    w = None if pos_weight == 1 else torch.tensor(pos_weight, dtype=input.dtype, device=input.device)
    return reduce(F.binary_cross_entropy_with_logits(input, target, pos_weight=w, reduction="none"), reduction)


def balanced_bce_loss(input: torch.Tensor, target: torch.Tensor, beta: float = 0.5,
                      reduction: str = "mean") -> torch.Tensor:
    """Class-balanced BCE of logits; see :class:`BalancedBCELoss`."""
    check_same_shape(input, target)
    in_range("beta", beta, 0.0, 1.0, closed=True)
    loss = -beta * target * F.logsigmoid(input) - (1 - beta) * (1 - target) * F.logsigmoid(-input)
    return reduce(loss, reduction)


def soft_margin_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``log(1 + exp(-y z))``; see :class:`SoftMarginLoss`."""
    check_same_shape(input, target)
    check_signed_target(target)
    return reduce(F.softplus(-target * input), reduction)


def hinge_loss(input: torch.Tensor, target: torch.Tensor, margin: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """``max(0, margin - y z)``; see :class:`HingeLoss`."""
    check_same_shape(input, target)
    check_signed_target(target)
    return reduce(torch.clamp_min(margin - target * input, 0), reduction)


def squared_hinge_loss(input: torch.Tensor, target: torch.Tensor, margin: float = 1.0,
                       reduction: str = "mean") -> torch.Tensor:
    """``max(0, margin - y z)**2``; see :class:`SquaredHingeLoss`."""
    check_same_shape(input, target)
    check_signed_target(target)
    return reduce(torch.clamp_min(margin - target * input, 0) ** 2, reduction)


def modified_huber_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Modified Huber loss; see :class:`ModifiedHuberLoss`."""
    check_same_shape(input, target)
    check_signed_target(target)
    m = target * input
    return reduce(torch.where(m >= -1, torch.clamp_min(1 - m, 0) ** 2, -4 * m), reduction)


def exponential_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``exp(-y z)``; see :class:`ExponentialLoss`."""
    check_same_shape(input, target)
    check_signed_target(target)
    return reduce(torch.exp(-target * input), reduction)


def sigmoid_focal_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "mean") -> torch.Tensor:
    """Sigmoid focal loss (torchvision's convention); see :class:`SigmoidFocalLoss`."""
    check_same_shape(input, target)
    SigmoidFocalLoss.check_params(alpha=alpha, gamma=gamma)
    p = torch.sigmoid(input)
    ce = F.binary_cross_entropy_with_logits(input, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * focal_factor(1 - p_t, gamma)
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return reduce(loss, reduction)


# ------------------------------------------------------------------ modules
class BCELoss(CatalogueLoss):
    __doc__ = r"""Binary cross-entropy of probabilities.

    The unreduced loss is :math:`\ell(p, y) = -[y \log p + (1 - y) \log(1 - p)]`,
    with the logarithms clamped at -100 as in ``F.binary_cross_entropy``, which it equals.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape:
        - Input: :math:`(*)`, probabilities in [0, 1].
        - Target: :math:`(*)`, same shape, 0/1 labels or probabilities.
        - Output: scalar; :math:`(*)` with ``reduction='none'``.
"""
    functional = staticmethod(bce_loss)


class BCEWithLogitsLoss(CatalogueLoss):
    __doc__ = r"""Binary cross-entropy of logits.

    The unreduced loss is :math:`\ell(z, y) = -[w\, y \log \sigma(z) + (1 - y) \log(1 - \sigma(z))]`
    with ``w = pos_weight``, computed stably; equals ``F.binary_cross_entropy_with_logits``.

    Args:
        pos_weight: weight of the positive term, >= 0. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE_01
    defaults = {"pos_weight": 1.0}
    functional = staticmethod(bce_with_logits_loss)

    @classmethod
    def check_params(cls, pos_weight: float) -> None:
        non_negative("pos_weight", pos_weight)


class BalancedBCELoss(CatalogueLoss):
    __doc__ = r"""Class-balanced binary cross-entropy (Xie & Tu 2015, HED).

    The unreduced loss is :math:`\ell(z, y) = -[\beta y \log \sigma(z) + (1 - \beta)(1 - y) \log(1 - \sigma(z))]`,
    where :math:`\beta` is usually the fraction of negatives in the data.  For 0/1
    targets it equals ``F.binary_cross_entropy_with_logits(z, y, weight=beta*y + (1-beta)*(1-y))``.

    Args:
        beta: weight of the positive term, in [0, 1]. Default: 0.5 (half the BCE).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE_01
    defaults = {"beta": 0.5}
    functional = staticmethod(balanced_bce_loss)

    @classmethod
    def check_params(cls, beta: float) -> None:
        in_range("beta", beta, 0.0, 1.0, closed=True)


class SoftMarginLoss(CatalogueLoss):
    __doc__ = r"""Logistic (soft margin) loss.

    The unreduced loss is :math:`\ell(z, y) = \log(1 + e^{-y z})` for :math:`y \in \{-1, 1\}`,
    equal to ``F.soft_margin_loss`` and to BCE-with-logits of :math:`(y + 1)/2`.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE_SIGNED
    functional = staticmethod(soft_margin_loss)


class HingeLoss(CatalogueLoss):
    __doc__ = r"""Hinge loss (Cortes & Vapnik 1995).

    The unreduced loss is :math:`\ell(z, y) = \max(0, m - y z)` for :math:`y \in \{-1, 1\}`;
    with :math:`m = 1` its mean equals ``sklearn.metrics.hinge_loss(y, z)``.
    (``F.hinge_embedding_loss`` is a different loss.)

    Args:
        margin: :math:`m`. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE_SIGNED
    defaults = {"margin": 1.0}
    functional = staticmethod(hinge_loss)


class SquaredHingeLoss(CatalogueLoss):
    __doc__ = r"""Squared hinge (L2-SVM) loss.

    The unreduced loss is :math:`\ell(z, y) = \max(0, m - y z)^2` for :math:`y \in \{-1, 1\}`,
    as sklearn's ``SquaredHinge`` SGD loss.

    Args:
        margin: :math:`m`. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE_SIGNED
    defaults = {"margin": 1.0}
    functional = staticmethod(squared_hinge_loss)


class ModifiedHuberLoss(CatalogueLoss):
    __doc__ = r"""Modified Huber loss (Zhang 2004).

    With the margin :math:`m = y z`, the unreduced loss is :math:`\max(0, 1 - m)^2`
    for :math:`m \ge -1` and :math:`-4m` otherwise, as sklearn's ``ModifiedHuber`` SGD loss.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE_SIGNED
    functional = staticmethod(modified_huber_loss)


class ExponentialLoss(CatalogueLoss):
    __doc__ = r"""Exponential (AdaBoost) loss (Freund & Schapire 1997).

    The unreduced loss is :math:`\ell(z, y) = e^{-y z}` for :math:`y \in \{-1, 1\}`,
    equal to sklearn's ``ExponentialLoss`` with 0/1 labels.  Unbounded, not robust to label noise.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE_SIGNED
    functional = staticmethod(exponential_loss)


class SigmoidFocalLoss(CatalogueLoss):
    __doc__ = r"""Sigmoid focal loss (Lin et al. 2017).

    With :math:`p = \sigma(z)`, :math:`p_t = p y + (1 - p)(1 - y)` and
    :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)`, the unreduced loss is
    :math:`\ell(z, y) = -\alpha_t (1 - p_t)^\gamma \log p_t`, as
    ``torchvision.ops.sigmoid_focal_loss``: :math:`\alpha` weights the positives,
    :math:`1 - \alpha` the negatives, and :math:`\alpha < 0` disables the weighting.

    Args:
        alpha: weight of the positive term, in [0, 1], or < 0 for none. Default: 0.25.
        gamma: focusing exponent, >= 0. Default: 2.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE_01
    defaults = {"alpha": 0.25, "gamma": 2.0}
    functional = staticmethod(sigmoid_focal_loss)

    @classmethod
    def check_params(cls, alpha: float, gamma: float) -> None:
        if alpha > 1:
            raise LossParameterError(f"alpha must be in [0, 1], or negative to disable the class weighting; "
                                     f"got {alpha}")
        non_negative("gamma", gamma)


# ------------------------------------------------------------------ symbolic forms
# In the binary space p is a column of [1 - sigmoid(z), sigmoid(z)] and y its one-hot
# target, so for the true column log(p) - log(1 - p) is the margin y*z (y in +-1).
MARGIN = "(log(p) - log(1 - p))"


def _margin_hinge(margin: float) -> str:
    return f"max(0, {num(margin)} - {MARGIN})"


def _bce_logits_expr(pos_weight: float) -> str | None:
    # pos_weight != 1 weights the two classes differently: the binary space is
    # symmetric in its columns, so there is no elementwise form.
    return "-y*log(p)" if pos_weight == 1 else None


def _balanced_bce_expr(beta: float) -> str | None:
    return "-y*log(p)/2" if beta == 0.5 else None  # asymmetric otherwise (see _bce_logits_expr)


def _sigmoid_focal_expr(alpha: float, gamma: float) -> str | None:
    # alpha weights positives and negatives differently, which the symmetric binary
    # space cannot express; alpha < 0 (no weighting) and alpha = 0.5 (half) can.
    focal = f"-y*(1 - p)**{num(gamma)}*log(p)" if gamma != 0 else "-y*log(p)"
    if alpha < 0:
        return focal
    if alpha == 0.5:
        return f"({focal})/2"
    return None


_HINGE = _margin_hinge(1)
_BINARY = dict(family="binary", task_kinds=("binary",), space="probability")

ENTRIES = [
    reference_loss("bce", formula="-(y*log(p) + (1 - y)*log(1 - p)), p = probability", module=BCELoss,
                   input="probabilities", target="binary", reference="Cox, The regression analysis of binary "
                   "sequences, JRSS-B 20(2), 1958; torch.nn.BCELoss", expression="-y*log(p)", **_BINARY),
    reference_loss("bce_with_logits", formula="-(w*y*log(s) + (1 - y)*log(1 - s)), s = sigmoid(z), w = pos_weight",
                   module=BCEWithLogitsLoss, input="logits", target="binary",
                   reference="torch.nn.BCEWithLogitsLoss; Terven et al., arXiv:2307.02694",
                   expression=_bce_logits_expr, **_BINARY),
    reference_loss("balanced_bce", formula="-(beta*y*log(s) + (1 - beta)*(1 - y)*log(1 - s)), s = sigmoid(z)",
                   module=BalancedBCELoss, input="logits", target="binary", family="imbalance",
                   task_kinds=("binary",), space="probability",
                   reference="Xie & Tu, Holistically-Nested Edge Detection, ICCV 2015",
                   expression=_balanced_bce_expr),
    reference_loss("soft_margin", formula="log(1 + exp(-y*z)), y in {-1, 1}", module=SoftMarginLoss,
                   input="logits", target="signed", reference="torch.nn.SoftMarginLoss (logistic loss)",
                   expression="-y*log(p)", **_BINARY),
    reference_loss("hinge", formula="max(0, margin - y*z), y in {-1, 1}", module=HingeLoss, input="logits",
                   target="signed", reference="Cortes & Vapnik, Support-Vector Networks, Machine Learning 20, 1995",
                   expression=lambda margin: f"y*{_margin_hinge(margin)}", **_BINARY),
    reference_loss("squared_hinge", formula="max(0, margin - y*z)**2, y in {-1, 1}", module=SquaredHingeLoss,
                   input="logits", target="signed", reference="Janocha & Czarnecki, On Loss Functions for Deep "
                   "Neural Networks in Classification, 2017",
                   expression=lambda margin: f"y*{_margin_hinge(margin)}**2", **_BINARY),
    reference_loss("modified_huber", formula="max(0, 1 - m)**2 if m >= -1 else -4*m, m = y*z, y in {-1, 1}",
                   module=ModifiedHuberLoss, input="logits", target="signed",
                   reference="Zhang, Solving large scale linear prediction problems using stochastic gradient "
                   "descent algorithms, ICML 2004",
                   # h = max(0, 1 - m): h**2 while h <= 2 (m >= -1), then 4h - 4 = -4m: exact.
                   expression=f"y*(min({_HINGE}, 2)**2 + 4*({_HINGE} - min({_HINGE}, 2)))",
                   **_BINARY),
    reference_loss("exponential", formula="exp(-y*z), y in {-1, 1}", module=ExponentialLoss, input="logits",
                   target="signed", reference="Freund & Schapire, A decision-theoretic generalization of on-line "
                   "learning and an application to boosting, JCSS 55(1), 1997",
                   expression="y*(1 - p)/p", **_BINARY),
    reference_loss("sigmoid_focal", formula="-alpha_t*(1 - p_t)**gamma*log(p_t), p_t = s*y + (1 - s)*(1 - y), "
                   "alpha_t = alpha*y + (1 - alpha)*(1 - y) (no alpha_t if alpha < 0)", module=SigmoidFocalLoss,
                   input="logits", target="binary", reference="Lin et al., Focal Loss for Dense Object Detection, "
                   "ICCV 2017; torchvision.ops.sigmoid_focal_loss", expression=_sigmoid_focal_expr,
                   family="imbalance", task_kinds=("binary",), space="probability"),
]
