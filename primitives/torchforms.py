"""The protected torch forms of the built-in rows, and their standalone source.

Each function here is the ``torch`` form of a row of :mod:`~lossforge.primitives.table`;
next to it is the source the standalone exporter writes into a generated file
(``*_SOURCE``: the same computation with the thresholds as literals, in the
TorchScript-compatible subset, importing only torch).  The bit-identical test
(tests/primitives/test_bit_identical.py) and the export tests hold the two
forms to the same values and gradients.
"""
from __future__ import annotations

import torch

from .protection import DIV_EPS, EXP_MAX, LOG_EPS, POW_EPS, SQRT_EPS


def protected_log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.clamp(x.abs(), min=LOG_EPS))


PROTECTED_LOG_SOURCE = f'''def protected_log(x: torch.Tensor) -> torch.Tensor:
    """log(|x|), with |x| floored at {LOG_EPS!r}."""
    return torch.log(torch.clamp(x.abs(), min={LOG_EPS!r}))
'''


def protected_sqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.clamp(x.abs(), min=SQRT_EPS))


PROTECTED_SQRT_SOURCE = f'''def protected_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(|x|), with |x| floored at {SQRT_EPS!r}."""
    return torch.sqrt(torch.clamp(x.abs(), min={SQRT_EPS!r}))
'''


def safe_denominator(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """protected_div's denominator (|b| < DIV_EPS becomes +-DIV_EPS, + for b = -0.0) and where it was small."""
    small = b.abs() < DIV_EPS
    return torch.where(small, torch.where(b < 0, -DIV_EPS, DIV_EPS).to(b.dtype), b), small


def protected_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a / safe_denominator(torch.as_tensor(b))[0]


PROTECTED_DIV_SOURCE = f'''def safe_denominator(b: torch.Tensor) -> torch.Tensor:
    """b, with values smaller than {DIV_EPS!r} in magnitude replaced by +-{DIV_EPS!r} (sign kept)."""
    small = b.abs() < {DIV_EPS!r}
    return torch.where(small, torch.where(b < 0, {-DIV_EPS!r}, {DIV_EPS!r}).to(b.dtype), b)


def protected_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b with a protected denominator (see safe_denominator)."""
    return a / safe_denominator(b)
'''


def clamped_exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.clamp(x, max=EXP_MAX))


CLAMPED_EXP_SOURCE = f'''def clamped_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(min(x, {EXP_MAX!r}))."""
    return torch.exp(torch.clamp(x, max={EXP_MAX!r}))
'''


def protected_pow(x: torch.Tensor, e: float) -> torch.Tensor:
    """x**e: exact for integer e (protected reciprocal for e<0), |x|**e otherwise."""
    if float(e).is_integer():
        n = int(e)
        if n >= 0:
            return x**n
        return protected_div(torch.ones_like(x), x ** (-n))
    return torch.clamp(x.abs(), min=POW_EPS) ** e


# The exporter prints integer powers as ``x ** n`` (and 1 / x**n through protected_div).
PROTECTED_POW_SOURCE = f'''def protected_pow(x: torch.Tensor, e: float) -> torch.Tensor:
    """|x|**e for a non-integer exponent e, with |x| floored at {POW_EPS!r}."""
    return torch.clamp(x.abs(), min={POW_EPS!r}) ** e
'''


def _as_tensor_like(v, ref: torch.Tensor) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=ref.dtype, device=ref.device)


def t_max(a, b):
    if not isinstance(a, torch.Tensor):
        a, b = b, a
    return torch.maximum(a, _as_tensor_like(b, a))


def t_min(a, b):
    if not isinstance(a, torch.Tensor):
        a, b = b, a
    return torch.minimum(a, _as_tensor_like(b, a))


def cube(a):
    return a**3


def pow_row(a, e):
    """pow's row form: the exponent is a constant (a float, or a 0-dim tensor when constants are tensors)."""
    return protected_pow(a, float(e) if not isinstance(e, torch.Tensor) else e)
