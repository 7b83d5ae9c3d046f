"""Prediction spaces: what an expression's ``p`` and ``y`` are for each kind of task.

Functions below take ``space``, the kind of task whose outputs they convert:
``multiclass``, ``binary`` or ``regression`` (a segmentation map is binary per
pixel).  Classification kinds give expressions probabilities (the
"probability" domain), regression raw values (the "real" domain).

An expression ``L(p, y)`` is elementwise.  The space says how model outputs and
targets become ``p`` and ``y`` and how elementwise values reduce to one loss per
sample:

``multiclass``  outputs are logits ``[..., C]``; ``p = softmax(z)``, ``y`` is the
                one-hot target; the per-sample loss sums over the C classes.
``binary``      outputs are one logit ``[...]``; the two classes are expanded, so
                ``p = [1-sigmoid(z), sigmoid(z)]`` and ``y = [1-t, t]``; the loss
                sums over the two columns.  ``-y*log(p)`` is therefore exactly
                binary cross-entropy, and binary equals multiclass with logits
                ``[0, z]``: one expression serves both kinds of task.
``regression``  ``p`` is the prediction and ``y`` the target, both ``[...]``.

Trailing non-batch dimensions (pixels of a segmentation map) are averaged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lossforge.primitives import LossforgeError

KINDS = ("multiclass", "binary", "regression")
# The domain an expression sees under each kind of task; also the name of the
# fingerprint probe grid (lossforge.primitives.fingerprint) for that domain.
EXPRESSION_SPACE = {"multiclass": "probability", "binary": "probability", "regression": "real"}


def space_of(task_kind: str) -> str:
    """The prediction space of a task kind: a segmentation map is binary per pixel."""
    return "binary" if task_kind == "segmentation" else task_kind


class SpaceError(LossforgeError, ValueError):
    """Inputs do not fit the prediction space."""


def check_kind(space: str) -> str:
    if space not in KINDS:
        raise SpaceError(f"unknown task kind '{space}'; use one of {', '.join(KINDS)}")
    return space


def predictions(outputs: torch.Tensor, space: str, class_dim: int | None = None) -> torch.Tensor:
    """Model outputs -> ``p`` in the expression's space.

    ``class_dim=None``: classes last (multiclass logits ``[..., C]``, binary
    logits ``[...]`` gain a last dimension of 2).  With ``class_dim``, the
    outputs carry the class dimension there (of size 1 for a binary logit)
    and ``p`` keeps it there: the population trainer's ``[K, out, N]`` layout.
    """
    if space == "multiclass":
        return F.softmax(outputs, dim=-1 if class_dim is None else class_dim)
    if space == "binary":
        # sigmoid(-z) rather than 1 - sigmoid(z): no cancellation near p = 1.
        if class_dim is None:
            return torch.stack([torch.sigmoid(-outputs), torch.sigmoid(outputs)], dim=-1)
        return torch.cat([torch.sigmoid(-outputs), torch.sigmoid(outputs)], dim=class_dim)
    if space == "regression":
        return outputs
    raise SpaceError(f"unknown task kind '{space}'; use one of {', '.join(KINDS)}")


def decisions(outputs: torch.Tensor, space: str, class_dim: int = -1, target_mean: float = 0.0,
              target_std: float = 1.0) -> torch.Tensor:
    """Model outputs -> what a task metric compares with the targets.

    multiclass: the arg-max class; binary: 1 where the logit is positive;
    regression: the prediction in the targets' original units (outputs are
    trained on targets standardised with ``target_mean``/``target_std``), float64.
    The class dimension (of size 1 for binary and regression) is removed.
    """
    if space == "multiclass":
        return outputs.argmax(dim=class_dim)
    z = outputs.select(class_dim, 0)
    if space == "binary":
        return (z > 0).long()
    if space == "regression":
        return z.double() * target_std + target_mean
    raise SpaceError(f"unknown task kind '{space}'; use one of {', '.join(KINDS)}")


def targets(target: torch.Tensor, space: str, num_classes: int | None = None, dtype=torch.float32) -> torch.Tensor:
    """Task targets -> ``y`` in the expression's space.

    multiclass: integer class indices -> one-hot (``num_classes`` required);
    binary: 0/1 targets -> ``[1-t, t]``; regression: the targets themselves.
    """
    if space == "multiclass":
        if num_classes is None:
            raise SpaceError("multiclass targets need num_classes")
        if target.dtype.is_floating_point:
            raise SpaceError("multiclass targets must be integer class indices, got a float tensor")
        return F.one_hot(target.long(), num_classes).to(dtype)
    if space == "binary":
        t = target.to(dtype)
        return torch.stack([1 - t, t], dim=-1)
    if space == "regression":
        return target.to(dtype)
    raise SpaceError(f"unknown task kind '{space}'; use one of {', '.join(KINDS)}")


def reduce_per_sample(elementwise: torch.Tensor, space: str, batch_dims: int = 1) -> torch.Tensor:
    """Elementwise losses -> one value per sample.

    ``batch_dims`` leading dimensions are kept (2 for a population ``[K, B, ...]``).
    Classification spaces sum over the class column, then everything after the
    batch dimensions is averaged (pixels, output dimensions).
    """
    x = elementwise
    if space in ("multiclass", "binary"):
        x = x.sum(dim=-1)
    extra = x.dim() - batch_dims
    if extra > 0:
        x = x.reshape(*x.shape[:batch_dims], -1).mean(dim=-1)
    return x


def per_sample_loss(program, outputs: torch.Tensor, target: torch.Tensor, space: str,
                    num_classes: int | None = None) -> torch.Tensor:
    """Apply a compiled expression to raw model outputs and task targets: ``[B]``."""
    check_kind(space)
    p = predictions(outputs, space)
    y = targets(target, space, num_classes if num_classes is not None else (outputs.shape[-1] if space == "multiclass" else None),
                dtype=outputs.dtype)
    if p.shape != y.shape:
        raise SpaceError(f"prediction shape {tuple(p.shape)} and target shape {tuple(y.shape)} differ in the "
                         f"{space} space; check the number of classes and the target encoding")
    return reduce_per_sample(program(p, y), space)
