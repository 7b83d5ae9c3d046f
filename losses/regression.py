"""Regression losses on predictions and targets of the same shape.

Every function takes ``input`` (the prediction) and ``target`` of equal shape
and returns the elementwise loss (``reduction='none'``), its mean or its sum.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import LossInputError
from .loss import CatalogueLoss, check_same_shape, in_range, non_negative, num, positive, reduce, reference_loss

REVIEWS = ("Terven et al., Loss Functions and Metrics in Deep Learning, arXiv:2307.02694; "
           "Li, Liu & Liu, A Survey of Loss Functions in Deep Learning, Mathematics 2025")

_SHAPE = """
    Shape:
        - Input: :math:`(*)`, the prediction, any number of dimensions.
        - Target: :math:`(*)`, same shape as the input (no broadcasting).
        - Output: scalar; :math:`(*)` with ``reduction='none'``.
"""


# ------------------------------------------------------------------ functional forms
def mse_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared error ``(input - target)**2``; see :class:`MSELoss`."""
    check_same_shape(input, target)
    return reduce((input - target) ** 2, reduction)


def mae_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Absolute error ``|input - target|``; see :class:`MAELoss`."""
    check_same_shape(input, target)
    return reduce((input - target).abs(), reduction)


def huber_loss(input: torch.Tensor, target: torch.Tensor, delta: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Huber loss; see :class:`HuberLoss`."""
    check_same_shape(input, target)
    HuberLoss.check_params(delta=delta)
    a = (input - target).abs()
    return reduce(torch.where(a < delta, 0.5 * a**2, delta * (a - 0.5 * delta)), reduction)


def smooth_l1_loss(input: torch.Tensor, target: torch.Tensor, beta: float = 1.0,
                   reduction: str = "mean") -> torch.Tensor:
    """Smooth L1 loss (``huber(delta=beta) / beta``); see :class:`SmoothL1Loss`."""
    check_same_shape(input, target)
    SmoothL1Loss.check_params(beta=beta)
    a = (input - target).abs()
    if beta == 0:  # the limit, as torch defines it
        return reduce(a, reduction)
    return reduce(torch.where(a < beta, 0.5 * a**2 / beta, a - 0.5 * beta), reduction)


def log_cosh_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``log(cosh(input - target))``, computed stably; see :class:`LogCoshLoss`."""
    check_same_shape(input, target)
    a = (input - target).abs()
    # log cosh a = a + log(1 + exp(-2a)) - log 2: no overflow (cosh(100) is inf in float32).
    return reduce(a + F.softplus(-2 * a) - math.log(2.0), reduction)


def quantile_loss(input: torch.Tensor, target: torch.Tensor, q: float = 0.5, reduction: str = "mean") -> torch.Tensor:
    """Pinball loss with residual ``target - input``; see :class:`QuantileLoss`."""
    check_same_shape(input, target)
    QuantileLoss.check_params(q=q)
    u = target - input
    return reduce(torch.maximum(q * u, (q - 1) * u), reduction)


def msle_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``(log1p(input) - log1p(target))**2``; see :class:`MSLELoss`."""
    check_same_shape(input, target)
    if bool((input <= -1).any()) or bool((target <= -1).any()):
        raise LossInputError("msle needs input and target > -1 (it takes log(1 + x)); "
                             "clamp the prediction, e.g. input.clamp_min(0)")
    return reduce((torch.log1p(input) - torch.log1p(target)) ** 2, reduction)


def mape_loss(input: torch.Tensor, target: torch.Tensor, eps: float = 2.220446049250313e-16,
              reduction: str = "mean") -> torch.Tensor:
    """``|input - target| / max(|target|, eps)``; see :class:`MAPELoss`."""
    check_same_shape(input, target)
    MAPELoss.check_params(eps=eps)
    return reduce((input - target).abs() / target.abs().clamp_min(eps), reduction)


