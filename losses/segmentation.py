"""Set-level segmentation losses: overlap ratios of soft predictions and targets.

Input: logits ``[N, C, *spatial]``.  With ``C >= 2`` the probabilities are the
softmax over dim 1 and the target holds class indices ``[N, *spatial]``; with
``C == 1`` the map is binary, the probability is ``sigmoid(z)`` of the
foreground and the target holds 0/1 labels ``[N, *spatial]``.

Per sample and class, ``TP = sum p*t``, ``FP = sum p*(1 - t)`` and
``FN = sum (1 - p)*t`` over the pixels.  A multiclass score is averaged over
the classes present in the sample's target (kornia's convention for Tversky
and for Dice with ``average='macro'``); the binary map scores its foreground.
The unreduced loss is one value per sample, ``[N]``; ``'mean'`` averages it
over the batch (kornia's value), which is not smp's convention of pooling the
sums over the whole batch.

These losses are ratios of sums, not elementwise in ``(p, y)``: they have no
expression (``expr=None``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import LossInputError
from .loss import CatalogueLoss, non_negative, positive, reduce, reference_loss

_SHAPE = """
    Shape:
        - Input: :math:`(N, C, *)` logits; :math:`C = 1` for a binary map (sigmoid), else softmax over dim 1.
        - Target: :math:`(N, *)` class indices (``torch.long``), or 0/1 labels when :math:`C = 1`.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""


