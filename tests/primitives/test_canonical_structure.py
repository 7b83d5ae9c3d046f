"""Validation, expansion, products and the complexity measure of sympy trees
(``primitives/canonical.py``; found by mutation testing, ``experiments/mutation.py canonical_rest``)."""
from __future__ import annotations

import pytest
import sympy

from lossforge.primitives import GrammarError, parse
from lossforge.primitives.canonical import (MAX_TREE_NODES, canonical_form, complexity, split_product, to_text,
                                            validate)
from lossforge.primitives.symbols import ALL_SYMBOLS, Max, P, Y, log, sqrt

C0 = ALL_SYMBOLS["c0"]


# ----------------------------------------------------------------------------- complexity
# One per leaf plus each operator's cost from the table: add, sub, mul, neg, square and abs
# cost 1; div, cube, sqrt, pow, log, max cost 2.  A numeric coefficient is a leaf and a factor;
# -1 is a negation; a negative power is a division (of the constant 1 when nothing is above).
@pytest.mark.parametrize("text, cost", [
    ("p", 1), ("p + y", 3), ("p + y + 1", 5), ("p*y", 3), ("-p", 2), ("2*p", 3), ("-2*p*y", 5),
    ("p/y", 4), ("-p/y", 5), ("2*p/y", 6), ("1/p", 4), ("2/p", 4), ("p/(y*log(p))", 8),
    ("p**2", 2), ("p**3", 3), ("sqrt(p)", 3), ("p**1.5", 5), ("p**-2", 5), ("p**-0.5", 6),
    ("log(p)", 3), ("max(p, y)", 4), ("max(p, y, 1)", 7), ("-y*log(p)", 6), ("c0*p", 3),
    ("1/(p*y)", 6), ("p**0.25", 5),
])
def test_complexity_is_the_sum_of_operator_costs_and_leaves(text, cost):
    assert complexity(parse(text).sympy) == cost
    assert parse(text).complexity == cost


def test_a_sympy_square_root_costs_what_the_grammars_sqrt_costs():
    assert complexity(P ** sympy.Rational(1, 2)) == complexity(sqrt(P)) == 3
    assert complexity(Y * P ** sympy.Rational(1, 2)) == 5


# ----------------------------------------------------------------------------- validate
@pytest.mark.parametrize("expr, message", [
    (5, "not a sympy expression: 5"),
    (sympy.oo * P, "expression oo*p is undefined (it contains an infinity or NaN)"),
    (-sympy.oo + P, "is undefined"),
    (sympy.nan * P, "is undefined"),
    (sympy.zoo, "is undefined"),
    (sympy.I * P, "expression I*p is complex; the grammar is real-valued"),
    (sympy.Symbol("p") * Y, "symbol 'p' is not a grammar terminal (p, y, c0..c9, all real)"),
    (sympy.Symbol("q", real=True), "symbol 'q' is not a grammar terminal"),
    (P**Y, "exponent of p**y depends on p or y; exponents must be constants"),
    ((P + 1) ** (2 * P), "depends on p or y"),
    (P**7, "exponent 7 in p**7 is outside [-6, 6]"),
    (Y**-7, "exponent -7 in y**(-7) is outside [-6, 6]"),
    (sympy.sin(P), "'sin' in sin(p) is not part of the loss grammar"),
    (log(sympy.sin(P)) + Y, "'sin' in sin(p) is not part of the loss grammar"),
    (P * sympy.sin(Y), "'sin' in sin(y) is not part of the loss grammar"),
    (sympy.exp(P) ** sympy.sin(Y), "'sin' in sin(y)"),
])
def test_validate_names_what_is_not_in_the_grammar(expr, message):
    with pytest.raises(GrammarError) as info:
        validate(expr)
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("expr", [P**6, Y**-6, P**C0, sympy.pi * P + sympy.E, sympy.Rational(1, 3) * P,
                                  Max(P, Y, 1), log(sympy.Abs(P)) ** 2 / (1 + Y), C0 * P])
def test_validate_accepts_the_grammar(expr):
    validate(expr)


def test_validate_accepts_exactly_up_to_the_node_limit():
    terms = [log(P + i) for i in range(1, 150)]  # 149 terms of 4 nodes, the root: 597
    validate(sympy.Add(*terms, P * Y))  # 600 nodes
    with pytest.raises(GrammarError, match="more than 600 nodes"):
        validate(sympy.Add(*terms, P * Y, Y))  # 601


