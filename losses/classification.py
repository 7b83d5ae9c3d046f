"""Multiclass losses on logits ``[N, C, *]`` with integer class targets ``[N, *]``.

The unreduced loss has one value per sample (and per position, for extra
dimensions such as pixels): shape ``[N, *]``, as ``F.cross_entropy``.  In the
multiclass prediction space (p = softmax over the classes, y one-hot, summed
over the classes) ``-y*log(p)`` is exactly the cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import LossInputError, LossParameterError
from .loss import CatalogueLoss, check_class_target, check_same_shape, focal_factor, gather_class, in_range, \
    non_negative, num, one_hot_like, positive, reduce, reference_loss

_SHAPE = """
    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, d_1, ..., d_K)` logits.
        - Target: :math:`(N)` or :math:`(N, d_1, ..., d_K)` class indices in :math:`[0, C)` (``torch.long``).
        - Output: scalar; :math:`(N)` or :math:`(N, d_1, ..., d_K)` with ``reduction='none'``.
"""


def log_probabilities(input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``log_softmax`` over the classes and its value at the target class."""
    check_class_target(input, target)
    logp = F.log_softmax(input, dim=1)
    return logp, gather_class(logp, target)


# ------------------------------------------------------------------ functional forms
def cross_entropy_loss(input: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0,
                       reduction: str = "mean") -> torch.Tensor:
    """Softmax cross-entropy; see :class:`CrossEntropyLoss`."""
    check_class_target(input, target)
    CrossEntropyLoss.check_params(label_smoothing=label_smoothing)
    loss = F.cross_entropy(input, target, label_smoothing=label_smoothing, reduction="none")
    return reduce(loss, reduction)


def nll_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of log-probabilities; see :class:`NLLLoss`."""
    check_class_target(input, target)
    return reduce(-gather_class(input, target), reduction)


def focal_loss(input: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = -1.0,
               reduction: str = "mean") -> torch.Tensor:
    """Softmax focal loss; see :class:`FocalLoss`."""
    FocalLoss.check_params(gamma=gamma, alpha=alpha)
    _, logp_t = log_probabilities(input, target)
    loss = -focal_factor(-torch.expm1(logp_t), gamma) * logp_t
    if alpha >= 0:  # kornia >= 0.9: class 0 (background) weighs 1 - alpha, the others alpha
        loss = torch.where(target == 0, 1 - alpha, alpha).to(loss.dtype) * loss
    return reduce(loss, reduction)


def poly1_loss(input: torch.Tensor, target: torch.Tensor, epsilon: float = 1.0,
               reduction: str = "mean") -> torch.Tensor:
    """Poly-1 loss, ``CE + epsilon*(1 - p_t)``; see :class:`Poly1Loss`."""
    _, logp_t = log_probabilities(input, target)
    return reduce(-logp_t + epsilon * (1 - logp_t.exp()), reduction)


def multi_margin_loss(input: torch.Tensor, target: torch.Tensor, p: float = 1.0, margin: float = 1.0,
                      reduction: str = "mean") -> torch.Tensor:
    """Multiclass hinge loss; see :class:`MultiMarginLoss`."""
    if input.dim() != 2:
        raise LossInputError(f"multi_margin takes [N, C] scores, got shape {tuple(input.shape)}")
    check_class_target(input, target)
    MultiMarginLoss.check_params(p=p, margin=margin)
    return reduce(F.multi_margin_loss(input, target, p=int(p), margin=margin, reduction="none"), reduction)


def kl_div_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """KL divergence of log-probabilities from target probabilities; see :class:`KLDivLoss`."""
    check_same_shape(input, target)
    if input.dim() < 2:
        raise LossInputError(f"kl_div takes [N, C, *] log-probabilities, got shape {tuple(input.shape)}")
    return reduce(F.kl_div(input, target, reduction="none").sum(dim=1), reduction)


def class_balanced_weights(class_counts, beta: float, like: torch.Tensor | None = None) -> torch.Tensor:
    """Cui et al.'s weights ``(1 - beta) / (1 - beta**n_c)``, normalised to sum to the number of classes."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() < 2:
        raise LossParameterError(f"class_counts must be a 1-d sequence of per-class counts, got shape "
                                 f"{tuple(counts.shape)}")
    if bool((counts <= 0).any()):
        raise LossParameterError("class_counts must all be > 0 (a class with no sample gets an infinite weight)")
    if not 0 <= beta < 1:
        raise LossParameterError(f"beta must be in [0, 1), got {beta}")
    weights = (1 - beta) / (1 - beta**counts)
    weights = weights / weights.sum() * counts.numel()
    if like is not None:
        weights = weights.to(dtype=like.dtype, device=like.device)
    return weights


def class_balanced_cross_entropy_loss(input: torch.Tensor, target: torch.Tensor, class_counts, beta: float = 0.999,
                                      reduction: str = "mean") -> torch.Tensor:
    """Class-balanced cross-entropy; see :class:`ClassBalancedCELoss`."""
    return _weighted_cross_entropy(input, target, class_balanced_weights(class_counts, beta), reduction)


def _weighted_cross_entropy(input: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                            reduction: str) -> torch.Tensor:
    check_class_target(input, target)
    if weights.numel() != input.shape[1]:
        raise LossInputError(f"class_counts has {weights.numel()} entries for {input.shape[1]} classes")
    w = weights.to(dtype=input.dtype, device=input.device)
    return reduce(w[target] * F.cross_entropy(input, target, reduction="none"), reduction)


def ldam_margins(class_counts, max_margin: float) -> torch.Tensor:
    """Cao et al.'s margins ``n_c**-1/4``, scaled so that the largest is ``max_margin``."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() != 1 or bool((counts <= 0).any()):
        raise LossParameterError("class_counts must be a 1-d sequence of positive per-class counts")
    m = counts ** -0.25
    return m * (max_margin / m.max())


def ldam_loss(input: torch.Tensor, target: torch.Tensor, class_counts, max_margin: float = 0.5, scale: float = 30.0,
              reduction: str = "mean") -> torch.Tensor:
    """Label-distribution-aware margin loss; see :class:`LDAMLoss`."""
    LDAMLoss.check_params(max_margin=max_margin, scale=scale)
    return _margin_cross_entropy(input, target, ldam_margins(class_counts, max_margin), scale, reduction)


def _margin_cross_entropy(input: torch.Tensor, target: torch.Tensor, margins: torch.Tensor, scale: float,
                          reduction: str) -> torch.Tensor:
    check_class_target(input, target)
    if margins.numel() != input.shape[1]:
        raise LossInputError(f"class_counts has {margins.numel()} entries for {input.shape[1]} classes")
    m = margins.to(dtype=input.dtype, device=input.device)
    shifted = input - one_hot_like(input, target) * m[target].unsqueeze(1)
    return reduce(F.cross_entropy(scale * shifted, target, reduction="none"), reduction)


# ------------------------------------------------------------------ modules
class CrossEntropyLoss(CatalogueLoss):
    __doc__ = r"""Softmax cross-entropy, optionally with label smoothing (Szegedy et al. 2016).

    With :math:`q = \operatorname{softmax}(z)` over :math:`C` classes and smoothing
    :math:`\varepsilon`, the unreduced loss is
    :math:`\ell(z, y) = -\sum_c ((1 - \varepsilon) [c = y] + \varepsilon / C) \log q_c`
    (the mass :math:`\varepsilon / C` also goes to the true class), equal to
    ``F.cross_entropy(z, y, label_smoothing=eps)``.

    Args:
        label_smoothing: :math:`\varepsilon`, in [0, 1]. Default: 0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"label_smoothing": 0.0}
    functional = staticmethod(cross_entropy_loss)

    @classmethod
    def check_params(cls, label_smoothing: float) -> None:
        in_range("label_smoothing", label_smoothing, 0.0, 1.0, closed=True)


class NLLLoss(CatalogueLoss):
    __doc__ = r"""Negative log-likelihood of log-probabilities.

    The unreduced loss is :math:`\ell(x, y) = -x_y` for log-probabilities :math:`x`,
    equal to ``F.nll_loss``; on ``log_softmax`` outputs it is the cross-entropy.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, d_1, ..., d_K)` log-probabilities.
        - Target: :math:`(N)` or :math:`(N, d_1, ..., d_K)` class indices.
        - Output: scalar; :math:`(N)` or :math:`(N, d_1, ..., d_K)` with ``reduction='none'``.
