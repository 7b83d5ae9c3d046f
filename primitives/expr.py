"""The Expr object: one loss expression in the grammar's terminals."""
from __future__ import annotations

from typing import Mapping

import sympy

from .canonical import canonical_form, complexity, normalise_numbers, to_text, validate
from .compile import Program, compile_sympy
from .errors import GrammarError
from .parse import parse_sympy
from .symbols import TERMINALS, TUNABLE, to_grammar


class Expr:
    """An immutable loss expression ``L(p, y)``.

    ``sympy`` is the expression as built (numbers rounded to 6 significant
    digits); ``canonical`` is a normal-form string, equal for algebraically
    equal simple forms, used for equality, hashing and deduplication;
    ``str(e)`` parses back to the same canonical form.
    """

    __slots__ = ("_sympy", "_text", "_canonical", "_complexity", "_program")

    def __init__(self, expr: sympy.Expr):
        if isinstance(expr, Expr):
            expr = expr.sympy
        if not isinstance(expr, sympy.Basic):
            raise GrammarError(f"Expr() takes a sympy expression; use parse() for text, got {type(expr).__name__}")
        if not isinstance(expr, sympy.Expr):
            raise GrammarError(f"not a sympy expression: {expr!r}")
        expr = normalise_numbers(to_grammar(expr))
        validate(expr)
        object.__setattr__(self, "_sympy", expr)
        object.__setattr__(self, "_text", to_text(expr))
        object.__setattr__(self, "_canonical", None)
        object.__setattr__(self, "_complexity", None)
        object.__setattr__(self, "_program", None)

    def __setattr__(self, name, value):
        raise AttributeError("Expr is immutable")

    # ------------------------------------------------------------ views
    @property
    def sympy(self) -> sympy.Expr:
        return self._sympy

    @property
    def canonical(self) -> str:
        if self._canonical is None:
            object.__setattr__(self, "_canonical", to_text(canonical_form(self._sympy)))
        return self._canonical

    @property
    def complexity(self) -> int:
        if self._complexity is None:
            object.__setattr__(self, "_complexity", complexity(self._sympy))
        return self._complexity

    @property
    def constants(self) -> tuple[str, ...]:
        """Names of the unbound tunable constants (c0..c9), sorted."""
        return tuple(sorted(s.name for s in self._sympy.free_symbols if s.name in TUNABLE))

    @property
    def terminals(self) -> frozenset[str]:
        """Which of p and y the expression depends on."""
        return frozenset(s.name for s in self._sympy.free_symbols if s.name in TERMINALS)

    def latex(self) -> str:
        return sympy.latex(self._sympy)

    def compile(self) -> Program:
        """A torch callable ``(p, y) -> elementwise loss`` (cached)."""
        if self._program is None:
            object.__setattr__(self, "_program", compile_sympy(self._sympy, self._text))
        return self._program

    def bind(self, values: Mapping[str, float] | None = None, **kw: float) -> "Expr":
        """Substitute numeric values for tunable constants (``e.bind(c0=0.5)``)."""
        values = {**(values or {}), **kw}
        unknown = sorted(set(values) - set(TUNABLE))
        if unknown:
            raise GrammarError(f"cannot bind {', '.join(unknown)}: only c0..c9 are tunable constants")
        subs = {TUNABLE[k]: sympy.Float(float(v)) for k, v in values.items()}
        return Expr(self._sympy.xreplace(subs))

    # ------------------------------------------------------------ protocol
    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Expr({self._text!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Expr) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __reduce__(self):
        # Pickle as text and rebuild through the safe parser.
        return (parse, (self._text,))


def parse(text: str) -> Expr:
    """Parse a loss expression such as ``"-y*log(p)"`` (whitelist parser, no eval)."""
    return Expr(parse_sympy(text))


def as_expr(value) -> Expr:
    """Accept an Expr, a sympy expression or expression text."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, str):
        return parse(value)
    if isinstance(value, sympy.Basic):
        return Expr(value)
    raise GrammarError(f"expected a loss expression (Expr or text), got {type(value).__name__}")
