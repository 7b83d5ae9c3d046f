"""Metric-learning losses with learnable per-class parameters: ArcFace, CosFace, center loss.

``forward(embeddings, labels)`` with embeddings ``[N, D]`` and class indices
``[N]``; the class weights (``W``, ``[D, C]`` as pytorch-metric-learning) or
centres (``centers``, ``[C, D]``) are module parameters, trained with the
model.  ``num_classes`` and ``embedding_size`` are required.  The unreduced
loss is one value per sample, ``[N]``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import _BATCH_SHAPE, _EMB, _RED, check_embedding_batch
from .errors import LossInputError, LossParameterError
from .loss import check_reduction, non_negative, positive, reduce, reference_loss, resolve_params

_CLASS_ARGS = ("num_classes", "embedding_size")


def margin_softmax_logits(embeddings: torch.Tensor, labels: torch.Tensor, W: torch.Tensor, kind: str,
                          margin: float) -> torch.Tensor:
    """Cosine logits ``[N, C]`` of embeddings against class weights ``W [D, C]``, the target
    class's cosine replaced by ArcFace's ``cos(theta + m)`` or CosFace's ``cos(theta) - m``."""
    check_embedding_batch(embeddings, labels)
    if embeddings.shape[1] != W.shape[0]:
        raise LossInputError(f"embeddings have {embeddings.shape[1]} dimensions, the loss was built for "
                             f"embedding_size={W.shape[0]}")
    if bool(((labels < 0) | (labels >= W.shape[1])).any()):
        raise LossInputError(f"labels must be in [0, {W.shape[1]}) (num_classes={W.shape[1]})")
    cos = F.normalize(embeddings, dim=1) @ F.normalize(W.to(embeddings.dtype), dim=0)
    c = cos.gather(1, labels[:, None]).squeeze(1)
    if kind == "arcface":
        sin = (1 - c**2).clamp_min(1e-12).sqrt()  # no acos: a finite gradient at cos = +-1
        plus = c * math.cos(margin) - sin * math.sin(margin)
        # past theta = pi - m, cos(theta + m) would rise again: pytorch-metric-learning's linear continuation
        modified = torch.where(c >= -math.cos(margin), plus, c - margin * math.sin(margin))
    else:
        modified = c - margin
    return cos.scatter(1, labels[:, None], modified[:, None])


def arcface_loss(embeddings: torch.Tensor, labels: torch.Tensor, W: torch.Tensor, margin: float = 28.6,
                 scale: float = 64.0, reduction: str = "mean") -> torch.Tensor:
    """ArcFace (additive angular margin, ``margin`` in degrees); see :class:`ArcFaceLoss`."""
    logits = margin_softmax_logits(embeddings, labels, W, "arcface", math.radians(margin))
    return reduce(F.cross_entropy(scale * logits, labels, reduction="none"), reduction)


def cosface_loss(embeddings: torch.Tensor, labels: torch.Tensor, W: torch.Tensor, margin: float = 0.35,
                 scale: float = 64.0, reduction: str = "mean") -> torch.Tensor:
    """CosFace (additive cosine margin); see :class:`CosFaceLoss`."""
    logits = margin_softmax_logits(embeddings, labels, W, "cosface", margin)
    return reduce(F.cross_entropy(scale * logits, labels, reduction="none"), reduction)