def smape_loss(input: torch.Tensor, target: torch.Tensor, eps: float = 1.17e-6,
               reduction: str = "mean") -> torch.Tensor:
    """``2 |input - target| / max(|input| + |target|, eps)``; see :class:`SMAPELoss`."""
    check_same_shape(input, target)
    SMAPELoss.check_params(eps=eps)
    return reduce(2 * (input - target).abs() / (input.abs() + target.abs()).clamp_min(eps), reduction)


def balanced_l1_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, gamma: float = 1.5,
                     beta: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Balanced L1 loss of Libra R-CNN; see :class:`BalancedL1Loss`."""
    check_same_shape(input, target)
    BalancedL1Loss.check_params(alpha=alpha, gamma=gamma, beta=beta)
    a = (input - target).abs()
    b = math.exp(gamma / alpha) - 1
    inner = alpha / b * (b * a + 1) * torch.log(b * a / beta + 1) - alpha * a
    outer = gamma * a + gamma / b - alpha * beta
    return reduce(torch.where(a < beta, inner, outer), reduction)


# ------------------------------------------------------------------ modules
class MSELoss(CatalogueLoss):
    __doc__ = r"""Mean squared error.

    The unreduced loss is :math:`\ell(x, y) = (x - y)^2`.  Equals
    ``torch.nn.functional.mse_loss`` except that a shape mismatch is an error.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    functional = staticmethod(mse_loss)


class MAELoss(CatalogueLoss):
    __doc__ = r"""Mean absolute error (L1).

    The unreduced loss is :math:`\ell(x, y) = |x - y|`.  Equals ``F.l1_loss``.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    functional = staticmethod(mae_loss)


class HuberLoss(CatalogueLoss):
    __doc__ = r"""Huber loss (Huber 1964).

    The unreduced loss, with :math:`r = x - y`, is

    .. math::
        \ell(x, y) = \begin{cases} r^2 / 2 & |r| < \delta \\ \delta (|r| - \delta / 2) & \text{otherwise} \end{cases}

    Equals ``F.huber_loss(delta=delta)``; it differs from smooth L1 unless
    :math:`\delta = 1`.

    Args:
        delta: where the quadratic turns linear, > 0. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"delta": 1.0}
    functional = staticmethod(huber_loss)

    @classmethod
    def check_params(cls, delta: float) -> None:
        positive("delta", delta)


class SmoothL1Loss(CatalogueLoss):
    __doc__ = r"""Smooth L1 loss (Girshick 2015, Fast R-CNN).

    The unreduced loss, with :math:`r = x - y`, is

    .. math::
        \ell(x, y) = \begin{cases} r^2 / (2\beta) & |r| < \beta \\ |r| - \beta / 2 & \text{otherwise} \end{cases}

    i.e. ``huber(delta=beta) / beta``; :math:`\beta = 0` gives the L1 loss.
    Equals ``F.smooth_l1_loss(beta=beta)``.

    Args:
        beta: width of the quadratic zone, >= 0. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"beta": 1.0}
    functional = staticmethod(smooth_l1_loss)

    @classmethod
    def check_params(cls, beta: float) -> None:
        non_negative("beta", beta)


class LogCoshLoss(CatalogueLoss):
    __doc__ = r"""Log-cosh loss.

    The unreduced loss is :math:`\ell(x, y) = \log\cosh(x - y)`, computed as
    :math:`|r| + \operatorname{softplus}(-2|r|) - \log 2`, which stays finite
    in float32 for any residual (the naive form overflows for :math:`|r| \gtrsim 89`).

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    functional = staticmethod(log_cosh_loss)


