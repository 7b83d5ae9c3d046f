"""Forward-mode rules of the built-in rows: the ``derivative`` of a :class:`~.table.Primitive`.

The population program (:mod:`lossforge.tasks.program`) computes values and
tangents together: a rule ``rule(*args, *tangents, out_value, out_tangent, zero)``
writes one opcode's value and its tangent ``d(value)/dp`` into the rows
``out_value`` and ``out_tangent`` from its arguments and their tangents (a
tangent is None where no member's argument depends on p; ``zero`` is a zero
scalar tensor).  The value is computed as the row's torch form computes it, so
values equal the compiled Program's (to the last bit, except ``c / x`` with a
constant ``c``, which Program's float operand makes torch compute as
``reciprocal(x) * c``: one rounding apart); tangents follow torch's backward
formulas for the protected forms (clamps pass the gradient where the input is
inside the bound, ``abs`` has derivative ``sign``, ties of ``max``/``min`` split it).
Arguments broadcast ([n, ...] stacks or one shared row).  Masks use
torch.where rather than bool-to-float casts, and the last operation writes in
place: on a CPU these small tensors cost per call, so every saved call counts.

A row without a rule (a user primitive) gets its tangent from torch autograd
(:func:`autograd_rule`).  pow's rule depends on its constant exponent:
:func:`rule_pow` makes one per exponent.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .protection import EXP_MAX, LOG_EPS, POW_EPS, SQRT_EPS
from .torchforms import protected_pow, safe_denominator


def _sum_into(ot, ta, tb, sign: float = 1.0):
    if ta is None:
        torch.mul(tb, sign, out=ot) if sign != 1.0 else ot.copy_(tb)
    elif tb is None:
        ot.copy_(ta)
    else:
        torch.add(ta, tb, alpha=sign, out=ot)


def rule_add(a, b, ta, tb, ov, ot, z):
    torch.add(a, b, out=ov)
    _sum_into(ot, ta, tb)


def rule_sub(a, b, ta, tb, ov, ot, z):
    torch.sub(a, b, out=ov)
    _sum_into(ot, ta, tb, -1.0)


def rule_mul(a, b, ta, tb, ov, ot, z):
    torch.mul(a, b, out=ov)
    if ta is None:
        torch.mul(a, tb, out=ot)
    elif tb is None:
        torch.mul(ta, b, out=ot)
    else:
        torch.addcmul(ta * b, a, tb, out=ot)


def rule_div(a, b, ta, tb, ov, ot, z):
    safe, small = safe_denominator(b)
    torch.div(a, safe, out=ov)  # = protected_div(a, b)
    if tb is None:
        torch.div(ta, safe, out=ot)
        return
    tb_term = torch.where(small, z, -tb * (ov / safe))
    if ta is None:
        ot.copy_(tb_term)
    else:
        torch.add(ta / safe, tb_term, out=ot)


def rule_neg(a, ta, ov, ot, z):
    torch.neg(a, out=ov)
    torch.neg(ta, out=ot)


def rule_square(a, ta, ov, ot, z):
    torch.square(a, out=ov)
    torch.mul(a, ta, out=ot).mul_(2)


def rule_cube(a, ta, ov, ot, z):
    torch.pow(a, 3, out=ov)
    torch.mul(torch.square(a), ta, out=ot).mul_(3)


def rule_abs(a, ta, ov, ot, z):
    torch.abs(a, out=ov)
    torch.mul(ta, torch.sign(a), out=ot)


def rule_sqrt(a, ta, ov, ot, z):
    m = a.abs()
    torch.sqrt(torch.clamp(m, min=SQRT_EPS), out=ov)
    torch.where(m >= SQRT_EPS, ta * torch.sign(a) / (2 * ov), z, out=ot)


def rule_log(a, ta, ov, ot, z):
    m = a.abs()
    torch.log(torch.clamp(m, min=LOG_EPS), out=ov)
    # sign(a)/|a| is 1/a exactly, and ta/a is what autograd computes bitwise.
    torch.where(m >= LOG_EPS, ta / a, z, out=ot)


def rule_exp(a, ta, ov, ot, z):
    torch.exp(torch.clamp(a, max=EXP_MAX), out=ov)
    torch.where(a <= EXP_MAX, ta * ov, z, out=ot)


def rule_tanh(a, ta, ov, ot, z):
    torch.tanh(a, out=ov)
    torch.mul(ta, 1 - ov * ov, out=ot)


def rule_sigmoid(a, ta, ov, ot, z):
    torch.sigmoid(a, out=ov)
    torch.mul(ta, (1 - ov) * ov, out=ot)


def rule_softplus(a, ta, ov, ot, z):
    ov.copy_(F.softplus(a))
    torch.where(a > 20, ta, ta * torch.sigmoid(a), out=ot)


def _choose_into(ot, w, ta, tb):
    """ot = ta*w + tb*(1-w), skipping absent tangents."""
    if tb is None:
        torch.mul(ta, w, out=ot)
    elif ta is None:
        torch.mul(tb, 1 - w, out=ot)
    else:
        torch.addcmul(ta * w, tb, 1 - w, out=ot)


def rule_max(a, b, ta, tb, ov, ot, z):
    torch.maximum(a, b, out=ov)  # = t_max(a, b) for tensors
    # Weight of a: 1 if a > b, 1/2 on a tie (torch splits the gradient), else 0.
    _choose_into(ot, torch.sign(a - b).add_(1).mul_(0.5), ta, tb)


def rule_min(a, b, ta, tb, ov, ot, z):
    torch.minimum(a, b, out=ov)
    _choose_into(ot, torch.sign(b - a).add_(1).mul_(0.5), ta, tb)


def rule_pow(e: float):
    n = int(e) if float(e).is_integer() else None

    def rule(a, ta, ov, ot, z):
        ov.copy_(protected_pow(a, e))
        if n is not None and n >= 0:
            if n == 0:
                ot.zero_()
            else:
                torch.mul(ta, n * a.pow(n - 1), out=ot)
        elif n is not None:  # 1 / a**m through the protected division
            m = -n
            safe, small = safe_denominator(a.pow(m))
            torch.where(small, z, -ta * (ov / safe) * (m * a.pow(m - 1)), out=ot)
        else:
            mag = a.abs()
            c = torch.clamp(mag, min=POW_EPS)
            torch.where(mag >= POW_EPS, ta * (e * c.pow(e - 1)) * torch.sign(a), z, out=ot)

    return rule


def autograd_rule(fn: Callable) -> Callable:
    """Value and tangent of an elementwise function with no written rule, via autograd."""

    def rule(*xs):
        ov, ot, _ = xs[-3:]
        k = (len(xs) - 3) // 2
        args, tans = xs[:k], xs[k:2 * k]
        shape = ov.shape
        with torch.enable_grad():
            leaves = [a.detach().expand(shape).clone().requires_grad_(t is not None) for a, t in zip(args, tans)]
            out = fn(*leaves)
            wrt = [x for x, t in zip(leaves, tans) if t is not None]
            grads = torch.autograd.grad(out, wrt, torch.ones_like(out), allow_unused=True)
        ov.copy_(out.detach())
        ot.zero_()
        for g, t in zip(grads, [t for t in tans if t is not None]):
            if g is not None:
                ot.addcmul_(g, t)

    return rule
