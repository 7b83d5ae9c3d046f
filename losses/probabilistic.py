"""Negative log-likelihoods and deviances of count and continuous distributions."""
from __future__ import annotations

import math

import torch

from .errors import LossInputError, LossParameterError
from .loss import CatalogueLoss, check_same_shape, num, positive, reduce, reference_loss, switch
from .regression import _SHAPE


# ------------------------------------------------------------------ functional forms
def poisson_nll_loss(input: torch.Tensor, target: torch.Tensor, full: float = 0.0,
                     reduction: str = "mean") -> torch.Tensor:
    """Poisson NLL of a log-rate ``input``; see :class:`PoissonNLLLoss`."""
    check_same_shape(input, target)
    switch("full", full)
    loss = torch.exp(input) - target * input
    if full:
        stirling = target * torch.log(target) - target + 0.5 * torch.log(2 * math.pi * target)
        loss = loss + stirling.masked_fill(target <= 1, 0)
    return reduce(loss, reduction)


def _check_positive_values(name: str, x: torch.Tensor, strict: bool = True) -> None:
    bad = (x <= 0) if strict else (x < 0)
    if bool(bad.any()):
        raise LossInputError(f"{name} must be {'> 0' if strict else '>= 0'} here; got {float(x[bad][0]):g}")


def poisson_deviance_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Poisson deviance of a rate ``input > 0``; see :class:`PoissonDevianceLoss`."""
    check_same_shape(input, target)
    _check_positive_values("input (the predicted rate)", input)
    _check_positive_values("target (the count)", target, strict=False)
    return reduce(2 * ((torch.xlogy(target, target) - torch.xlogy(target, input)) - target + input), reduction)


def tweedie_loss(input: torch.Tensor, target: torch.Tensor, power: float = 1.5,
                 reduction: str = "mean") -> torch.Tensor:
    """Tweedie deviance of a mean ``input``; see :class:`TweedieLoss`."""
    check_same_shape(input, target)
    TweedieLoss.check_params(power=power)
    p = power
    if p == 0:
        return reduce((target - input) ** 2, reduction)
    _check_positive_values("input (the predicted mean)", input)
    if p >= 2:
        _check_positive_values("target", target)
    elif p >= 1:
        _check_positive_values("target", target, strict=False)
    if p == 1:
        dev = 2 * ((torch.xlogy(target, target) - torch.xlogy(target, input)) - target + input)
    elif p == 2:
        dev = 2 * (torch.log(input / target) + target / input - 1)
    else:
        dev = 2 * (target.clamp_min(0) ** (2 - p) / ((1 - p) * (2 - p))
                   - target * input ** (1 - p) / (1 - p) + input ** (2 - p) / (2 - p))
    return reduce(dev, reduction)


def gaussian_nll_loss(input: torch.Tensor, target: torch.Tensor, var: torch.Tensor, full: float = 0.0,
                      eps: float = 1e-6, reduction: str = "mean") -> torch.Tensor:
    """Gaussian NLL of a mean ``input`` and variance ``var``; see :class:`GaussianNLLLoss`."""
    check_same_shape(input, target)
    check_same_shape(input, var, what="var")
    switch("full", full)
    positive("eps", eps)
    if bool((var < 0).any()):
        raise LossInputError("var has negative entries; it is a variance (use var = log_var.exp() for a log-variance)")
    var = var.clone()
    with torch.no_grad():  # as torch: the clamp is invisible to autograd (straight-through gradient)
        var.clamp_(min=eps)
    loss = 0.5 * (torch.log(var) + (input - target) ** 2 / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return reduce(loss, reduction)


# ------------------------------------------------------------------ modules
class PoissonNLLLoss(CatalogueLoss):
    __doc__ = r"""Poisson negative log-likelihood of a log-rate.

    The input is the log-rate :math:`z`; the unreduced loss is
    :math:`\ell(z, y) = e^z - y z`, plus Stirling's approximation of
    :math:`\log y!` (:math:`y \log y - y + \frac12 \log 2\pi y`, where :math:`y > 1`)
    with ``full=1``.  Equals ``F.poisson_nll_loss(z, y, log_input=True, full=full)``.

    Args:
        full: 1 adds the Stirling term. Default: 0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"full": 0.0}
    functional = staticmethod(poisson_nll_loss)

    @classmethod
    def check_params(cls, full: float) -> None:
        switch("full", full)


class PoissonDevianceLoss(CatalogueLoss):
    __doc__ = r"""Poisson deviance.

    The input is the predicted rate :math:`\lambda > 0`, the target a count
    :math:`y \ge 0`; the unreduced loss is :math:`\ell(\lambda, y) = 2 (y \log(y / \lambda) - y + \lambda)`
    (:math:`0 \log 0 = 0`), twice the Poisson NLL minus its value at :math:`\lambda = y`.
    Its mean equals ``sklearn.metrics.mean_poisson_deviance(y, lambda)``.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    functional = staticmethod(poisson_deviance_loss)


class TweedieLoss(CatalogueLoss):
    __doc__ = r"""Tweedie deviance (Tweedie 1984; Jørgensen 1987).

    The input is the predicted mean :math:`\mu > 0`; for power :math:`p`, the unreduced loss is

    .. math::
        \ell(\mu, y) = 2 \left( \frac{\max(y, 0)^{2-p}}{(1-p)(2-p)} - \frac{y \mu^{1-p}}{1-p}
        + \frac{\mu^{2-p}}{2-p} \right),

    with the limits :math:`(y - \mu)^2` at :math:`p = 0`, the Poisson deviance at
    :math:`p = 1` and the Gamma deviance :math:`2(\log(\mu/y) + y/\mu - 1)` at :math:`p = 2`.
    Its mean equals ``sklearn.metrics.mean_tweedie_deviance(y, mu, power=p)``.

    Args:
        power: :math:`p \le 0` or :math:`p \ge 1` (compound Poisson-Gamma for :math:`1 < p < 2`). Default: 1.5.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"power": 1.5}
    functional = staticmethod(tweedie_loss)

    @classmethod
    def check_params(cls, power: float) -> None:
        if 0 < power < 1:
            raise LossParameterError(f"Tweedie power must be <= 0 or >= 1 (no distribution exists in between), "
                                     f"got {power}")


