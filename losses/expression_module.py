"""``ExpressionLoss``: a torch loss module from a grammar expression ``L(p, y)``.

It takes what a model outputs and the targets a torch loss takes, maps them
into the task's prediction space (:mod:`lossforge.losses.spaces`), evaluates
the compiled expression elementwise and sums over the class column.  The
discovered-loss store builds its modules with it.
"""
from __future__ import annotations

import torch
from torch import nn

from lossforge.primitives import Expr, as_expr

from . import spaces
from .loss import check_class_target, check_reduction, check_same_shape, reduce


class ExpressionLoss(nn.Module):
    r"""Loss module of an elementwise expression ``L(p, y)`` for a kind of task.

    ``multiclass``: the input holds logits, :math:`p = \operatorname{softmax}` over the
    classes (dim 1, as torch), :math:`y` is the one-hot target, and the loss of a
    sample is :math:`\sum_c L(p_c, y_c)`.  ``binary``: one logit per element,
    :math:`p = (1 - \sigma(z), \sigma(z))`, :math:`y = (1 - t, t)`, summed over the
    two columns, so ``-y*log(p)`` is the binary cross-entropy.  ``regression``:
    :math:`L(x, y)` of the prediction and the target.

    Args:
        expr: an :class:`~lossforge.primitives.Expr` or expression text, with no unbound constants.
        kind: ``'multiclass'`` | ``'binary'`` | ``'regression'``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.

    Shape:
        - multiclass: input :math:`(N, C, *)` logits, target :math:`(N, *)` class indices, output :math:`(N, *)`.
        - binary: input :math:`(*)` logits, target :math:`(*)` 0/1 labels, output :math:`(*)`.
        - regression: input :math:`(*)`, target :math:`(*)`, output :math:`(*)`.
        - with ``'mean'`` or ``'sum'``: a scalar.  ``'mean'`` equals the batch mean of
          :func:`lossforge.losses.spaces.per_sample_loss` (which averages extra dimensions).
    """

    def __init__(self, expr: Expr | str, kind: str, reduction: str = "mean"):
        super().__init__()
        self.expr = as_expr(expr)
        self.kind = spaces.check_kind(kind)
        self.reduction = check_reduction(reduction)
        self.program = self.expr.compile()  # CompileError now, not at the first batch, for unbound constants

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "multiclass":
            check_class_target(input, target)
            logits = input.movedim(1, -1)
            p = spaces.predictions(logits, "multiclass")
            y = spaces.targets(target, "multiclass", num_classes=input.shape[1], dtype=input.dtype)
        else:
            check_same_shape(input, target)
            p = spaces.predictions(input, self.kind)
            y = spaces.targets(target, self.kind, dtype=input.dtype)
        values = self.program(p, y)
        if self.kind != "regression":
            values = values.sum(dim=-1)
        return reduce(values, self.reduction)

    def extra_repr(self) -> str:
        return f"expr={str(self.expr)!r}, kind={self.kind!r}, reduction={self.reduction!r}"
