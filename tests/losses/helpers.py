"""Shared test helpers: random, valid inputs for any catalogue entry, in float64."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lossforge.losses import Loss

N, C = 12, 5
CLASS_COUNTS = [500, 120, 40, 9, 3]

# Regression entries whose domain is not the whole real line.
_POSITIVE_MEAN = {"poisson_deviance", "tweedie"}
_POSITIVE_TARGET = {"tweedie"}  # Tweedie powers >= 2 need y > 0; zero counts are tested on their own


@dataclass
class Batch:
    """Inputs of one entry: ``raw`` model outputs and ``space_target`` for the
    prediction space (what :func:`per_sample_loss` takes), and what the module's
    ``forward`` takes (``args``)."""

    kind: str            # multiclass | binary | regression | segmentation
    raw: torch.Tensor
    space_target: torch.Tensor
    args: tuple


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def kind_of(loss: Loss) -> str:
    return loss.task_kinds[0] if loss.task_kinds else "regression"


def module_input(loss: Loss, raw: torch.Tensor, kind: str) -> torch.Tensor:
    """Raw outputs -> what ``forward`` takes as its input."""
    if loss.input == "probabilities":
        return torch.sigmoid(raw) if kind == "binary" else F.softmax(raw, dim=1)
    if loss.input == "log_probabilities":
        return F.log_softmax(raw, dim=1)
    return raw


def module_target(loss: Loss, target: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Space targets (indices, 0/1, values) -> what ``forward`` takes as its target."""
    if loss.target == "signed":
        return 2 * target - 1
    if loss.target == "probabilities":
        return F.one_hot(target, num_classes).to(torch.float64)
    return target


def make_batch(loss: Loss, seed: int = 0, n: int = N, dtype=torch.float64) -> Batch:
    g = generator(seed)
    kind = kind_of(loss)
    if kind == "segmentation":
        channels = 1 if loss.name == "lovasz_hinge" else 3
        raw = torch.randn(n, channels, 4, 5, generator=g, dtype=dtype) * 2
        if channels == 1:
            target = torch.randint(0, 2, (n, 4, 5), generator=g).to(dtype)
        else:
            target = torch.randint(0, channels, (n, 4, 5), generator=g)
        return Batch(kind, raw, target, (raw, target))
    if kind == "multiclass":
        raw = torch.randn(n, C, generator=g, dtype=dtype) * 2
        target = torch.randint(0, C, (n,), generator=g)
        return Batch(kind, raw, target, (module_input(loss, raw, kind), module_target(loss, target, C)))
    if kind == "binary":
        raw = torch.randn(n, generator=g, dtype=dtype) * 2
        target = torch.randint(0, 2, (n,), generator=g).to(dtype)
        return Batch(kind, raw, target, (module_input(loss, raw, kind), module_target(loss, target)))
    # regression
    if loss.name in _POSITIVE_MEAN:
        raw = torch.rand(n, generator=g, dtype=dtype) * 3 + 0.1
        target = torch.randint(0, 6, (n,), generator=g).to(dtype)
        if loss.name in _POSITIVE_TARGET:
            target = target + torch.rand(n, generator=g, dtype=dtype) + 0.05
    elif loss.name == "poisson_nll":
        raw = torch.randn(n, generator=g, dtype=dtype)
        target = torch.randint(0, 6, (n,), generator=g).to(dtype)
    elif loss.name == "msle":
        raw = torch.rand(n, generator=g, dtype=dtype) * 4
        target = torch.rand(n, generator=g, dtype=dtype) * 4
    elif loss.name == "mape":
        raw = torch.randn(n, generator=g, dtype=dtype) * 2
        target = (torch.rand(n, generator=g, dtype=dtype) + 0.5) * torch.sign(torch.randn(n, generator=g))
    else:
        raw = torch.randn(n, generator=g, dtype=dtype) * 3
        target = torch.randn(n, generator=g, dtype=dtype) * 3
    args: tuple = (raw, target)
    if loss.name == "gaussian_nll":
        args = (raw, target, torch.rand(n, generator=g, dtype=dtype) + 0.1)
    return Batch(kind, raw, target, args)


def build(loss: Loss, **params):
    """``loss.module(**params)``, passing the class counts entries that need them."""
    if "class_counts" in loss.extra_args:
        params.setdefault("class_counts", CLASS_COUNTS)
    return loss.module(**params)
