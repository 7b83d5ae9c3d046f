"""Random expressions from the primitive table (tests, benchmarks, baselines)."""
from __future__ import annotations

import random

import sympy

from .canonical import round_number
from .errors import GrammarError
from .expr import Expr
from .symbols import TERMINALS
from .table import primitives


def random_sympy(rng: random.Random, max_depth: int = 4, leaf_prob: float = 0.3,
                 constant_prob: float = 0.2, constant_range: tuple[float, float] = (-2.0, 2.0)) -> sympy.Expr:
    """A random tree over the GP rows of the table with p, y and constants."""
    rows = [r for r in primitives().values() if r.gp]
    terminals = list(TERMINALS.values())

    def leaf():
        if rng.random() < constant_prob:
            return round_number(round(rng.uniform(*constant_range), 2)) or sympy.Integer(1)
        return rng.choice(terminals)

    def grow(depth: int):
        if depth >= max_depth or (depth > 0 and rng.random() < leaf_prob):
            return leaf()
        row = rng.choice(rows)
        return row.sympy(*[grow(depth + 1) for _ in range(row.arity)])

    return grow(0)


def random_expression(rng: random.Random, max_depth: int = 4, **kw) -> Expr:
    """A random valid Expr (retries trees that are undefined, e.g. 1/0)."""
    for _ in range(100):
        try:
            return Expr(random_sympy(rng, max_depth, **kw))
        except (GrammarError, ValueError, TypeError, ZeroDivisionError):
            continue  # e.g. Max(1/0, p): sympy refuses to build it
    raise GrammarError("could not draw a valid random expression in 100 tries")