class GaussianNLLLoss(CatalogueLoss):
    r"""Gaussian negative log-likelihood (Nix & Weigend 1994).

    The unreduced loss of mean :math:`x`, variance :math:`v` and target :math:`y` is

    .. math::
        \ell(x, y, v) = \frac12 \left( \log \max(v, \epsilon) + \frac{(x - y)^2}{\max(v, \epsilon)} \right)

    plus :math:`\frac12 \log 2\pi` with ``full=1``.  Equals
    ``F.gaussian_nll_loss(x, y, v, full=full, eps=eps)``; as there, the clamp is
    invisible to autograd (the gradient in :math:`v` is taken at the clamped
    value).  ``forward`` takes the variance as a third argument (a variance,
    not a log-variance), so this loss needs a model with a variance head: it
    is a reference-only entry.

    Args:
        full: 1 adds the constant. Default: 0.
        eps: floor of the variance, > 0. Default: 1e-6.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape:
        - Input: :math:`(*)`, the predicted mean.
        - Target: :math:`(*)`, same shape as the input.
        - Var: :math:`(*)`, same shape as the input, >= 0.
        - Output: scalar; :math:`(*)` with ``reduction='none'``.
    """

    defaults = {"full": 0.0, "eps": 1e-6}
    functional = staticmethod(gaussian_nll_loss)

    @classmethod
    def check_params(cls, full: float, eps: float) -> None:
        switch("full", full)
        positive("eps", eps)

    def forward(self, input: torch.Tensor, target: torch.Tensor,  # type: ignore[override]
                var: torch.Tensor) -> torch.Tensor:
        return gaussian_nll_loss(input, target, var, **self.params, reduction=self.reduction)


# ------------------------------------------------------------------ symbolic forms
def _poisson_nll_expr(full: float) -> str | None:
    # The Stirling term only applies where y > 1: not an elementwise form in the grammar.
    return None if full else "exp(p) - y*p"


def _tweedie_expr(power: float) -> str | None:
    if power == 0:
        return "(y - p)**2"
    if power == 1:
        return "2*(y*log(y/p) - y + p)"
    if power == 2:
        return "2*(log(p/y) + y/p - 1)"
    if abs(2 - power) > 6 or abs(1 - power) > 6:  # the grammar's exponent bound
        return None
    k = num(power)
    # max(y,0)**(2-k) written as m*m**(1-k): the grammar floors |m| at 1e-12 in non-integer
    # powers, so m**(2-k) would give 1e-12**(2-k) != 0 at y = 0; the factor m keeps it exact.
    return (f"2*(max(y, 0)*max(y, 0)**(1 - {k})/((1 - {k})*(2 - {k})) - y*p**(1 - {k})/(1 - {k}) "
            f"+ p**(2 - {k})/(2 - {k}))")


_COMMON = dict(family="probabilistic", target="value")

ENTRIES = [
    reference_loss("poisson_nll", formula="exp(z) - y*z, z = log-rate (+ Stirling term with full=1)",
                   module=PoissonNLLLoss, input="log_rate", task_kinds=("regression",), space="real",
                   reference="McCullagh & Nelder, Generalized Linear Models, 1989; torch.nn.PoissonNLLLoss",
                   expression=_poisson_nll_expr, **_COMMON),
    reference_loss("poisson_deviance", formula="2*(y*log(y/p) - y + p), p = rate > 0",
                   module=PoissonDevianceLoss, input="prediction", task_kinds=("regression",), space="real",
                   reference="McCullagh & Nelder, Generalized Linear Models, 1989",
                   expression="2*(y*log(y/p) - y + p)", **_COMMON),
    reference_loss("tweedie", formula="2*(max(y,0)**(2-k)/((1-k)*(2-k)) - y*p**(1-k)/(1-k) + p**(2-k)/(2-k)), "
                   "k = power, p = mean > 0", module=TweedieLoss, input="prediction", task_kinds=("regression",),
                   space="real", reference="Tweedie, An index which distinguishes between some important "
                   "exponential families, 1984; Jørgensen, Exponential dispersion models, JRSS-B 49(2), 1987",
                   expression=_tweedie_expr, **_COMMON),
    reference_loss("gaussian_nll", formula="(log(max(v, eps)) + (p - y)**2/max(v, eps))/2, v = predicted variance",
                   module=GaussianNLLLoss, input="prediction", task_kinds=(),
                   reference="Nix & Weigend, Estimating the mean and variance of the target probability "
                   "distribution, ICNN 1994; torch.nn.GaussianNLLLoss",
                   notes="reference-only: forward(input, target, var) needs a variance head", **_COMMON),
]