"""
    functional = staticmethod(nll_loss)


class FocalLoss(CatalogueLoss):
    __doc__ = r"""Softmax focal loss (Lin et al. 2017).

    With :math:`p_t` the softmax probability of the true class, the unreduced loss is
    :math:`\ell(z, y) = -\alpha_t (1 - p_t)^\gamma \log p_t`.  By default there is no
    :math:`\alpha_t`; ``alpha >= 0`` follows kornia 0.9's ``focal_loss``: class 0
    weighs :math:`1 - \alpha` and every other class :math:`\alpha`.  The per-sample
    values equal kornia's ``reduction='none'`` output summed over the classes
    (kornia's ``'mean'`` also divides by the number of classes; this one does not).

    Args:
        gamma: focusing exponent, >= 0. Default: 2.
        alpha: class-0-vs-rest weight in [0, 1], or < 0 for none. Default: -1 (none).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"gamma": 2.0, "alpha": -1.0}
    functional = staticmethod(focal_loss)

    @classmethod
    def check_params(cls, gamma: float, alpha: float) -> None:
        non_negative("gamma", gamma)
        if alpha > 1:
            raise LossParameterError(f"alpha must be in [0, 1], or negative for no class weighting; got {alpha}")


class Poly1Loss(CatalogueLoss):
    __doc__ = r"""Poly-1 loss (Leng et al. 2022, PolyLoss).

    The unreduced loss is :math:`\ell(z, y) = -\log p_t + \varepsilon (1 - p_t)`:
    the cross-entropy with its first polynomial coefficient raised by :math:`\varepsilon`.

    Args:
        epsilon: the extra weight of :math:`1 - p_t` (the paper's default 1; timm uses 2). Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"epsilon": 1.0}
    functional = staticmethod(poly1_loss)


class MultiMarginLoss(CatalogueLoss):
    __doc__ = r"""Multiclass hinge loss (Weston & Watkins 1999).

    The unreduced loss is :math:`\ell(z, y) = \frac1C \sum_{i \ne y} \max(0, m - z_y + z_i)^p`,
    equal to ``F.multi_margin_loss`` (note the division by :math:`C`).

    Args:
        p: 1 or 2. Default: 1.
        margin: :math:`m`. Default: 1.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape:
        - Input: :math:`(N, C)` scores.
        - Target: :math:`(N)` class indices.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
    defaults = {"p": 1.0, "margin": 1.0}
    functional = staticmethod(multi_margin_loss)

    @classmethod
    def check_params(cls, p: float, margin: float) -> None:
        if p not in (1.0, 2.0):
            raise LossParameterError(f"p must be 1 or 2, got {p}")


