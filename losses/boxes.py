"""Bounding-box regression losses: the IoU family on paired boxes.

Input and target are boxes ``[N, 4]`` in ``(x1, y1, x2, y2)`` form with
``x2 >= x1`` and ``y2 >= y1``, row ``i`` of the input paired with row ``i`` of
the target (not all pairs, as ``torchvision.ops.box_iou``).  The unreduced
loss is one value per box pair, ``[N]``.  ``eps`` is placed as in
``torchvision.ops`` (added to the union and to the enclosing diagonal), so
``giou``, ``diou`` and ``ciou`` equal ``generalized_box_iou_loss``,
``distance_box_iou_loss`` and ``complete_box_iou_loss`` with ``reduction='none'``.

The coordinate losses ``smooth_l1`` and ``balanced_l1`` of the regression
family apply to box *deltas* (the offsets ``(dx, dy, dw, dh)`` of Fast R-CNN and
Libra R-CNN): pass ``[N, 4]`` deltas as input and target, they are element-wise.

These losses are functions of four coordinates at once, not element-wise in
``(p, y)``: they have no expression in the grammar.
"""
from __future__ import annotations

import math

import torch

from .errors import LossInputError
from .loss import CatalogueLoss, positive, reduce, reference_loss

_SHAPE = """
    Shape:
        - Input: :math:`(N, 4)` predicted boxes :math:`(x_1, y_1, x_2, y_2)`.
        - Target: :math:`(N, 4)` target boxes, :math:`x_2 \\ge x_1`, :math:`y_2 \\ge y_1`.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""


# ------------------------------------------------------------------ geometry shared by the family
def check_boxes(input: torch.Tensor, target: torch.Tensor) -> None:
    """Paired ``[N, 4]`` boxes; the target must be a valid box (x2 >= x1, y2 >= y1)."""
    for what, boxes in (("input", input), ("target", target)):
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise LossInputError(f"{what} must hold boxes [N, 4] as (x1, y1, x2, y2), got shape "
                                 f"{tuple(boxes.shape)} (reshape a single box with .reshape(1, 4))")
    if input.shape != target.shape:
        raise LossInputError(f"input boxes {tuple(input.shape)} and target boxes {tuple(target.shape)} differ; "
                             f"box losses pair row i of the input with row i of the target")
    bad = (target[:, 2] < target[:, 0]) | (target[:, 3] < target[:, 1])
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise LossInputError(f"target box {row} = {target[row].tolist()} has x2 < x1 or y2 < y1; boxes must be "
                             f"(x1, y1, x2, y2) corners (convert (cx, cy, w, h) boxes first)")


class BoxGeometry:
    """IoU, enclosing box and centre distances of paired boxes (torchvision's eps placement)."""

    def __init__(self, input: torch.Tensor, target: torch.Tensor, eps: float):
        x1, y1, x2, y2 = input.unbind(-1)
        x1g, y1g, x2g, y2g = target.unbind(-1)
        self.w, self.h = x2 - x1, y2 - y1
        self.wg, self.hg = x2g - x1g, y2g - y1g
        iw = (torch.minimum(x2, x2g) - torch.maximum(x1, x1g)).clamp_min(0)
        ih = (torch.minimum(y2, y2g) - torch.maximum(y1, y1g)).clamp_min(0)
        self.inter = iw * ih
        self.union = self.w * self.h + self.wg * self.hg - self.inter
        self.iou = self.inter / (self.union + eps)
        self.cw = torch.maximum(x2, x2g) - torch.minimum(x1, x1g)  # enclosing box
        self.ch = torch.maximum(y2, y2g) - torch.minimum(y1, y1g)
        self.dx = (x1g + x2g - x1 - x2) / 2  # centre offsets, target minus input
        self.dy = (y1g + y2g - y1 - y2) / 2
        self.eps = eps

    def diagonal2(self) -> torch.Tensor:
        return self.cw**2 + self.ch**2 + self.eps

    def centre_distance2(self) -> torch.Tensor:
        return self.dx**2 + self.dy**2


def _geometry(input, target, eps) -> BoxGeometry:
    check_boxes(input, target)
    return BoxGeometry(input, target, eps)


# ------------------------------------------------------------------ functional forms
def iou_loss(input: torch.Tensor, target: torch.Tensor, eps: float = 1e-7, reduction: str = "mean") -> torch.Tensor:
    """``1 - IoU`` of paired boxes; see :class:`IoULoss`."""
    return reduce(1 - _geometry(input, target, eps).iou, reduction)


def giou_loss(input: torch.Tensor, target: torch.Tensor, eps: float = 1e-7, reduction: str = "mean") -> torch.Tensor:
    """Generalized IoU loss; see :class:`GIoULoss`."""
    g = _geometry(input, target, eps)
    area_c = g.cw * g.ch
    return reduce(1 - g.iou + (area_c - g.union) / (area_c + eps), reduction)


def diou_loss(input: torch.Tensor, target: torch.Tensor, eps: float = 1e-7, reduction: str = "mean") -> torch.Tensor:
    """Distance IoU loss; see :class:`DIoULoss`."""
    g = _geometry(input, target, eps)
    return reduce(1 - g.iou + g.centre_distance2() / g.diagonal2(), reduction)


def aspect_term(w: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    """``atan(w / h)``, defined for a zero height (atan2 of a height clamped at eps)."""
    return torch.atan2(w, h.clamp_min(eps))


def ciou_loss(input: torch.Tensor, target: torch.Tensor, eps: float = 1e-7, reduction: str = "mean") -> torch.Tensor:
    """Complete IoU loss; see :class:`CIoULoss`."""
    g = _geometry(input, target, eps)
    v = (4 / math.pi**2) * (aspect_term(g.wg, g.hg, eps) - aspect_term(g.w, g.h, eps)) ** 2
    with torch.no_grad():  # as torchvision and the authors' code: the trade-off weight is not differentiated
        alpha = v / (1 - g.iou + v + eps)
    return reduce(1 - g.iou + g.centre_distance2() / g.diagonal2() + alpha * v, reduction)


def eiou_loss(input: torch.Tensor, target: torch.Tensor, eps: float = 1e-7, reduction: str = "mean") -> torch.Tensor:
    """Efficient IoU loss; see :class:`EIoULoss`."""
    g = _geometry(input, target, eps)
    shape = (g.w - g.wg) ** 2 / (g.cw**2 + eps) + (g.h - g.hg) ** 2 / (g.ch**2 + eps)
    return reduce(1 - g.iou + g.centre_distance2() / g.diagonal2() + shape, reduction)


def siou_loss(input: torch.Tensor, target: torch.Tensor, theta: float = 4.0, eps: float = 1e-7,
              reduction: str = "mean") -> torch.Tensor:
    """SCYLLA IoU loss; see :class:`SIoULoss`."""
    SIoULoss.check_params(theta=theta, eps=eps)
    g = _geometry(input, target, eps)
    sigma = torch.sqrt(g.centre_distance2() + eps**2)
    sin_x, sin_y = g.dx.abs() / sigma, g.dy.abs() / sigma
    # The angle to the nearer axis: sin(alpha) <= sqrt(2)/2, so sqrt(1 - s**2) stays away from 0.
    s = torch.where(sin_x > math.sqrt(0.5), sin_y, sin_x)
    angle = 2 * s * torch.sqrt(1 - s**2)  # Lambda = 1 - 2 sin^2(arcsin(s) - pi/4) = sin(2 arcsin(s))
    gamma = 2 - angle
    rho_x, rho_y = (g.dx / (g.cw + eps)) ** 2, (g.dy / (g.ch + eps)) ** 2
    distance = 2 - torch.exp(-gamma * rho_x) - torch.exp(-gamma * rho_y)
    omega_w = (g.w - g.wg).abs() / torch.maximum(g.w, g.wg).clamp_min(eps)
    omega_h = (g.h - g.hg).abs() / torch.maximum(g.h, g.hg).clamp_min(eps)
    shape = (1 - torch.exp(-omega_w)) ** theta + (1 - torch.exp(-omega_h)) ** theta
    return reduce(1 - g.iou + (distance + shape) / 2, reduction)


def alpha_iou_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 3.0, eps: float = 1e-7,
                   reduction: str = "mean") -> torch.Tensor:
    """Alpha-IoU loss ``1 - IoU**alpha``; see :class:`AlphaIoULoss`."""
    AlphaIoULoss.check_params(alpha=alpha, eps=eps)
    iou = _geometry(input, target, eps).iou
    return reduce(1 - iou.clamp_min(0) ** alpha, reduction)


# ------------------------------------------------------------------ modules
_EPS_DOC = "        eps: added to the union and the enclosing diagonal, > 0. Default: 1e-7.\n"


class _BoxLoss(CatalogueLoss):
    defaults = {"eps": 1e-7}

    @classmethod
    def check_params(cls, eps: float, **others: float) -> None:
        positive("eps", eps)


class IoULoss(_BoxLoss):
    __doc__ = r"""IoU loss (Yu et al. 2016, UnitBox).

    With :math:`\mathrm{IoU} = |A \cap B| / (|A \cup B| + \epsilon)` of the paired
    boxes, the unreduced loss is :math:`1 - \mathrm{IoU}`;
    :math:`\mathrm{IoU}` equals the diagonal of ``torchvision.ops.box_iou``.
    Boxes that do not overlap all lose 1, with no gradient: use GIoU or DIoU.

    Args:
""" + _EPS_DOC + "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n" + _SHAPE
    functional = staticmethod(iou_loss)


class GIoULoss(_BoxLoss):
    __doc__ = r"""Generalized IoU loss (Rezatofighi et al. 2019).

    With :math:`C` the smallest box enclosing both, the unreduced loss is
    :math:`1 - \mathrm{IoU} + (|C| - |A \cup B|) / (|C| + \epsilon)`, equal to
    ``torchvision.ops.generalized_box_iou_loss``.

    Args:
""" + _EPS_DOC + "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n" + _SHAPE
    functional = staticmethod(giou_loss)


class DIoULoss(_BoxLoss):
    __doc__ = r"""Distance IoU loss (Zheng et al. 2020).

    With :math:`\rho` the distance of the box centres and :math:`c` the diagonal of
    the enclosing box, the unreduced loss is
    :math:`1 - \mathrm{IoU} + \rho^2 / (c^2 + \epsilon)`, equal to
    ``torchvision.ops.distance_box_iou_loss``.

    Args:
""" + _EPS_DOC + "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n" + _SHAPE
    functional = staticmethod(diou_loss)


class CIoULoss(_BoxLoss):
    __doc__ = r"""Complete IoU loss (Zheng et al. 2020).

    DIoU plus the aspect-ratio term :math:`\alpha v`, with
    :math:`v = \frac{4}{\pi^2} (\arctan(w_t / h_t) - \arctan(w / h))^2` and
    :math:`\alpha = v / (1 - \mathrm{IoU} + v + \epsilon)` taken as a constant in the
    gradient, as ``torchvision.ops.complete_box_iou_loss`` (which it equals; a
    zero height is clamped to :math:`\epsilon` inside the arctangent).

    Args:
""" + _EPS_DOC + "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n" + _SHAPE
    functional = staticmethod(ciou_loss)


class EIoULoss(_BoxLoss):
    __doc__ = r"""Efficient IoU loss (Zhang et al. 2022, Focal and Efficient IOU Loss).

    DIoU with the aspect term replaced by separate width and height terms over
    the enclosing box's :math:`C_w, C_h`:
    :math:`1 - \mathrm{IoU} + \rho^2 / c^2 + (w - w_t)^2 / C_w^2 + (h - h_t)^2 / C_h^2`.

    Args:
""" + _EPS_DOC + "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n" + _SHAPE
    functional = staticmethod(eiou_loss)


class SIoULoss(_BoxLoss):
    __doc__ = r"""SCYLLA-IoU loss (Gevorgyan 2022).

    :math:`1 - \mathrm{IoU} + (\Delta + \Omega) / 2`, with the angle cost
    :math:`\Lambda = 1 - 2 \sin^2(\arcsin(\sin\alpha) - \pi/4)` of the centre offset
    (:math:`\alpha` its angle to the nearer axis), the distance cost
    :math:`\Delta = \sum_{t = x, y} (1 - e^{-(2 - \Lambda) \rho_t})`,
    :math:`\rho_x = (\Delta c_x / C_w)^2`, and the shape cost
    :math:`\Omega = \sum_{t = w, h} (1 - e^{-\omega_t})^\theta`,
    :math:`\omega_w = |w - w_t| / \max(w, w_t)`.

    Args:
        theta: exponent of the shape cost, > 0. Default: 4 (the paper's).
""" + _EPS_DOC + "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n" + _SHAPE
    defaults = {"theta": 4.0, "eps": 1e-7}
    functional = staticmethod(siou_loss)

    @classmethod
    def check_params(cls, theta: float, eps: float) -> None:
        positive("theta", theta)
        positive("eps", eps)


class AlphaIoULoss(_BoxLoss):
    __doc__ = r"""Alpha-IoU loss (He et al. 2021), the power form of the IoU loss.

    The unreduced loss is :math:`1 - \mathrm{IoU}^\alpha`; :math:`\alpha > 1`
    up-weights the gradient of well-localised boxes.  :math:`\alpha = 1` is the IoU loss.

    Args:
        alpha: the power, > 0. Default: 3 (the paper's).
""" + _EPS_DOC + "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n" + _SHAPE
    defaults = {"alpha": 3.0, "eps": 1e-7}
    functional = staticmethod(alpha_iou_loss)

    @classmethod
    def check_params(cls, alpha: float, eps: float) -> None:
        positive("alpha", alpha)
        positive("eps", eps)


_BOX = dict(family="boxes", input="boxes", target="boxes", task_kinds=("boxes",),
            notes="reference-only: a function of the four box coordinates, not element-wise in (p, y)")

ENTRIES = [
    reference_loss("iou", formula="1 - IoU, IoU = |A n B|/(|A u B| + eps)", module=IoULoss,
                   reference="Yu et al., UnitBox: An Advanced Object Detection Network, ACM MM 2016; "
                   "torchvision.ops.box_iou", **_BOX),
    reference_loss("giou", formula="1 - IoU + (|C| - |A u B|)/|C|, C = enclosing box", module=GIoULoss,
                   reference="Rezatofighi et al., Generalized Intersection over Union, CVPR 2019; "
                   "torchvision.ops.generalized_box_iou_loss", **_BOX),
    reference_loss("diou", formula="1 - IoU + rho**2/c**2, rho = centre distance, c = enclosing diagonal",
                   module=DIoULoss, reference="Zheng et al., Distance-IoU Loss, AAAI 2020; "
                   "torchvision.ops.distance_box_iou_loss", **_BOX),
    reference_loss("ciou", formula="DIoU + alpha*v, v = 4/pi**2*(atan(w_t/h_t) - atan(w/h))**2", module=CIoULoss,
                   reference="Zheng et al., Distance-IoU Loss, AAAI 2020 (CIoU); "
                   "torchvision.ops.complete_box_iou_loss", **_BOX),
    reference_loss("eiou", formula="1 - IoU + rho**2/c**2 + (w - w_t)**2/C_w**2 + (h - h_t)**2/C_h**2",
                   module=EIoULoss, reference="Zhang et al., Focal and Efficient IOU Loss for Accurate Bounding "
                   "Box Regression, Neurocomputing 2022", **_BOX),
    reference_loss("siou", formula="1 - IoU + (distance cost + shape cost)/2, angle-weighted", module=SIoULoss,
                   reference="Gevorgyan, SIoU Loss: More Powerful Learning for Bounding Box Regression, "
                   "arXiv 2205.12740", **_BOX),
    reference_loss("alpha_iou", formula="1 - IoU**alpha", module=AlphaIoULoss,
                   reference="He et al., Alpha-IoU: A Family of Power Intersection over Union Losses for Bounding "
                   "Box Regression, NeurIPS 2021", **_BOX),
]