# ------------------------------------------------------------------ shared statistics
def probabilities_and_targets(input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``p`` and one-hot ``t``, both ``[N, K, S]`` (K = C classes, or the foreground when C = 1)."""
    if input.dim() < 2:
        raise LossInputError(f"input must be [N, C, *spatial] logits, got shape {tuple(input.shape)}")
    expected = input.shape[:1] + input.shape[2:]
    if target.shape != expected:
        raise LossInputError(f"input shape {tuple(input.shape)} needs target shape {tuple(expected)} "
                             f"(class dimension 1 removed), got {tuple(target.shape)}")
    n, c = input.shape[:2]
    if c == 1:
        p = torch.sigmoid(input).reshape(n, 1, -1)
        t = target.to(input.dtype).reshape(n, 1, -1)
        return p, t
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise LossInputError(f"with C = {c} classes the target must hold class indices (torch.long), "
                             f"got dtype {target.dtype}")
    p = F.softmax(input, dim=1).reshape(n, c, -1)
    t = F.one_hot(target.long().reshape(n, -1), c).to(input.dtype).transpose(1, 2)
    return p, t


def present_classes(t: torch.Tensor) -> torch.Tensor:
    """Classes that count in the class mean, ``[N, K]``: all of a binary map's
    foreground, the classes present in the target of a multiclass one."""
    if t.shape[1] == 1:
        return torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)
    return t.sum(dim=2) > 0


def class_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [N, K]`` over the classes in ``mask``."""
    m = mask.to(values.dtype)
    return (values * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)


def tversky_index(input: torch.Tensor, target: torch.Tensor, alpha: float, beta: float, smooth: float,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class Tversky index ``(TP + s) / (TP + alpha FP + beta FN + s + eps)`` ``[N, K]`` and the class mask."""
    p, t = probabilities_and_targets(input, target)
    tp = (p * t).sum(dim=2)
    fp = (p * (1 - t)).sum(dim=2)
    fn = ((1 - p) * t).sum(dim=2)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth + eps), present_classes(t)


def _check_overlap_params(smooth: float, eps: float) -> None:
    non_negative("smooth", smooth)
    non_negative("eps", eps)


# ------------------------------------------------------------------ functional forms
def dice_loss(input: torch.Tensor, target: torch.Tensor, smooth: float = 0.0, eps: float = 1e-8,
              reduction: str = "mean") -> torch.Tensor:
    """Soft Dice loss; see :class:`DiceLoss`."""
    _check_overlap_params(smooth, eps)
    p, t = probabilities_and_targets(input, target)
    score = (2 * (p * t).sum(dim=2) + smooth) / (p.sum(dim=2) + t.sum(dim=2) + smooth + eps)
    return reduce(1 - class_mean(score, present_classes(t)), reduction)


def jaccard_loss(input: torch.Tensor, target: torch.Tensor, smooth: float = 0.0, eps: float = 1e-8,
                 reduction: str = "mean") -> torch.Tensor:
    """Soft Jaccard (IoU) loss; see :class:`JaccardLoss`."""
    _check_overlap_params(smooth, eps)
    p, t = probabilities_and_targets(input, target)
    inter = (p * t).sum(dim=2)
    score = (inter + smooth) / (p.sum(dim=2) + t.sum(dim=2) - inter + smooth + eps)
    return reduce(1 - class_mean(score, present_classes(t)), reduction)


def tversky_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7,
                 smooth: float = 0.0, eps: float = 1e-8, reduction: str = "mean") -> torch.Tensor:
    """Tversky loss; see :class:`TverskyLoss`."""
    TverskyLoss.check_params(alpha=alpha, beta=beta, smooth=smooth, eps=eps)
    ti, mask = tversky_index(input, target, alpha, beta, smooth, eps)
    return reduce(1 - class_mean(ti, mask), reduction)


def focal_tversky_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7,
                       gamma: float = 0.75, smooth: float = 0.0, eps: float = 1e-8,
                       reduction: str = "mean") -> torch.Tensor:
    """Focal Tversky loss; see :class:`FocalTverskyLoss`."""
    FocalTverskyLoss.check_params(alpha=alpha, beta=beta, gamma=gamma, smooth=smooth, eps=eps)
    ti, mask = tversky_index(input, target, alpha, beta, smooth, eps)
    return reduce(class_mean(1 - ti, mask).clamp_min(0) ** gamma, reduction)


def log_cosh_dice_loss(input: torch.Tensor, target: torch.Tensor, smooth: float = 0.0, eps: float = 1e-8,
                       reduction: str = "mean") -> torch.Tensor:
    """``log(cosh(dice_loss))`` per sample; see :class:`LogCoshDiceLoss`."""
    d = dice_loss(input, target, smooth=smooth, eps=eps, reduction="none").abs()
    return reduce(d + F.softplus(-2 * d) - math.log(2.0), reduction)


def squared_dice_loss(input: torch.Tensor, target: torch.Tensor, smooth: float = 0.0, eps: float = 1e-8,
                      reduction: str = "mean") -> torch.Tensor:
    """Dice loss with squared terms in the denominator (V-Net); see :class:`SquaredDiceLoss`."""
    _check_overlap_params(smooth, eps)
    p, t = probabilities_and_targets(input, target)
    score = (2 * (p * t).sum(dim=2) + smooth) / ((p**2).sum(dim=2) + (t**2).sum(dim=2) + smooth + eps)
    return reduce(1 - class_mean(score, present_classes(t)), reduction)


def generalized_dice_loss(input: torch.Tensor, target: torch.Tensor, smooth_nr: float = 1e-5,
                          smooth_dr: float = 1e-5, reduction: str = "mean") -> torch.Tensor:
    """Generalized Dice loss with weights ``1 / (sum t_c)**2``; see :class:`GeneralizedDiceLoss`."""
    non_negative("smooth_nr", smooth_nr)
    positive("smooth_dr", smooth_dr)
    p, t = probabilities_and_targets(input, target)
    ground = t.sum(dim=2)
    w = 1 / ground**2
    absent = torch.isinf(w)
    # As monai: an absent class (infinite weight) takes the largest weight of the sample's other classes.
    w = w.masked_fill(absent, 0)
    w = w + absent * w.max(dim=1, keepdim=True).values
    numer = 2 * (w * (p * t).sum(dim=2)).sum(dim=1) + smooth_nr
    denom = (w * (p.sum(dim=2) + ground)).sum(dim=1) + smooth_dr
    return reduce(1 - numer / denom, reduction)


def lovasz_gradient(sorted_targets: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at targets sorted by decreasing error (last dim)."""
    gts = sorted_targets.sum(dim=-1, keepdim=True)
    intersection = gts - sorted_targets.cumsum(dim=-1)
    union = gts + (1 - sorted_targets).cumsum(dim=-1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def lovasz_hinge_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Lovász hinge of a binary map, per image; see :class:`LovaszHingeLoss`."""
    if input.dim() < 2 or input.shape[1] != 1:
        raise LossInputError(f"lovasz_hinge takes one logit channel [N, 1, *spatial], got shape {tuple(input.shape)}; "
                             f"use lovasz_softmax for several classes")
    _, t = probabilities_and_targets(input, target)
    z = input.reshape(input.shape[0], -1)
    t = t.reshape(z.shape)
    errors = 1 - z * (2 * t - 1)
    errors_sorted, order = errors.sort(dim=1, descending=True)
    grad = lovasz_gradient(t.gather(1, order))
    return reduce((F.relu(errors_sorted) * grad).sum(dim=1), reduction)


def lovasz_softmax_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Lovász-softmax over the classes present in each image; see :class:`LovaszSoftmaxLoss`."""
    if input.dim() < 2 or input.shape[1] < 2:
        raise LossInputError(f"lovasz_softmax takes [N, C, *spatial] logits with C >= 2, got shape "
                             f"{tuple(input.shape)}; use lovasz_hinge for one channel")
    p, t = probabilities_and_targets(input, target)
    errors = (t - p).abs()
    errors_sorted, order = errors.sort(dim=2, descending=True)
    per_class = (errors_sorted * lovasz_gradient(t.gather(2, order))).sum(dim=2)
    return reduce(class_mean(per_class, present_classes(t)), reduction)


# ------------------------------------------------------------------ modules
class DiceLoss(CatalogueLoss):
    __doc__ = r"""Soft Dice loss (Sørensen-Dice coefficient; Milletari et al. 2016).

    Per sample and class, :math:`D_c = (2 TP_c + s) / (\sum p_c + \sum t_c + s + \epsilon)`;
    the unreduced loss is :math:`1 - ` the mean of :math:`D_c` over the classes present
    in the sample.  With :math:`s = 0` and ``'mean'`` it equals
    ``kornia.losses.dice_loss(average='macro', eps=eps)``.

    Args:
        smooth: :math:`s`, added to numerator and denominator, >= 0. Default: 0.
        eps: added to the denominator, >= 0. Default: 1e-8.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"smooth": 0.0, "eps": 1e-8}
    functional = staticmethod(dice_loss)

    @classmethod
    def check_params(cls, smooth: float, eps: float) -> None:
        _check_overlap_params(smooth, eps)


class JaccardLoss(CatalogueLoss):
    __doc__ = r"""Soft Jaccard (IoU) loss (Rahman & Wang 2016).

    Per sample and class, :math:`J_c = (TP_c + s) / (\sum p_c + \sum t_c - TP_c + s + \epsilon)`;
    the unreduced loss is :math:`1 - ` the mean of :math:`J_c` over the present classes
    (Tversky with :math:`\alpha = \beta = 1`).

    Args:
        smooth: :math:`s`, >= 0. Default: 0.
        eps: added to the denominator, >= 0. Default: 1e-8.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"smooth": 0.0, "eps": 1e-8}
    functional = staticmethod(jaccard_loss)

    @classmethod
    def check_params(cls, smooth: float, eps: float) -> None:
        _check_overlap_params(smooth, eps)


class TverskyLoss(CatalogueLoss):
    __doc__ = r"""Tversky loss (Salehi et al. 2017).

    Per sample and class, :math:`T_c = (TP_c + s) / (TP_c + \alpha FP_c + \beta FN_c + s + \epsilon)`:
    :math:`\alpha` weights false positives, :math:`\beta` false negatives.  The unreduced
    loss is :math:`1 - ` the mean of :math:`T_c` over the present classes; with
    :math:`s = 0` and ``'mean'`` it equals ``kornia.losses.tversky_loss(alpha, beta, eps)``.
    :math:`\alpha = \beta = 1/2` gives Dice, :math:`\alpha = \beta = 1` Jaccard.

    Args:
        alpha: weight of false positives, >= 0. Default: 0.3 (Salehi et al.).
        beta: weight of false negatives, >= 0. Default: 0.7.
        smooth: :math:`s`, >= 0. Default: 0.
        eps: added to the denominator, >= 0. Default: 1e-8.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"alpha": 0.3, "beta": 0.7, "smooth": 0.0, "eps": 1e-8}
    functional = staticmethod(tversky_loss)

    @classmethod
    def check_params(cls, alpha: float, beta: float, smooth: float, eps: float) -> None:
        non_negative("alpha", alpha)
        non_negative("beta", beta)
        _check_overlap_params(smooth, eps)


class FocalTverskyLoss(CatalogueLoss):
    __doc__ = r"""Focal Tversky loss (Abraham & Khan 2019).

    The unreduced loss is :math:`(\overline{1 - T_c})^\gamma`: the class mean of the
    Tversky loss (see :class:`TverskyLoss`) raised to :math:`\gamma`, as smp's
    ``TverskyLoss(gamma=...)``; the paper's :math:`1/\gamma` with :math:`\gamma = 4/3`
    is :math:`\gamma = 0.75` here.  For a binary map it is the paper's per-class form.

    Args:
        alpha: weight of false positives, >= 0. Default: 0.3.
        beta: weight of false negatives, >= 0. Default: 0.7.
        gamma: exponent, > 0. Default: 0.75.
        smooth: :math:`s`, >= 0. Default: 0.
        eps: added to the denominator, >= 0. Default: 1e-8.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"alpha": 0.3, "beta": 0.7, "gamma": 0.75, "smooth": 0.0, "eps": 1e-8}
    functional = staticmethod(focal_tversky_loss)

    @classmethod
    def check_params(cls, alpha: float, beta: float, gamma: float, smooth: float, eps: float) -> None:
        TverskyLoss.check_params(alpha=alpha, beta=beta, smooth=smooth, eps=eps)
        positive("gamma", gamma)


class LogCoshDiceLoss(CatalogueLoss):
    __doc__ = r"""Log-cosh Dice loss (Jadon 2020).

    The unreduced loss is :math:`\log\cosh(L_{Dice})` of each sample's Dice loss
    (:class:`DiceLoss`), computed stably; ``'mean'`` averages over the samples.

    Args:
        smooth: :math:`s`, >= 0. Default: 0.
        eps: added to the denominator, >= 0. Default: 1e-8.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"smooth": 0.0, "eps": 1e-8}
    functional = staticmethod(log_cosh_dice_loss)

    @classmethod
    def check_params(cls, smooth: float, eps: float) -> None:
        _check_overlap_params(smooth, eps)


class SquaredDiceLoss(CatalogueLoss):
    __doc__ = r"""Dice loss with squared denominators (Milletari et al. 2016, V-Net).

    Per sample and class, :math:`D_c = (2 TP_c + s) / (\sum p_c^2 + \sum t_c^2 + s + \epsilon)`;
    the unreduced loss is :math:`1 - ` the mean over the present classes.

    Args:
        smooth: :math:`s`, >= 0. Default: 0.
        eps: added to the denominator, >= 0. Default: 1e-8.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"smooth": 0.0, "eps": 1e-8}
    functional = staticmethod(squared_dice_loss)

    @classmethod
    def check_params(cls, smooth: float, eps: float) -> None:
        _check_overlap_params(smooth, eps)


