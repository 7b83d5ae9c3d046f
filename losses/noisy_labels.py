"""Multiclass losses that are robust to label noise (bounded in ``p_t``)."""
from __future__ import annotations

import torch

from .errors import LossParameterError
from .classification import _SHAPE, log_probabilities
from .loss import CatalogueLoss, num, reduce, reference_loss


def mae_ce_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``sum_c |onehot_c - p_c| = 2 (1 - p_t)``; see :class:`MAECELoss`."""
    _, logp_t = log_probabilities(input, target)
    return reduce(2 * (1 - logp_t.exp()), reduction)


def gce_loss(input: torch.Tensor, target: torch.Tensor, q: float = 0.7, reduction: str = "mean") -> torch.Tensor:
    """Generalized cross-entropy ``(1 - p_t**q) / q``; see :class:`GCELoss`."""
    GCELoss.check_params(q=q)
    _, logp_t = log_probabilities(input, target)
    # -expm1(q log p) = 1 - p**q without cancellation, so small q approaches CE smoothly.
    return reduce(-torch.expm1(q * logp_t) / q, reduction)


def sce_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 0.1, beta: float = 1.0, A: float = -4.0,
             reduction: str = "mean") -> torch.Tensor:
    """Symmetric cross-entropy ``alpha CE + beta RCE``; see :class:`SCELoss`."""
    SCELoss.check_params(alpha=alpha, beta=beta, A=A)
    _, logp_t = log_probabilities(input, target)
    return reduce(-alpha * logp_t - beta * A * (1 - logp_t.exp()), reduction)


class MAECELoss(CatalogueLoss):
    __doc__ = r"""Mean absolute error between the one-hot target and the softmax (Ghosh et al. 2017).

    The unreduced loss is :math:`\ell(z, y) = \sum_c |[c = y] - p_c| = 2 (1 - p_t)`,
    with :math:`p = \operatorname{softmax}(z)`; symmetric, hence noise-tolerant, but slow
    to train.  (Some papers drop the factor 2.)

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    functional = staticmethod(mae_ce_loss)


class GCELoss(CatalogueLoss):
    __doc__ = r"""Generalized cross-entropy (Zhang & Sabuncu 2018).

    The unreduced loss is :math:`\ell(z, y) = (1 - p_t^q) / q`: the cross-entropy as
    :math:`q \to 0` and :math:`1 - p_t` (half ``mae_ce``) at :math:`q = 1`.

    Args:
        q: in (0, 1]. Default: 0.7.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"q": 0.7}
    functional = staticmethod(gce_loss)

    @classmethod
    def check_params(cls, q: float) -> None:
        if not 0 < q <= 1:
            raise LossParameterError(f"q must be in (0, 1], got {q}")


class SCELoss(CatalogueLoss):
    __doc__ = r"""Symmetric cross-entropy (Wang et al. 2019).

    The unreduced loss is :math:`\ell(z, y) = \alpha\, \mathrm{CE} + \beta\, \mathrm{RCE}`
    with the reverse cross-entropy :math:`\mathrm{RCE} = -\sum_c p_c \log [c = y]`, where
    :math:`\log 0` is taken as :math:`A`: :math:`\mathrm{RCE} = -A (1 - p_t)`.  (The
    authors' code clamps the one-hot target at 1e-4, i.e. :math:`A = \log 10^{-4} \approx -9.21`,
    and the probabilities at 1e-7; this follows the paper's :math:`A = -4`.)

    Args:
        alpha: weight of the cross-entropy, >= 0. Default: 0.1.
        beta: weight of the reverse cross-entropy, >= 0. Default: 1.
        A: the value of :math:`\log 0`, < 0. Default: -4.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"alpha": 0.1, "beta": 1.0, "A": -4.0}
    functional = staticmethod(sce_loss)

    @classmethod
    def check_params(cls, alpha: float, beta: float, A: float) -> None:
        if alpha < 0 or beta < 0:
            raise LossParameterError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        if not A < 0:
            raise LossParameterError(f"A stands for log(0) and must be < 0, got {A}")


_NOISY = dict(family="noisy-labels", input="logits", target="index", task_kinds=("multiclass",), space="probability")

ENTRIES = [
    reference_loss("mae_ce", formula="sum_c |y_c - p_c| = 2*(1 - p_t), p = softmax(z)", module=MAECELoss,
                   reference="Ghosh, Kumar & Sastry, Robust Loss Functions under Label Noise for Deep Neural "
                   "Networks, AAAI 2017", expression="abs(y - p)", **_NOISY),
    reference_loss("gce", formula="(1 - p_t**q)/q, p = softmax(z)", module=GCELoss,
                   reference="Zhang & Sabuncu, Generalized Cross Entropy Loss for Training Deep Neural Networks "
                   "with Noisy Labels, NeurIPS 2018",
                   expression=lambda q: f"y*(1 - p**{num(q)})/{num(q)}", **_NOISY),
    reference_loss("sce", formula="alpha*CE + beta*RCE, RCE = -sum_c p_c*log(y_c) with log(0) = A, = -A*(1 - p_t)",
                   module=SCELoss, reference="Wang et al., Symmetric Cross Entropy for Robust Learning with "
                   "Noisy Labels, ICCV 2019",
                   # RCE per class: -p_c*log(y_c) is -A*p_c where y_c = 0 and 0 where y_c = 1.
                   expression=lambda alpha, beta, A: f"{num(alpha)}*(-y*log(p)) - {num(beta)}*{num(A)}*p*(1 - y)",
                   **_NOISY),
]