def test_validate_counts_every_node_of_the_tree():
    wide = sympy.Add(*[log(P + i) for i in range(1, MAX_TREE_NODES // 4)])  # 4 nodes a term
    validate(wide)
    with pytest.raises(GrammarError, match=f"^expression has more than {MAX_TREE_NODES} nodes$"):
        validate(sympy.Add(*[log(P + i) * Y for i in range(1, MAX_TREE_NODES // 4)]))
    with pytest.raises(GrammarError, match="more than"):
        validate(sympy.Mul(*[(P + i) ** 2 for i in range(1, MAX_TREE_NODES // 3)]))


# ----------------------------------------------------------------------------- canonical form
def test_products_and_integer_powers_are_expanded_but_protected_functions_are_not():
    assert str(canonical_form((P + Y) ** 2)) == "p**2 + 2*p*y + y**2"
    assert str(canonical_form(P * (1 + Y))) == "p*y + p"
    assert canonical_form(log(P * (1 + Y))) == log(P * Y + P)  # inside functions too
    # exp is clamped (exp(min(x, 30))), so exp(p + y) and exp(p)*exp(y) are different losses
    assert canonical_form(sympy.exp(P + Y)) == sympy.exp(P + Y)
    assert parse("exp(p + y)").canonical != parse("exp(p)*exp(y)").canonical
    # log is of |x|, floored: log(p*y) is not log(p) + log(y)
    assert parse("log(p*y)").canonical != parse("log(p) + log(y)").canonical
    assert canonical_form(sympy.exp(2 * (P + 1))) == sympy.exp(2 * P + 2)


def _sum(terms):
    return sympy.Add(*terms)


A6 = [P, Y, log(P), sympy.exp(Y), sympy.tanh(P), sympy.Abs(Y)]
B8 = [P, Y, log(Y), sympy.exp(P), sympy.tanh(Y), sympy.Abs(P), sqrt(P), sqrt(Y)]


def test_expansion_is_bounded_by_the_estimated_number_of_terms():
    # 6 x 8 = 48 terms: expanded; 6 x 9 = 54: left as a product
    small = _sum(A6) * _sum(B8)
    assert canonical_form(small).is_Add and len(canonical_form(small).args) > 20
    big = _sum(A6) * _sum(B8 + [sympy.exp(Y)])
    assert canonical_form(big).is_Mul
    # a bounded product inside a function is still expanded when a large one sits elsewhere
    assert canonical_form(log(_sum(A6[:2]) * _sum(B8[:2]))).args[0].is_Add
    # (a + b + c)**k estimates C(k + 2, k) terms: k = 6 gives 28 (expanded); times 2 more is 56
    assert canonical_form(_sum(A6[:3]) ** 6).is_Add
    assert canonical_form(_sum(A6[:3]) ** 6 * (P + 2)).is_Mul
    # a sum is bounded by the sum of its terms' estimates: 48 + 4 terms is left alone
    two = _sum(A6) * _sum(B8) + (P + Y) * (log(P) + sympy.exp(Y))
    assert canonical_form(two) == two
    # a power of a sum: C(11, 6) = 462 terms, left alone
    assert canonical_form(_sum(A6) ** 6).is_Pow
    # an estimate of exactly 48 whose factor holds a large product inside a function: left alone
    inner = log(_sum(A6) * _sum(B8 + [sympy.exp(Y)]))
    outer = _sum(A6) * _sum(B8[:-1] + [inner])
    assert canonical_form(outer) == outer
    # a large expansion deep inside a tree keeps that subtree unexpanded, even under a small root
    deep = log(_sum(A6) * _sum(B8 + [sympy.exp(Y)])) + Y
    assert canonical_form(deep) == deep


def test_the_printed_form_parses_back_and_keeps_six_digits():
    e = parse("0.123456789*p + 1/3*y")
    assert to_text(e.sympy) == str(e) and parse(to_text(e.sympy)) == e
    assert to_text(sympy.Float("0.5", 15) * P) == "0.5*p"


def test_split_product_reads_negative_powers_as_the_denominator():
    assert split_product(-2 * P / Y**2) == (-2, [P], [Y**2])
    assert split_product(P / (Y * log(P))) == (1, [P], [Y, log(P)])
    assert split_product(3 * P * Y) == (3, [P, Y], [])
    assert split_product(2 / sqrt(P)) == (2, [], [sqrt(P)])
    assert split_product(P**C0 * Y) == (1, [Y, P**C0], [])  # a symbolic exponent is not a denominator
    assert split_product(P ** sympy.Rational(1, 3) * Y) == (1, [Y, P ** sympy.Rational(1, 3)], [])