class GeneralizedDiceLoss(CatalogueLoss):
    __doc__ = r"""Generalized Dice loss (Sudre et al. 2017).

    With class weights :math:`w_c = 1 / (\sum t_c)^2` per sample, the unreduced loss is
    :math:`1 - (2 \sum_c w_c TP_c + s_n) / (\sum_c w_c (\sum p_c + \sum t_c) + s_d)`, as
    monai's ``GeneralizedDiceLoss(w_type='square')`` (a class absent from the sample
    takes the largest weight of the others).

    Args:
        smooth_nr: added to the numerator, >= 0. Default: 1e-5.
        smooth_dr: added to the denominator, > 0. Default: 1e-5.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
""" + _SHAPE
    defaults = {"smooth_nr": 1e-5, "smooth_dr": 1e-5}
    functional = staticmethod(generalized_dice_loss)

    @classmethod
    def check_params(cls, smooth_nr: float, smooth_dr: float) -> None:
        non_negative("smooth_nr", smooth_nr)
        positive("smooth_dr", smooth_dr)


class LovaszHingeLoss(CatalogueLoss):
    r"""Lovász hinge loss of a binary map (Berman et al. 2018), per image.

    The Lovász extension of the Jaccard loss evaluated at the hinge errors
    :math:`\max(0, 1 - z (2t - 1))` sorted in decreasing order; it needs the sort
    over all pixels of an image, so it has no elementwise form.  ``'mean'``
    equals ``kornia.losses.lovasz_hinge_loss``.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape:
        - Input: :math:`(N, 1, *)` logits.
        - Target: :math:`(N, *)` 0/1 labels.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
    """

    functional = staticmethod(lovasz_hinge_loss)


