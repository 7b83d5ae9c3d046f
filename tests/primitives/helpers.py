"""Shared test helpers: evaluate sympy at a point and tell whether a point lies
where every protected operator takes its plain mathematical form."""
from __future__ import annotations

import math

import sympy

from lossforge.primitives.symbols import P, Y
from lossforge.primitives.symbols import log as protected_log
from lossforge.primitives.symbols import sqrt as protected_sqrt
from lossforge.primitives.table import DIV_EPS, EXP_MAX, LOG_EPS, POW_EPS, SQRT_EPS


def _value(e, subs):
    v = complex(e.xreplace(subs).evalf())
    return v


def plain_domain(expr: sympy.Expr, p: float, y: float) -> bool:
    """True when no protected operator in ``expr`` is in its protected region at (p, y)."""
    try:
        return _plain_domain(expr, p, y)
    except (ValueError, TypeError, ZeroDivisionError):  # e.g. Max(1/0, p) at this point
        return False


def _plain_domain(expr: sympy.Expr, p: float, y: float) -> bool:
    subs = {P: sympy.Float(p), Y: sympy.Float(y)}
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, protected_log):
            v = _value(node.args[0], subs)
            if v.imag or abs(v.real) < LOG_EPS * 10:
                return False
        elif isinstance(node, protected_sqrt):
            v = _value(node.args[0], subs)
            if v.imag or abs(v.real) < SQRT_EPS * 10:
                return False
        elif isinstance(node, sympy.exp):
            v = _value(node.args[0], subs)
            if v.imag or v.real > EXP_MAX - 1:
                return False
        elif node.is_Pow:
            b = _value(node.base, subs)
            ex = float(node.exp)
            if b.imag:
                return False
            if ex < 0 and abs(b.real) ** (-ex) < DIV_EPS * 10:
                return False
            if not ex.is_integer() and abs(b.real) < POW_EPS * 10:
                return False
    v = _value(expr, subs)
    return not v.imag and math.isfinite(v.real) and abs(v.real) < 1e8


def sympy_value(expr: sympy.Expr, p: float, y: float) -> float:
    return _value(expr, {P: sympy.Float(p), Y: sympy.Float(y)}).real
