"""The primitive table: each operator defined once, as one row.

A row holds everything about an operator: its name, arity, sympy
construction, protected torch implementation and complexity cost, an optional
forward-mode derivative (default: torch autograd), and what export needs (the
call the standalone exporter prints with the source it calls, and the plain
sympy form without numeric guards).  The parser, the compiler, the complexity
measure, the GP primitive set, the population program and both exporters read
these rows, so the sympy side, the torch side and the exported code cannot
drift apart; :func:`register` is the one way to add an operator.

Every row is probed when it is registered (see :func:`probe`): on zeros,
negatives, tiny and huge values its torch output and gradient must be finite,
and where the plain mathematical form is defined it must agree with sympy.
"""
from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import operator
import textwrap
from dataclasses import dataclass, field
from typing import Callable

import sympy
import torch
import torch.nn.functional as F

from . import derivatives as d
from .errors import PrimitiveError
from .symbols import Max as sp_max
from .symbols import Min as sp_min
from .symbols import log as sp_log
from .symbols import sigmoid as sp_sigmoid
from .symbols import softplus as sp_softplus
from .symbols import sqrt as sp_sqrt
from .symbols import to_grammar
from .torchforms import (CLAMPED_EXP_SOURCE, PROTECTED_DIV_SOURCE, PROTECTED_LOG_SOURCE, PROTECTED_POW_SOURCE,
                         PROTECTED_SQRT_SOURCE, clamped_exp, cube, pow_row, protected_div, protected_log, protected_pow,
                         protected_sqrt, t_max, t_min)

from .protection import DIV_EPS, EXP_MAX, LOG_EPS, MAX_EXPONENT, POW_EPS, SQRT_EPS  # noqa: F401

PROBE_HUGE = 1e4
PROBE_VALUES = (0.0, 1e-9, -1e-9, 1e-3, -1e-3, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 30.0, -30.0, PROBE_HUGE, -PROBE_HUGE)

__all__ = ["Primitive", "clamped_exp", "get_primitive", "primitives", "probe", "protected_div", "protected_log",
           "protected_pow", "protected_sqrt", "register", "row_for_head", "t_max", "t_min", "unregister"]


# ---------------------------------------------------------------- the rows
@dataclass(frozen=True)
class Primitive:
    """One operator of the grammar.

    ``sympy`` builds the symbolic form from sympy arguments; ``torch`` is the
    protected numeric form; ``domain`` says (for plain floats) where the two
    must agree exactly (outside it the torch form is the protected variant).
    ``head`` is the sympy class the row produces, used to map sympy trees back
    to rows (``None`` for rows that are spelled with Add/Mul/Pow).

    ``derivative`` is the row's forward-mode rule for the population program
    (the convention of :mod:`lossforge.primitives.derivatives`); ``None``
    derives it with torch autograd, so a user row needs none.  pow, whose
    exponent is a compile-time constant, gives a function of the exponent
    that returns the rule.

    ``export`` is the expression the standalone exporter prints, over the
    operands ``{0}``, ``{1}`` (e.g. ``"torch.asinh({0})"``), and
    ``export_source`` the definitions it calls (Python that imports only
    torch); ``export_note`` is the guard, as a line of the exported docstring.
    Left empty, they are taken from the torch form at registration: a function
    of ``torch`` / ``torch.nn.functional`` is called by name, a ``def``
    function's source is copied into the exported file.  ``plain`` is the
    plain sympy form without numeric guards (default: the sympy form itself).
    """

    name: str
    arity: int
    sympy: Callable[..., sympy.Expr]
    torch: Callable[..., torch.Tensor]
    complexity: int
    domain: Callable[..., bool] = field(default=lambda *a: True)
    head: type | None = None
    description: str = ""
    gp: bool = True  # offered to the genetic programming primitive set
    derivative: Callable | None = None
    export: str | None = None
    export_source: str = ""
    export_note: str = ""
    plain: Callable[..., sympy.Expr] | None = None


def _derived_export(fn: Callable, arity: int) -> tuple[str | None, str]:
    """(call template, source) of a torch form: a torch function by its name, a ``def`` by its source."""
    args = ", ".join(f"{{{i}}}" for i in range(arity))
    name = getattr(fn, "__name__", "")
    # torch.special's functions are named special_<name> (torch.special.ndtr is special_ndtr)
    for prefix, namespace, attr in (("torch", torch, name), ("F", F, name),
                                    ("torch.special", torch.special, name.removeprefix("special_"))):
        if attr and getattr(namespace, attr, None) is fn:
            return f"{prefix}.{attr}({args})", ""
    if inspect.isfunction(fn) and name.isidentifier():
        try:
            source = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError):
            return None, ""
        if source.startswith(f"def {name}("):
            return f"{name}({args})", source
    return None, ""


_TABLE: dict[str, Primitive] = {}
_BY_HEAD: dict[type, Primitive] = {}