class LovaszSoftmaxLoss(CatalogueLoss):
    r"""Lovász-softmax loss (Berman et al. 2018), per image, over the present classes.

    For each class present in the image's target, the Lovász extension of its
    Jaccard loss at the errors :math:`|t_c - p_c|` sorted in decreasing order
    (``classes='present'``, the authors' default); the unreduced loss is the mean
    over those classes.  kornia's ``lovasz_softmax_loss`` averages over all
    classes instead, so the two agree when every class is present.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape:
        - Input: :math:`(N, C, *)` logits, :math:`C \ge 2`.
        - Target: :math:`(N, *)` class indices.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
    """

    functional = staticmethod(lovasz_softmax_loss)


_SEG = dict(family="segmentation", input="logits", target="index", task_kinds=("segmentation",),
            notes="ratio of sums over the pixels: no elementwise form")

ENTRIES = [
    reference_loss("dice", formula="1 - mean_c (2*TP_c + s)/(sum p_c + sum t_c + s + eps)", module=DiceLoss,
                   reference="Milletari et al., V-Net, 3DV 2016; Sorensen-Dice coefficient; kornia.losses.dice_loss",
                   **_SEG),
    reference_loss("jaccard", formula="1 - mean_c (TP_c + s)/(sum p_c + sum t_c - TP_c + s + eps)",
                   module=JaccardLoss, reference="Rahman & Wang, Optimizing Intersection-Over-Union in Deep Neural "
                   "Networks for Image Segmentation, ISVC 2016", **_SEG),
    reference_loss("tversky", formula="1 - mean_c (TP_c + s)/(TP_c + alpha*FP_c + beta*FN_c + s + eps)",
                   module=TverskyLoss, reference="Salehi et al., Tversky loss function for image segmentation "
                   "using 3D fully convolutional deep networks, MLMI 2017", **_SEG),
    reference_loss("focal_tversky", formula="(mean_c (1 - TI_c))**gamma, TI = Tversky index",
                   module=FocalTverskyLoss, reference="Abraham & Khan, A Novel Focal Tversky loss function with "
                   "improved Attention U-Net for lesion segmentation, ISBI 2019", **_SEG),
    reference_loss("log_cosh_dice", formula="log(cosh(dice loss))", module=LogCoshDiceLoss,
                   reference="Jadon, A survey of loss functions for semantic segmentation, CIBCB 2020", **_SEG),
    reference_loss("squared_dice", formula="1 - mean_c (2*TP_c + s)/(sum p_c**2 + sum t_c**2 + s + eps)",
                   module=SquaredDiceLoss, reference="Milletari et al., V-Net: Fully Convolutional Neural Networks "
                   "for Volumetric Medical Image Segmentation, 3DV 2016", **_SEG),
    reference_loss("generalized_dice", formula="1 - (2*sum_c w_c*TP_c + s)/(sum_c w_c*(sum p_c + sum t_c) + s), "
                   "w_c = 1/(sum t_c)**2", module=GeneralizedDiceLoss,
                   reference="Sudre et al., Generalised Dice overlap as a deep learning loss function for highly "
                   "unbalanced segmentations, DLMIA 2017; monai.losses.GeneralizedDiceLoss", **_SEG),
    reference_loss("lovasz_hinge", formula="Lovasz extension of the Jaccard loss at sorted hinge errors "
                   "max(0, 1 - z*(2t - 1)), per image", module=LovaszHingeLoss,
                   reference="Berman, Triki & Blaschko, The Lovasz-Softmax loss, CVPR 2018",
                   **{**_SEG, "notes": "reference-only: needs a sort over the pixels, not grammar-expressible"}),
    reference_loss("lovasz_softmax", formula="mean over present classes of the Lovasz extension of the Jaccard "
                   "loss at sorted errors |t_c - p_c|, per image", module=LovaszSoftmaxLoss,
                   reference="Berman, Triki & Blaschko, The Lovasz-Softmax loss, CVPR 2018",
                   **{**_SEG, "notes": "reference-only: needs a sort over the pixels, not grammar-expressible"}),
]
