"""Losses found by earlier loss-function search: Baikal (GLO) and TaylorGLO.

They are the anchors a search is compared with.  Both are sums over the
classes of an elementwise function of the softmax probability ``p_c`` and the
one-hot target ``y_c``, averaged over the batch, exactly as in the authors'
training code (``fumanchu/utils/lossferatu_loss.py`` in
github.com/cognizant-ai-labs/TaylorGLO: ``mean(-sum(f(x, y), 1))`` with ``x``
the one-hot label and ``y`` the softmax output).  The papers write the sum
with a ``1/n`` in front; the code sums over the classes.
"""
from __future__ import annotations

import torch

from .classification import _SHAPE, log_probabilities
from .loss import CatalogueLoss, num, one_hot_like, reduce, reference_loss

BAIKAL_REFERENCE = ("Gonzalez & Miikkulainen, Improved Training Speed, Accuracy, and Data Utilization Through Loss "
                    "Function Optimization, IEEE CEC 2020, arXiv:1905.11528 (GLO)")
TAYLORGLO_REFERENCE = ("Gonzalez & Miikkulainen, Optimizing Loss Functions Through Multi-Variate Taylor Polynomial "
                       "Parameterization, GECCO 2021, arXiv:2002.00059 (TaylorGLO)")

THETA = tuple(f"theta{i}" for i in range(8))
# The third-order TaylorGLO expansion of cross-entropy's x*log(y) about (x, y) = (0, 1):
# d/dy = x/y -> 0, d2/dy2 -> 0, d3/dy3 -> 0, d2/dxdy = 1/y -> 1, d3/dxdy2 = -1/y**2 -> -1,
# d3/dx2dy = 0, so the loss is (1 - p_t) + (1 - p_t)**2/2: the first two terms of
# -log(p_t) = sum_k (1 - p_t)**k / k.  Searches pass the theta they evolved instead.
CROSS_ENTROPY_THETA = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.0)


def baikal_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Baikal loss ``sum_c (-log p_c + y_c / p_c)``; see :class:`BaikalLoss`."""
    logp, logp_t = log_probabilities(input, target)
    # y_c / p_c is non-zero only at the true class: 1 / p_t = exp(-log p_t).
    return reduce(-logp.sum(dim=1) + torch.exp(-logp_t), reduction)


def taylor_glo_polynomial(x: torch.Tensor, y: torch.Tensor, theta0: float, theta1: float, theta2: float,
                          theta3: float, theta4: float, theta5: float, theta6: float, theta7: float) -> torch.Tensor:
    """TaylorGLO's third-order polynomial ``f(x, y)`` of the label ``x`` and the prediction ``y``.

    The terms whose partial derivative in ``y`` vanishes (pure ``x`` terms) are
    dropped, since they do not change the gradient; ``(theta0, theta1)`` is the
    expansion centre.
    """
    dx, dy = x - theta0, y - theta1
    return (theta2 * dy + theta3 / 2 * dy**2 + theta4 / 6 * dy**3
            + theta5 * dx * dy + theta6 / 2 * dx * dy**2 + theta7 / 2 * dx**2 * dy)


def taylor_glo_loss(input: torch.Tensor, target: torch.Tensor, theta0: float = 0.0, theta1: float = 1.0,
                    theta2: float = 0.0, theta3: float = 0.0, theta4: float = 0.0, theta5: float = 1.0,
                    theta6: float = -1.0, theta7: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """TaylorGLO loss ``-sum_c f(y_c, p_c)``; see :class:`TaylorGLOLoss`."""
    logp, _ = log_probabilities(input, target)
    f = taylor_glo_polynomial(one_hot_like(input, target), logp.exp(), theta0, theta1, theta2, theta3, theta4,
                              theta5, theta6, theta7)
    return reduce(-f.sum(dim=1), reduction)


class BaikalLoss(CatalogueLoss):
    __doc__ = r"""Baikal loss, discovered by Genetic Loss Optimization (Gonzalez & Miikkulainen 2020).

    With :math:`p = \operatorname{softmax}(z)` and the one-hot target :math:`y`, the
    unreduced loss is :math:`\ell(z, y) = -\sum_c (\log p_c - y_c / p_c) = -\sum_c \log p_c + 1/p_t`.
    Its minimum over :math:`p_t` is at :math:`p_t = 1` for a single class, but the
    :math:`-\log p_c` of the other classes rewards them, which discourages
    over-confident outputs (the regularising effect the paper reports).

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    functional = staticmethod(baikal_loss)


class TaylorGLOLoss(CatalogueLoss):
    __doc__ = r"""TaylorGLO loss: the third-order multivariate Taylor family of Gonzalez & Miikkulainen (2021).

    With :math:`x` the one-hot label, :math:`y = \operatorname{softmax}(z)`,
    :math:`a = x - \theta_0` and :math:`b = y - \theta_1`,

    .. math::
        f(x, y) = \theta_2 b + \tfrac12 \theta_3 b^2 + \tfrac16 \theta_4 b^3 + \theta_5 a b
                  + \tfrac12 \theta_6 a b^2 + \tfrac12 \theta_7 a^2 b,
        \qquad \ell(z, \text{label}) = -\sum_c f(x_c, y_c).

    The terms without :math:`y` are dropped (they do not affect the gradient),
    leaving 8 parameters.  The authors' code stores the coefficients with the
    factorials folded in (``parametersIncludeFactorial``): their raw vector is
    :math:`(\theta_2, \theta_3/2, \theta_4/6, \theta_5, \theta_6/2, \theta_7/2)` followed by the centre
    :math:`(\theta_0, \theta_1)`.  The defaults are the third-order expansion of
    cross-entropy about :math:`(x, y) = (0, 1)`, which gives
    :math:`(1 - p_t) + (1 - p_t)^2 / 2`; the evolved parameters of the paper are
    task-specific and are passed explicitly.

    Args:
        theta0, theta1: the expansion centre (label, prediction). Defaults: 0, 1.
        theta2 ... theta7: the coefficients. Defaults: 0, 0, 0, 1, -1, 0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = dict(zip(THETA, CROSS_ENTROPY_THETA))
    functional = staticmethod(taylor_glo_loss)


def _taylor_glo_expr(**theta: float) -> str:
    t = [num(theta[name]) for name in THETA]
    a, b = f"(y - {t[0]})", f"(p - {t[1]})"
    terms = [f"{t[2]}*{b}", f"{t[3]}/2*{b}**2", f"{t[4]}/6*{b}**3", f"{t[5]}*{a}*{b}",
             f"{t[6]}/2*{a}*{b}**2", f"{t[7]}/2*{a}**2*{b}"]
    return "-(" + " + ".join(terms) + ")"


_GLO = dict(family="meta-learned", input="logits", target="index", task_kinds=("multiclass",), space="probability")

ENTRIES = [
    reference_loss("baikal", formula="-sum_c (log(p_c) - y_c/p_c), p = softmax(z)", module=BaikalLoss,
                   reference=BAIKAL_REFERENCE, expression="y/p - log(p)", **_GLO),
    reference_loss("taylor_glo", formula="-sum_c [t2*b + t3/2*b**2 + t4/6*b**3 + t5*a*b + t6/2*a*b**2 + t7/2*a**2*b], "
                   "a = y_c - t0, b = p_c - t1, p = softmax(z)", module=TaylorGLOLoss,
                   reference=TAYLORGLO_REFERENCE, expression=_taylor_glo_expr, **_GLO),
]