class KLDivLoss(CatalogueLoss):
    __doc__ = r"""Kullback-Leibler divergence :math:`\mathrm{KL}(t \,\|\, q)`.

    The input holds log-probabilities :math:`\log q`, the target probabilities :math:`t`
    (as ``F.kl_div``); the unreduced loss is one value per sample,
    :math:`\ell = \sum_c t_c (\log t_c - \log q_c)` (:math:`0 \log 0 = 0`).  So
    ``reduction='mean'`` is torch's ``'batchmean'`` (torch's own ``'mean'`` divides
    by :math:`N \cdot C`).  With one-hot targets it is the cross-entropy.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape:
        - Input: :math:`(N, C, *)` log-probabilities.
        - Target: :math:`(N, C, *)` probabilities, same shape.
        - Output: scalar; :math:`(N, *)` with ``reduction='none'``.
"""
    functional = staticmethod(kl_div_loss)


class ClassBalancedCELoss(CatalogueLoss):
    __doc__ = r"""Class-balanced cross-entropy (Cui et al. 2019).

    Class :math:`c` with :math:`n_c` training samples weighs
    :math:`w_c \propto (1 - \beta) / (1 - \beta^{n_c})` (the inverse effective number
    of samples), normalised so that :math:`\sum_c w_c = C`; the unreduced loss is
    :math:`\ell(z, y) = w_y \cdot \mathrm{CE}(z, y)`.  ``'none'`` and ``'sum'`` equal
    ``F.cross_entropy(weight=w)``; ``'mean'`` averages over the samples, whereas
    torch's weighted ``'mean'`` divides by :math:`\sum_n w_{y_n}`.

    Args:
        class_counts: number of training samples of each class (required, all > 0).
        beta: in [0, 1); 0 gives the plain cross-entropy, :math:`\beta \to 1` inverse frequencies. Default: 0.999.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"beta": 0.999}
    functional = staticmethod(class_balanced_cross_entropy_loss)

    def __init__(self, class_counts, *, reduction: str = "mean", **params: float):
        super().__init__(reduction=reduction, **params)
        self.register_buffer("weight", class_balanced_weights(class_counts, self.params["beta"]))

    @classmethod
    def check_params(cls, beta: float) -> None:
        if not 0 <= beta < 1:
            raise LossParameterError(f"beta must be in [0, 1), got {beta}")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _weighted_cross_entropy(input, target, self.weight, self.reduction)


class LDAMLoss(CatalogueLoss):
    __doc__ = r"""Label-distribution-aware margin loss (Cao et al. 2019).

    The true-class logit is lowered by a margin :math:`\Delta_y \propto n_y^{-1/4}`
    (the largest margin is ``max_margin``) and the logits are scaled by ``scale``:
    :math:`\ell(z, y) = \mathrm{CE}(s (z - \Delta_y e_y), y)`, as in the authors' code.

    Args:
        class_counts: number of training samples of each class (required, all > 0).
        max_margin: the largest margin, > 0. Default: 0.5.
        scale: :math:`s`, > 0. Default: 30.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"max_margin": 0.5, "scale": 30.0}
    functional = staticmethod(ldam_loss)

    def __init__(self, class_counts, *, reduction: str = "mean", **params: float):
        super().__init__(reduction=reduction, **params)
        self.register_buffer("margins", ldam_margins(class_counts, self.params["max_margin"]))

    @classmethod
    def check_params(cls, max_margin: float, scale: float) -> None:
        positive("max_margin", max_margin)
        positive("scale", scale)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _margin_cross_entropy(input, target, self.margins, self.params["scale"], self.reduction)


