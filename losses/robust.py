"""Robust regression losses: bounded or slowly growing penalties for outliers.

Each takes a scale ``c``: the loss of residual ``r`` is the scale-1 loss of
``r / c``, which is what kornia's robust losses (no scale argument) give for
``input / c`` and ``target / c``.  The scale-1 forms are those of Barron,
A General and Adaptive Robust Loss Function, CVPR 2019.
"""
from __future__ import annotations

import torch

from .loss import CatalogueLoss, check_same_shape, num, positive, reduce, reference_loss
from .regression import _SHAPE

BARRON = "Barron, A General and Adaptive Robust Loss Function, CVPR 2019"


def _scaled_residual(input: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    check_same_shape(input, target)
    positive("c", c)
    return (input - target) / c


def charbonnier_loss(input: torch.Tensor, target: torch.Tensor, c: float = 1.0,
                     reduction: str = "mean") -> torch.Tensor:
    """``sqrt((r/c)**2 + 1) - 1``; see :class:`CharbonnierLoss`."""
    z = _scaled_residual(input, target, c)
    return reduce(torch.sqrt(z**2 + 1) - 1, reduction)


def cauchy_loss(input: torch.Tensor, target: torch.Tensor, c: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """``log(1 + (r/c)**2 / 2)``; see :class:`CauchyLoss`."""
    z = _scaled_residual(input, target, c)
    return reduce(torch.log1p(0.5 * z**2), reduction)


def geman_mcclure_loss(input: torch.Tensor, target: torch.Tensor, c: float = 1.0,
                       reduction: str = "mean") -> torch.Tensor:
    """``2 (r/c)**2 / ((r/c)**2 + 4)``; see :class:`GemanMcClureLoss`."""
    z2 = _scaled_residual(input, target, c) ** 2
    return reduce(2 * z2 / (z2 + 4), reduction)


def welsch_loss(input: torch.Tensor, target: torch.Tensor, c: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """``1 - exp(-(r/c)**2 / 2)``; see :class:`WelschLoss`."""
    z = _scaled_residual(input, target, c)
    return reduce(-torch.expm1(-0.5 * z**2), reduction)


def tukey_biweight_loss(input: torch.Tensor, target: torch.Tensor, c: float = 4.685,
                        reduction: str = "mean") -> torch.Tensor:
    """Tukey's biweight rho; see :class:`TukeyBiweightLoss`."""
    check_same_shape(input, target)
    positive("c", c)
    z = ((input - target).abs() / c).clamp_max(1.0)  # |r| > c: the constant c^2/6
    return reduce(c**2 / 6 * (1 - (1 - z**2) ** 3), reduction)


class CharbonnierLoss(CatalogueLoss):
    __doc__ = r"""Charbonnier (pseudo-Huber) loss (Charbonnier et al. 1994; Barron's :math:`\alpha = 1`).

    The unreduced loss is :math:`\ell(x, y) = \sqrt{(r/c)^2 + 1} - 1`, :math:`r = x - y`;
    at :math:`c = 1` it equals ``kornia.losses.charbonnier_loss``.

    Args:
        c: scale, > 0. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"c": 1.0}
    functional = staticmethod(charbonnier_loss)

    @classmethod
    def check_params(cls, c: float) -> None:
        positive("c", c)


class CauchyLoss(CatalogueLoss):
    __doc__ = r"""Cauchy (Lorentzian) loss (Barron's :math:`\alpha = 0`).

    The unreduced loss is :math:`\ell(x, y) = \log(1 + (r/c)^2 / 2)`; at
    :math:`c = 1` it equals ``kornia.losses.cauchy_loss``.

    Args:
        c: scale, > 0. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"c": 1.0}
    functional = staticmethod(cauchy_loss)

    @classmethod
    def check_params(cls, c: float) -> None:
        positive("c", c)


class GemanMcClureLoss(CatalogueLoss):
    __doc__ = r"""Geman-McClure loss (Geman & McClure 1985; Barron's :math:`\alpha = -2`).

    The unreduced loss is :math:`\ell(x, y) = 2 (r/c)^2 / ((r/c)^2 + 4)`, Barron's
    scaling (not the classic :math:`r^2 / (1 + r^2)`); at :math:`c = 1` it
    equals ``kornia.losses.geman_mcclure_loss``.  Bounded by 2.

    Args:
        c: scale, > 0. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"c": 1.0}
    functional = staticmethod(geman_mcclure_loss)

    @classmethod
    def check_params(cls, c: float) -> None:
        positive("c", c)


class WelschLoss(CatalogueLoss):
    __doc__ = r"""Welsch (Leclerc) loss (Dennis & Welsch 1978; Barron's :math:`\alpha \to -\infty`).

    The unreduced loss is :math:`\ell(x, y) = 1 - \exp(-(r/c)^2 / 2)`; at
    :math:`c = 1` it equals ``kornia.losses.welsch_loss``.  Bounded by 1.

    Args:
        c: scale, > 0. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"c": 1.0}
    functional = staticmethod(welsch_loss)

    @classmethod
    def check_params(cls, c: float) -> None:
        positive("c", c)


class TukeyBiweightLoss(CatalogueLoss):
    __doc__ = r"""Tukey's biweight loss (Beaton & Tukey 1974).

    The unreduced loss, with :math:`r = x - y`, is

    .. math::
        \ell(x, y) = \frac{c^2}{6} \left(1 - \left(1 - (r/c)^2\right)^3\right) \text{ for } |r| \le c,
        \quad \frac{c^2}{6} \text{ otherwise},

    equal to ``statsmodels.robust.norms.TukeyBiweight(c).rho(r)``.
    :math:`c = 4.685` gives 95% efficiency at the normal distribution.

    Args:
        c: the rejection point, > 0. Default: 4.685.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"c": 4.685}
    functional = staticmethod(tukey_biweight_loss)

    @classmethod
    def check_params(cls, c: float) -> None:
        positive("c", c)


def _z2(c: float) -> str:
    return f"((p - y)/{num(c)})**2"


_COMMON = dict(family="robust", input="prediction", target="value", task_kinds=("regression",), space="real")

ENTRIES = [
    reference_loss("charbonnier", formula="sqrt((r/c)**2 + 1) - 1, r = p - y", module=CharbonnierLoss,
                   reference="Charbonnier et al., Two deterministic half-quadratic regularization algorithms for "
                   "computed imaging, ICIP 1994; " + BARRON,
                   expression=lambda c: f"sqrt({_z2(c)} + 1) - 1", **_COMMON),
    reference_loss("cauchy", formula="log(1 + (r/c)**2/2), r = p - y", module=CauchyLoss, reference=BARRON,
                   expression=lambda c: f"log(1 + {_z2(c)}/2)", **_COMMON),
    reference_loss("geman_mcclure", formula="2*(r/c)**2/((r/c)**2 + 4), r = p - y", module=GemanMcClureLoss,
                   reference="Geman & McClure, Bayesian image analysis: an application to single photon emission "
                   "tomography, 1985; " + BARRON,
                   expression=lambda c: f"2*{_z2(c)}/({_z2(c)} + 4)", **_COMMON),
    reference_loss("welsch", formula="1 - exp(-(r/c)**2/2), r = p - y", module=WelschLoss,
                   reference="Dennis & Welsch, Techniques for nonlinear least squares and robust regression, "
                   "1978; " + BARRON, expression=lambda c: f"1 - exp(-{_z2(c)}/2)", **_COMMON),
    reference_loss("tukey_biweight", formula="c**2/6*(1 - (1 - (r/c)**2)**3) if |r| <= c else c**2/6, r = p - y",
                   module=TukeyBiweightLoss, reference="Beaton & Tukey, The fitting of power series, meaning "
                   "polynomials, illustrated on band-spectroscopic data, Technometrics 16(2), 1974",
                   # min(|r|, c) makes the |r| > c branch the constant c^2/6: exact.
                   expression=lambda c: f"{num(c)}**2/6*(1 - (1 - (min(abs(p - y), {num(c)})/{num(c)})**2)**3)",
                   **_COMMON),
]