class QuantileLoss(CatalogueLoss):
    __doc__ = r"""Quantile (pinball) loss (Koenker & Bassett 1978).

    The unreduced loss, with the residual :math:`u = y - x`, is
    :math:`\ell(x, y) = \max(q u, (q - 1) u)`; its mean equals
    ``sklearn.metrics.mean_pinball_loss(y, x, alpha=q)``.  :math:`q = 0.5`
    gives half the absolute error.

    Args:
        q: the quantile, in (0, 1). Default: 0.5.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"q": 0.5}
    functional = staticmethod(quantile_loss)

    @classmethod
    def check_params(cls, q: float) -> None:
        in_range("q", q, 0.0, 1.0)


class MSLELoss(CatalogueLoss):
    __doc__ = r"""Mean squared logarithmic error.

    The unreduced loss is :math:`\ell(x, y) = (\log(1 + x) - \log(1 + y))^2`;
    its mean equals ``sklearn.metrics.mean_squared_log_error``.  Input and
    target must be > -1 (a ``LossInputError`` otherwise).

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    functional = staticmethod(msle_loss)


class MAPELoss(CatalogueLoss):
    __doc__ = r"""Mean absolute percentage error.

    The unreduced loss is :math:`\ell(x, y) = |x - y| / \max(|y|, \epsilon)`;
    its mean equals ``sklearn.metrics.mean_absolute_percentage_error``
    (a fraction, not a percentage; sklearn's :math:`\epsilon` is the float64
    machine epsilon).

    Args:
        eps: floor of the denominator, > 0. Default: 2.22e-16.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"eps": 2.220446049250313e-16}
    functional = staticmethod(mape_loss)

    @classmethod
    def check_params(cls, eps: float) -> None:
        positive("eps", eps)


class SMAPELoss(CatalogueLoss):
    __doc__ = r"""Symmetric mean absolute percentage error (Armstrong 1985).

    The unreduced loss is :math:`\ell(x, y) = 2|x - y| / \max(|x| + |y|, \epsilon)`,
    with the factor 2 and without a division by 2, as in torchmetrics'
    ``symmetric_mean_absolute_percentage_error`` (:math:`\epsilon = 1.17 \cdot 10^{-6}`);
    values lie in [0, 2].

    Args:
        eps: floor of the denominator, > 0. Default: 1.17e-6.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"eps": 1.17e-6}
    functional = staticmethod(smape_loss)

    @classmethod
    def check_params(cls, eps: float) -> None:
        positive("eps", eps)