def primitives() -> dict[str, Primitive]:
    """All registered rows by name (a copy)."""
    return dict(_TABLE)


def get_primitive(name: str) -> Primitive:
    from .errors import did_you_mean

    try:
        return _TABLE[name]
    except KeyError:
        raise PrimitiveError(f"unknown primitive '{name}'{did_you_mean(name, _TABLE)}; "
                             f"known: {', '.join(_TABLE)}") from None


def row_for_head(head: type) -> Primitive | None:
    return _BY_HEAD.get(head)


def register(prim: Primitive, *, probe_row: bool = True, replace: bool = False) -> Primitive:
    """Add a row to the table after probing it (see :func:`probe`)."""
    if prim.name in _TABLE and not replace:
        raise PrimitiveError(f"primitive '{prim.name}' is already registered; pass replace=True to redefine it")
    if prim.arity not in (1, 2):
        raise PrimitiveError(f"primitive '{prim.name}' has arity {prim.arity}; only 1 and 2 are supported")
    if probe_row:
        probe(prim)
    old = _TABLE.get(prim.name)
    if old is not None and prim.torch is not old.torch:
        # A row copied from the old one with a new torch form (dataclasses.replace):
        # the old derivative and export code were written for the old form.
        if prim.derivative is old.derivative:
            prim = dataclasses.replace(prim, derivative=None)
        if prim.export == old.export and prim.export_source == old.export_source:
            prim = dataclasses.replace(prim, export=None, export_source="", export_note="")
    if prim.export is None:
        template, source = _derived_export(prim.torch, prim.arity)
        if template is not None:
            prim = dataclasses.replace(prim, export=template, export_source=source)
    _TABLE[prim.name] = prim
    if prim.head is not None:
        _BY_HEAD[prim.head] = prim
    return prim


def unregister(name: str) -> None:
    """Remove a row (for user-registered primitives; the built-ins stay)."""
    row = get_primitive(name)
    if row.name in _BUILTIN_NAMES:
        raise PrimitiveError(f"'{name}' is a built-in primitive and cannot be removed")
    del _TABLE[name]
    if row.head is not None and _BY_HEAD.get(row.head) is row:
        del _BY_HEAD[row.head]


def probe(prim: Primitive) -> None:
    """Check a row: finite torch outputs and gradients on PROBE_VALUES (float32),
    and agreement with the sympy form (float64) wherever ``domain`` holds."""
    grid = list(itertools.product(PROBE_VALUES, repeat=prim.arity))
    cols = list(zip(*grid))
    args = [torch.tensor(c, dtype=torch.float32, requires_grad=True) for c in cols]
    try:
        out = prim.torch(*args)
        out.sum().backward()
    except Exception as exc:  # a broken row must not register
        raise PrimitiveError(f"primitive '{prim.name}' raised on the probe inputs: {exc}") from exc
    for i, (vals, name) in enumerate(((out.detach(), "output"),) + tuple((a.grad, f"gradient {k}") for k, a in enumerate(args))):
        if vals is None:
            continue
        bad = ~torch.isfinite(vals)
        if bad.any():
            j = int(bad.nonzero()[0][0])
            raise PrimitiveError(
                f"primitive '{prim.name}' gives a non-finite {name} at {grid[j]} in float32; "
                "protect it (clamp the input or the result) before registering")

    syms = sympy.symbols(f"a0:{prim.arity}", real=True)
    sym_expr = prim.sympy(*syms)
    # A coarser grid is enough for the sympy cross-check and keeps import fast.
    check_values = (0.0, 1e-3, -0.5, 1.0, -2.0, 3.0, 30.0, -30.0)
    points = [pt for pt in itertools.product(check_values, repeat=prim.arity) if prim.domain(*pt)]
    if not points:
        return
    t64 = prim.torch(*[torch.tensor(c, dtype=torch.float64) for c in zip(*points)])
    for pt, got in zip(points, t64.tolist()):
        want = sym_expr.xreplace({s: sympy.Float(v) for s, v in zip(syms, pt)}).evalf()
        if not want.is_real or not want.is_finite:
            continue
        want = float(want)
        if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            raise PrimitiveError(
                f"primitive '{prim.name}': torch gives {got!r} but sympy gives {want!r} at {pt}; "
                "the two forms of the row disagree")