# ------------------------------------------------------------------ symbolic forms
def _cross_entropy_expr(label_smoothing: float) -> str | None:
    # Smoothing puts eps/C on every class: the number of classes is not a terminal.
    return "-y*log(p)" if label_smoothing == 0 else None


def _focal_expr(gamma: float, alpha: float) -> str | None:
    # alpha >= 0 weighs class 0 differently from the others: not a per-column form.
    if alpha >= 0:
        return None
    return f"-y*(1 - p)**{num(gamma)}*log(p)" if gamma != 0 else "-y*log(p)"


_MULTI = dict(input="logits", target="index", task_kinds=("multiclass",), space="probability")

ENTRIES = [
    reference_loss("cross_entropy", family="multiclass",
                   formula="-sum_c ((1 - ls)*y_c + ls/C)*log(p_c), p = softmax(z), ls = label_smoothing",
                   module=CrossEntropyLoss, reference="Szegedy et al., Rethinking the Inception Architecture "
                   "(label smoothing), CVPR 2016; torch.nn.CrossEntropyLoss", expression=_cross_entropy_expr,
                   **_MULTI),
    reference_loss("nll", family="multiclass", formula="-x_y, x = log-probabilities", module=NLLLoss,
                   input="log_probabilities", target="index", task_kinds=("multiclass",), space="probability",
                   reference="torch.nn.NLLLoss", expression="-y*log(p)"),
    reference_loss("focal", family="imbalance", formula="-alpha_t*(1 - p_t)**gamma*log(p_t), p = softmax(z) "
                   "(no alpha_t unless alpha >= 0: 1 - alpha for class 0, alpha for the others)",
                   module=FocalLoss, reference="Lin et al., Focal Loss for Dense Object Detection, ICCV 2017; "
                   "kornia.losses.focal_loss", expression=_focal_expr, **_MULTI),
    reference_loss("poly1", family="multiclass", formula="-log(p_t) + epsilon*(1 - p_t), p = softmax(z)",
                   module=Poly1Loss, reference="Leng et al., PolyLoss: A Polynomial Expansion Perspective of "
                   "Classification Loss Functions, ICLR 2022",
                   expression=lambda epsilon: f"-y*log(p) + {num(epsilon)}*y*(1 - p)", **_MULTI),
    reference_loss("multi_margin", family="multiclass", formula="sum_{i != y} max(0, margin - z_y + z_i)**p / C",
                   module=MultiMarginLoss, reference="Weston & Watkins, Support vector machines for multi-class "
                   "pattern recognition, ESANN 1999; torch.nn.MultiMarginLoss",
                   input="logits", target="index", task_kinds=("multiclass",),
                   notes="pairs of logits: no elementwise form in (p, y)"),
    reference_loss("kl_div", family="multiclass", formula="sum_c t_c*(log(t_c) - x_c), x = log-probabilities",
                   module=KLDivLoss, input="log_probabilities", target="probabilities",
                   task_kinds=("multiclass",), space="probability",
                   reference="Kullback & Leibler, On Information and Sufficiency, 1951; Hinton et al., "
                   "Distilling the Knowledge in a Neural Network, 2015", expression="y*(log(y) - log(p))"),
    reference_loss("class_balanced_ce", family="imbalance",
                   formula="w_y*CE, w_c proportional to (1 - beta)/(1 - beta**n_c), sum_c w_c = C",
                   module=ClassBalancedCELoss, input="logits", target="index", task_kinds=("multiclass",),
                   extra_args=("class_counts",),
                   reference="Cui et al., Class-Balanced Loss Based on Effective Number of Samples, CVPR 2019",
                   notes="needs class_counts (a dataset statistic): no elementwise form"),
    reference_loss("ldam", family="imbalance", formula="CE(scale*(z - m_y*e_y)), m_c proportional to n_c**-0.25",
                   module=LDAMLoss, input="logits", target="index", task_kinds=("multiclass",),
                   extra_args=("class_counts",),
                   reference="Cao et al., Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss, "
                   "NeurIPS 2019", notes="needs class_counts and the logits: no elementwise form in (p, y)"),
]
