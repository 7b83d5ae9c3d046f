"""Functional fingerprints: a hash of what an expression computes.

Two candidates that give the same outputs and the same gradients with respect
to ``p`` on a fixed set of probe inputs train models identically, whatever
their symbolic form, so they are duplicates for the search even when sympy
cannot prove them equal.  Probe inputs cover the prediction space the loss
will see: probabilities in (0, 1) with 0/1 targets, or real values.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from .expr import Expr

SPACES = ("probability", "real")
_MANTISSA_STEPS = 2**14  # about 4-5 significant digits
_ZERO = 1e-10


def probe_inputs(space: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed (p, y) grid of a prediction space, float64."""
    if space == "probability":
        p = torch.sigmoid(torch.linspace(-7.0, 7.0, 29, dtype=torch.float64))
        y = torch.tensor([0.0, 1.0], dtype=torch.float64)
    elif space == "real":
        p = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)
        y = torch.linspace(-2.5, 2.5, 7, dtype=torch.float64)
    else:
        raise ValueError(f"unknown prediction space '{space}'; use one of {SPACES}")
    pp, yy = torch.meshgrid(p, y, indexing="ij")
    return pp.reshape(-1).clone(), yy.reshape(-1).clone()


def behaviour(expr: Expr, space: str = "probability") -> tuple[np.ndarray, np.ndarray]:
    """Loss values and dL/dp on the probe grid of ``space``."""
    p, y = probe_inputs(space)
    p.requires_grad_(True)
    out = expr.compile()(p, y)
    (grad,) = torch.autograd.grad(out.sum(), p, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(p)
    return out.detach().numpy(), grad.numpy()


def quantise(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    safe = np.where(finite, v, 0.0)
    safe = np.where(np.abs(safe) < _ZERO, 0.0, safe)
    mant, expo = np.frexp(safe)
    q = np.round(mant * _MANTISSA_STEPS).astype(np.int64)
    code = np.where(finite, q * 4096 + expo, np.where(np.isnan(v), -1, np.sign(v).astype(np.int64) * -2))
    return code.astype(np.int64)


def fingerprint(expr: Expr, space: str = "probability") -> str:
    """Hex digest of the quantised outputs and gradients on the probe grid."""
    values, grads = behaviour(expr, space)
    h = hashlib.blake2b(digest_size=12)
    h.update(space.encode())
    h.update(quantise(values).tobytes())
    h.update(quantise(grads).tobytes())
    return h.hexdigest()