def _builtin_rows() -> list[Primitive]:
    S = sympy
    # add, mul, neg, div and pow are what the compiler lowers sympy's Add/Mul/Pow
    # to; their operands may be Python floats, which the exporter prints itself.
    return [
        Primitive("add", 2, lambda a, b: a + b, operator.add, 1, head=S.Add, description="a + b",
                  derivative=d.rule_add),
        Primitive("sub", 2, lambda a, b: a - b, torch.sub, 1, description="a - b", derivative=d.rule_sub,
                  export="torch.sub({0}, {1})"),
        Primitive("mul", 2, lambda a, b: a * b, operator.mul, 1, head=S.Mul, description="a * b",
                  derivative=d.rule_mul),
        Primitive("div", 2, lambda a, b: a / b, protected_div, 2, domain=lambda a, b: abs(b) >= DIV_EPS,
                  description="a / b, |b| floored at 1e-6", derivative=d.rule_div, export="protected_div({0}, {1})",
                  export_source=PROTECTED_DIV_SOURCE,
                  export_note=f"in a / b, |b| is floored at {DIV_EPS:g} (sign kept)"),
        Primitive("neg", 1, lambda a: -a, operator.neg, 1, description="-a", derivative=d.rule_neg),
        Primitive("square", 1, lambda a: a**2, torch.square, 1, description="a**2", derivative=d.rule_square,
                  export="torch.square({0})"),
        Primitive("cube", 1, lambda a: a**3, cube, 2, description="a**3", derivative=d.rule_cube, export="{0} ** 3"),
        Primitive("sqrt", 1, sp_sqrt, protected_sqrt, 2, head=sp_sqrt, domain=lambda a: abs(a) >= SQRT_EPS,
                  description="sqrt(|a|)", derivative=d.rule_sqrt, export="protected_sqrt({0})",
                  export_source=PROTECTED_SQRT_SOURCE, export_note=f"sqrt(x) is sqrt(max(|x|, {SQRT_EPS:g}))",
                  plain=lambda a: S.sqrt(S.Abs(a))),
        Primitive("abs", 1, S.Abs, torch.abs, 1, head=S.Abs, description="|a|", derivative=d.rule_abs,
                  export="torch.abs({0})"),
        Primitive("log", 1, sp_log, protected_log, 2, head=sp_log, domain=lambda a: abs(a) >= LOG_EPS,
                  description="log(|a|), |a| floored at 1e-12", derivative=d.rule_log, export="protected_log({0})",
                  export_source=PROTECTED_LOG_SOURCE, export_note=f"log(x) is log(max(|x|, {LOG_EPS:g}))",
                  plain=lambda a: S.log(S.Abs(a))),
        Primitive("exp", 1, S.exp, clamped_exp, 2, head=S.exp, domain=lambda a: a <= EXP_MAX,
                  description="exp(min(a, 30))", derivative=d.rule_exp, export="clamped_exp({0})",
                  export_source=CLAMPED_EXP_SOURCE, export_note=f"exp(x) is exp(min(x, {EXP_MAX:g}))"),
        Primitive("tanh", 1, S.tanh, torch.tanh, 2, head=S.tanh, description="tanh(a)", derivative=d.rule_tanh,
                  export="torch.tanh({0})"),
        Primitive("sigmoid", 1, sp_sigmoid, torch.sigmoid, 2, head=sp_sigmoid, description="1/(1+exp(-a))",
                  derivative=d.rule_sigmoid, export="torch.sigmoid({0})", plain=lambda a: 1 / (1 + S.exp(-a))),
        Primitive("softplus", 1, sp_softplus, F.softplus, 2, head=sp_softplus, description="log(1+exp(a))",
                  derivative=d.rule_softplus, export="F.softplus({0})", plain=lambda a: S.log(1 + S.exp(a))),
        Primitive("min", 2, sp_min, t_min, 2, head=sp_min, description="min(a, b)", derivative=d.rule_min,
                  export="torch.minimum({0}, {1})", plain=S.Min),
        Primitive("max", 2, sp_max, t_max, 2, head=sp_max, description="max(a, b)", derivative=d.rule_max,
                  export="torch.maximum({0}, {1})", plain=S.Max),
        # pow takes a constant exponent (|e| <= 6); the parser enforces it, GP uses square/cube.
        # Its derivative is a function of the exponent (d.rule_pow(e) is the rule).
        Primitive("pow", 2, lambda a, e: to_grammar(a**e), pow_row, 2, head=S.Pow, domain=lambda a, e: False,
                  description="a**e for a constant e, |a|**e if e is not an integer", gp=False,
                  derivative=d.rule_pow, export="protected_pow({0}, {1})", export_source=PROTECTED_POW_SOURCE,
                  export_note=f"x**e is max(|x|, {POW_EPS:g})**e for non-integer e"),
    ]


_BUILTIN_NAMES: set[str] = set()


def _register_builtins() -> None:
    for row in _builtin_rows():
        _BUILTIN_NAMES.add(row.name)
        # pow's second argument must be a constant: its probe is run separately below.
        register(row, probe_row=row.name != "pow")
    _probe_pow()


def _probe_pow() -> None:
    for e in (-3, -2, -1, -0.5, 0.5, 1.5, 2, 3, MAX_EXPONENT):
        row = Primitive(f"pow{e}", 1, lambda a, e=e: to_grammar(a ** sympy.nsimplify(e)), lambda a, e=e: protected_pow(a, e), 2,
                        domain=lambda a, e=e: (abs(a) > POW_EPS) if not float(e).is_integer() else (e > 0 or abs(a) ** -e >= DIV_EPS))
        probe(row)


_register_builtins()