class BalancedL1Loss(CatalogueLoss):
    __doc__ = r"""Balanced L1 loss (Pang et al. 2019, Libra R-CNN).

    With :math:`a = |x - y|` and :math:`b = e^{\gamma/\alpha} - 1`, the unreduced loss is

    .. math::
        \ell(x, y) = \begin{cases} \frac{\alpha}{b}(b a + 1)\log(b a / \beta + 1) - \alpha a & a < \beta \\
                     \gamma a + \gamma / b - \alpha \beta & \text{otherwise} \end{cases}

    as in mmdetection's ``balanced_l1_loss``; the pieces meet at :math:`a = \beta`.

    Args:
        alpha: gradient scale of inliers, > 0. Default: 0.5.
        gamma: bound of the gradient of outliers, > 0. Default: 1.5.
        beta: where the two pieces meet, > 0. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"alpha": 0.5, "gamma": 1.5, "beta": 1.0}
    functional = staticmethod(balanced_l1_loss)

    @classmethod
    def check_params(cls, alpha: float, gamma: float, beta: float) -> None:
        positive("alpha", alpha)
        positive("gamma", gamma)
        positive("beta", beta)


# ------------------------------------------------------------------ symbolic forms
def _huber_expr(delta: float) -> str:
    # min(|r|, d) * (|r| - min(|r|, d)/2) is r^2/2 inside and d(|r| - d/2) outside: exact.
    d = num(delta)
    return f"min(abs(p - y), {d})*(abs(p - y) - min(abs(p - y), {d})/2)"


def _smooth_l1_expr(beta: float) -> str:
    if beta == 0:
        return "abs(p - y)"
    return f"({_huber_expr(beta)})/{num(beta)}"


def _balanced_l1_expr(alpha: float, gamma: float, beta: float) -> str:
    # f(min(a, beta)) + gamma*(a - min(a, beta)) is exact: f(beta) = gamma*beta + gamma/b - alpha*beta.
    a, g, bt = num(alpha), num(gamma), num(beta)
    b = f"(exp({g}/{a}) - 1)"
    m = f"min(abs(p - y), {bt})"
    return f"{a}/{b}*({b}*{m} + 1)*log({b}*{m}/{bt} + 1) - {a}*{m} + {g}*(abs(p - y) - {m})"


_COMMON = dict(input="prediction", target="value", task_kinds=("regression",), space="real")
# Detection's coordinate losses also train the boxes task, element-wise on the anchor deltas (dx, dy, dw, dh).
_BOX_DELTAS = dict(_COMMON, task_kinds=("regression", "boxes"),
                   notes="also a box regression loss: element-wise on [N, 4] box deltas (dx, dy, dw, dh)")

ENTRIES = [
    reference_loss("mse", family="regression", formula="(p - y)**2", module=MSELoss,
                   reference="Gauss (least squares); " + REVIEWS, expression="(p - y)**2", **_COMMON),
    reference_loss("mae", family="regression", formula="|p - y|", module=MAELoss,
                   reference="Laplace (least absolute deviations); " + REVIEWS, expression="abs(p - y)", **_COMMON),
    reference_loss("huber", family="robust", formula="r**2/2 if |r| < delta else delta*(|r| - delta/2), r = p - y",
                   module=HuberLoss, reference="Huber, Robust Estimation of a Location Parameter, "
                   "Ann. Math. Statist. 35(1), 1964", expression=_huber_expr, **_COMMON),
    reference_loss("smooth_l1", family="regression",
                   formula="r**2/(2*beta) if |r| < beta else |r| - beta/2, r = p - y", module=SmoothL1Loss,
                   reference="Girshick, Fast R-CNN, ICCV 2015", expression=_smooth_l1_expr, **_BOX_DELTAS),
    reference_loss("log_cosh", family="regression", formula="log(cosh(p - y)) = |r| + softplus(-2|r|) - log 2",
                   module=LogCoshLoss, reference=REVIEWS,
                   expression="abs(p - y) + softplus(-2*abs(p - y)) - log(2)", **_COMMON),
    reference_loss("quantile", family="regression", formula="max(q*u, (q - 1)*u), u = y - p", module=QuantileLoss,
                   reference="Koenker & Bassett, Regression Quantiles, Econometrica 46(1), 1978",
                   expression=lambda q: f"max({num(q)}*(y - p), ({num(q)} - 1)*(y - p))", **_COMMON),
    reference_loss("msle", family="regression", formula="(log(1 + p) - log(1 + y))**2", module=MSLELoss,
                   reference=REVIEWS, expression="(log(1 + p) - log(1 + y))**2", **_COMMON),
    reference_loss("mape", family="regression", formula="|p - y| / max(|y|, eps)", module=MAPELoss,
                   reference="de Myttenaere et al., Mean Absolute Percentage Error for regression models, "
                   "Neurocomputing 192, 2016",
                   expression=lambda eps: f"abs(p - y)/max(abs(y), {eps!r})", **_COMMON),
    reference_loss("smape", family="regression", formula="2*|p - y| / max(|p| + |y|, eps)", module=SMAPELoss,
                   reference="Armstrong, Long-Range Forecasting, 1985; torchmetrics "
                   "symmetric_mean_absolute_percentage_error",
                   expression=lambda eps: f"2*abs(p - y)/max(abs(p) + abs(y), {eps!r})", **_COMMON),
    reference_loss("balanced_l1", family="regression",
                   formula="alpha/b*(b*a + 1)*log(b*a/beta + 1) - alpha*a if a < beta else "
                           "gamma*a + gamma/b - alpha*beta, a = |p - y|, b = exp(gamma/alpha) - 1",
                   module=BalancedL1Loss, reference="Pang et al., Libra R-CNN: Towards Balanced Learning for "
                   "Object Detection, CVPR 2019", expression=_balanced_l1_expr, **_BOX_DELTAS),
]
