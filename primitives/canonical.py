"""Validation, number normalisation, canonical form and complexity of sympy trees.

The canonical form is a deterministic normal form used for equality and
deduplication: numbers are rounded to 6 significant digits (and snapped to
small fractions), numeric subexpressions are folded, and products are expanded
so that ``p*y + y`` and ``y*(1+p)`` meet.  Expansion is bounded by an estimate
of the number of terms it would produce, computed before expanding, so the
work is bounded by size alone and the result never depends on machine speed.
"""
from __future__ import annotations

import math
from functools import reduce

import sympy

from .errors import GrammarError
from .symbols import ALL_SYMBOLS
from .table import MAX_EXPONENT, get_primitive, row_for_head

SIGNIFICANT_DIGITS = 6
MAX_EXPANDED_TERMS = 48
MAX_TREE_NODES = 600
_SNAP_DENOMINATORS = tuple(range(1, 13))


# ------------------------------------------------------------------ numbers
def round_number(value: float) -> sympy.Expr:
    """Round to 6 significant digits; snap to p/q (q <= 12) within that precision."""
    if value == 0 or not math.isfinite(value):
        return sympy.Integer(0) if value == 0 else sympy.Float(value)
    r = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    tol = 0.5 * 10 ** (1 - SIGNIFICANT_DIGITS) * abs(r)
    for q in _SNAP_DENOMINATORS:
        if abs(r * q) >= 10**9:  # never a snap (and round() of an overflow to inf would raise)
            continue
        num = round(r * q)
        if num != 0 and abs(num / q - r) <= tol and abs(num) < 10**9:
            return sympy.Rational(num, q)
    return sympy.Float(r, 15)


def normalise_numbers(expr: sympy.Expr) -> sympy.Expr:
    """Replace every Float by its rounded (possibly rational) value."""
    floats = expr.atoms(sympy.Float)
    if not floats:
        return expr
    return expr.xreplace({f: round_number(float(f)) for f in floats})


def numeric_value(expr: sympy.Expr) -> float:
    """Value of a constant subexpression under the protected (torch) semantics,
    e.g. exp(1000) is exp(30) as in training, not a float overflow."""
    from .compile import compile_sympy
    import torch

    zero = torch.zeros((), dtype=torch.float64)
    return float(compile_sympy(expr, _fold=False)(zero, zero))


def fold_numeric(expr: sympy.Expr) -> sympy.Expr:
    """Replace numeric subexpressions that are not plain rationals (log(2), E,
    sqrt(2), ...) by rounded numbers."""
    if expr.is_Rational or expr.is_Float:
        return expr
    if expr.is_number:
        return round_number(numeric_value(expr))
    if not expr.args:
        return expr
    args = [fold_numeric(a) for a in expr.args]
    return expr.func(*args)


# ------------------------------------------------------------------ validity
def validate(expr: sympy.Expr) -> None:
    """Raise GrammarError unless ``expr`` uses only grammar symbols and nodes."""
    if not isinstance(expr, sympy.Expr):
        raise GrammarError(f"not a sympy expression: {expr!r}")
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        raise GrammarError(f"expression {expr} is undefined (it contains an infinity or NaN)")
    if expr.has(sympy.I):
        raise GrammarError(f"expression {expr} is complex; the grammar is real-valued")
    stack = [expr]
    nodes = 0
    while stack:
        e = stack.pop()
        nodes += 1
        if nodes > MAX_TREE_NODES:
            raise GrammarError(f"expression has more than {MAX_TREE_NODES} nodes")
        if e.is_Symbol:
            if e.name not in ALL_SYMBOLS or e != ALL_SYMBOLS[e.name]:
                raise GrammarError(f"symbol '{e}' is not a grammar terminal (p, y, c0..c9, all real)")
            continue
        if e.is_Number or isinstance(e, sympy.NumberSymbol):
            if e.is_Number and not e.is_real:
                raise GrammarError(f"complex constant {e} is not allowed")
            continue
        if e.is_Add or e.is_Mul:
            stack.extend(e.args)
            continue
        if e.is_Pow:
            if e.exp.free_symbols & {ALL_SYMBOLS["p"], ALL_SYMBOLS["y"]}:
                raise GrammarError(f"exponent of {e} depends on p or y; exponents must be constants")
            if e.exp.is_number and abs(float(e.exp)) > MAX_EXPONENT:
                raise GrammarError(f"exponent {e.exp} in {e} is outside [-{MAX_EXPONENT}, {MAX_EXPONENT}]")
            stack.extend(e.args)
            continue
        if row_for_head(type(e)) is not None:
            stack.extend(e.args)
            continue
        raise GrammarError(f"'{type(e).__name__}' in {e} is not part of the loss grammar")