def center_loss(embeddings: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
    """Center loss ``||x - c_y||^2 / 2``; see :class:`CenterLoss`."""
    check_embedding_batch(embeddings, labels)
    if centers.shape[1] != embeddings.shape[1]:
        raise LossInputError(f"embeddings have {embeddings.shape[1]} dimensions, the centers "
                             f"{centers.shape[1]} (embedding_size)")
    if bool(((labels < 0) | (labels >= centers.shape[0])).any()):
        raise LossInputError(f"labels must be in [0, {centers.shape[0]}) (num_classes={centers.shape[0]})")
    return reduce(((embeddings - centers.to(embeddings.dtype)[labels]) ** 2).sum(dim=1) / 2, reduction)



class _ClassParameterLoss(nn.Module):
    """A loss with learnable per-class parameters (module parameters, trained with the model)."""

    defaults: dict = {}

    def __init__(self, num_classes: int | None = None, embedding_size: int | None = None, *,
                 reduction: str = "mean", **params: float):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LossParameterError(f"{type(self).__name__} needs {name}, a positive integer (its class "
                                         f"parameters are [embedding_size, num_classes]), got {value!r}")
        self.reduction = check_reduction(reduction)
        self.params = resolve_params(type(self).__name__, self.defaults, params)
        self.check_params(**self.params)

    @classmethod
    def check_params(cls, **params: float) -> None:
        """Raise :class:`LossParameterError` for values outside the loss's domain."""

    def extra_repr(self) -> str:
        return ", ".join([f"{k}={v:g}" for k, v in self.params.items()] + [f"reduction={self.reduction!r}"])


class ArcFaceLoss(_ClassParameterLoss):
    __doc__ = r"""ArcFace, additive angular margin loss (Deng et al. 2019), as pytorch-metric-learning.

    With :math:`\theta_c` the angle between the embedding and the class weight
    column :math:`W_c` (the module parameter ``W``, :math:`(D, C)`, as
    pytorch-metric-learning, so a state dict transfers), the unreduced loss is
    the cross-entropy of :math:`s \cos(\theta_y + m)` for the true class and
    :math:`s \cos\theta_c` for the others.  ``margin`` is in **degrees**
    (28.6 degrees = 0.5 rad); past :math:`\theta_y = \pi - m`,
    :math:`\cos\theta_y - m \sin m` keeps the loss monotonic.

    Args:
        num_classes: :math:`C` (required). embedding_size: :math:`D` (required).
        margin: :math:`m` in degrees, in [0, 90). Default: 28.6.
        scale: :math:`s`, > 0. Default: 64.
""" + _RED + _BATCH_SHAPE
    defaults = {"margin": 28.6, "scale": 64.0}

    def __init__(self, num_classes: int | None = None, embedding_size: int | None = None, *,
                 reduction: str = "mean", **params: float):
        super().__init__(num_classes, embedding_size, reduction=reduction, **params)
        self.W = nn.Parameter(torch.empty(embedding_size, num_classes))
        nn.init.normal_(self.W)  # pytorch-metric-learning's default initialisation

    @classmethod
    def check_params(cls, margin: float, scale: float) -> None:
        if not 0 <= margin < 90:
            raise LossParameterError(f"margin is in degrees and must be in [0, 90), got {margin}")
        positive("scale", scale)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return arcface_loss(embeddings, labels, self.W, **self.params, reduction=self.reduction)


class CosFaceLoss(ArcFaceLoss):
    __doc__ = r"""CosFace, large margin cosine loss (Wang et al. 2018), as pytorch-metric-learning.

    The cross-entropy of :math:`s (\cos\theta_y - m)` for the true class and
    :math:`s \cos\theta_c` for the others, :math:`\theta_c` the angle to the class
    weight column :math:`W_c` (module parameter ``W``, :math:`(D, C)`).

    Args:
        num_classes: :math:`C` (required). embedding_size: :math:`D` (required).
        margin: :math:`m`, the cosine margin, >= 0. Default: 0.35.
        scale: :math:`s`, > 0. Default: 64.
""" + _RED + _BATCH_SHAPE
    defaults = {"margin": 0.35, "scale": 64.0}

    @classmethod
    def check_params(cls, margin: float, scale: float) -> None:
        non_negative("margin", margin)
        positive("scale", scale)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosface_loss(embeddings, labels, self.W, **self.params, reduction=self.reduction)


class CenterLoss(_ClassParameterLoss):
    __doc__ = r"""Center loss (Wen et al. 2016).

    The unreduced loss is :math:`\frac12 \|x - c_y\|^2`, the squared distance of
    each embedding to its class centre; the centres are the module parameter
    ``centers`` :math:`(C, D)`, learnt by gradient descent with the model (the
    paper's separate centre update with rate :math:`\alpha` is that gradient step).
    It is used next to a softmax loss, :math:`L = L_S + \lambda L_C`.

    Args:
        num_classes: :math:`C` (required). embedding_size: :math:`D` (required).
""" + _RED + _BATCH_SHAPE

    def __init__(self, num_classes: int | None = None, embedding_size: int | None = None, *,
                 reduction: str = "mean"):
        super().__init__(num_classes, embedding_size, reduction=reduction)
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_size))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return center_loss(embeddings, labels, self.centers, reduction=self.reduction)


ENTRIES = [
    reference_loss("arcface", formula="CE(scale*[cos(theta_y + margin), cos(theta_c)]), margin in degrees",
                   module=ArcFaceLoss, input="embeddings", target="index", extra_args=_CLASS_ARGS,
                   reference="Deng et al., ArcFace: Additive Angular Margin Loss for Deep Face Recognition, CVPR "
                   "2019; pytorch_metric_learning.losses.ArcFaceLoss", **_EMB),
    reference_loss("cosface", formula="CE(scale*[cos(theta_y) - margin, cos(theta_c)])", module=CosFaceLoss,
                   input="embeddings", target="index", extra_args=_CLASS_ARGS,
                   reference="Wang et al., CosFace: Large Margin Cosine Loss for Deep Face Recognition, CVPR 2018; "
                   "pytorch_metric_learning.losses.CosFaceLoss", **_EMB),
    reference_loss("center", formula="||x - c_y||**2/2, learnable class centres c", module=CenterLoss,
                   input="embeddings", target="index", extra_args=_CLASS_ARGS, params={},
                   reference="Wen et al., A Discriminative Feature Learning Approach for Deep Face Recognition, "
                   "ECCV 2016", **_EMB),
]