# ------------------------------------------------------------------ canonical
def _expanded_terms(e: sympy.Expr, cap: int) -> int:
    """Upper estimate of the number of terms ``expand`` would produce (capped)."""
    if e.is_Add:
        return min(cap + 1, sum(_expanded_terms(a, cap) for a in e.args))
    if e.is_Mul:
        return min(cap + 1, reduce(lambda acc, a: min(cap + 1, acc * _expanded_terms(a, cap)), e.args, 1))
    if e.is_Pow and e.exp.is_Integer:
        n, k = _expanded_terms(e.base, cap), abs(int(e.exp))
        if n > cap:
            return cap + 1
        return min(cap + 1, math.comb(n + k - 1, k))
    return 1


def _largest_expansion(e: sympy.Expr, cap: int) -> int:
    best = _expanded_terms(e, cap)
    for a in e.args:
        if best > cap:
            break
        best = max(best, _largest_expansion(a, cap))
    return best


def canonical_form(expr: sympy.Expr) -> sympy.Expr:
    e = fold_numeric(expr)
    if _largest_expansion(e, MAX_EXPANDED_TERMS) <= MAX_EXPANDED_TERMS:
        e = sympy.expand(e, deep=True, mul=True, multinomial=True, power_exp=False,
                         power_base=False, log=False, basic=True)
    return normalise_numbers(e)


def to_text(expr: sympy.Expr) -> str:
    """The printed form: parseable again by :func:`lossforge.primitives.parse`."""
    return sympy.sstr(expr, full_prec=False)


# ------------------------------------------------------------------ structure
def split_product(e: sympy.Expr) -> tuple[sympy.Expr, list[sympy.Expr], list[sympy.Expr]]:
    """A product as (numeric coefficient, numerator factors, denominator factors), the way
    the compiler, the complexity measure and the GP encoding all read it: ``-2*a/b**2`` is
    ``(-2, [a], [b**2])`` (a factor with a negative numeric exponent is a denominator)."""
    coeff, factors = e.as_coeff_mul()
    num = [f for f in factors if not (f.is_Pow and f.exp.is_number and f.exp < 0)]
    den = [1 / f for f in factors if f.is_Pow and f.exp.is_number and f.exp < 0]
    return coeff, num, den


# ------------------------------------------------------------------ complexity
def complexity(expr: sympy.Expr) -> int:
    """Sum of the table's per-operator costs plus one per leaf."""
    cost = {name: get_primitive(name).complexity for name in ("add", "mul", "div", "neg", "square", "cube", "sqrt", "pow")}

    def walk(e: sympy.Expr) -> int:
        if not e.args:
            return 1
        if e.is_Add:
            return cost["add"] * (len(e.args) - 1) + sum(walk(a) for a in e.args)
        if e.is_Mul:
            coeff, num, den = split_product(e)
            total = sum(walk(f) for f in num + den)
            n_num = len(num)
            if coeff == -1:
                total += cost["neg"]
            elif coeff != 1:
                total += 1
                n_num += 1
            total += cost["mul"] * max(0, n_num - 1) + cost["mul"] * max(0, len(den) - 1)
            if den:
                total += cost["div"] + (0 if n_num else 1)
            return total
        if e.is_Pow:
            ex = e.exp
            if ex == 2:
                return cost["square"] + walk(e.base)
            if ex == 3:
                return cost["cube"] + walk(e.base)
            if ex == sympy.Rational(1, 2):
                return cost["sqrt"] + walk(e.base)
            if ex.is_number and ex < 0:
                return cost["div"] + 1 + walk(1 / e)
            return cost["pow"] + walk(e.base) + walk(ex)
        row = row_for_head(type(e))
        c = row.complexity if row is not None else 1
        return c * max(1, len(e.args) - 1) + sum(walk(a) for a in e.args)

    return walk(expr)
