"""The parser's error paths, limits and whitelist, pinned exactly.

Every rejection names the problem and where it is (``at column N``); the tests
compare whole messages, so a check that fires for the wrong reason (another
branch, a later limit) or points at the wrong place fails.  The node-whitelist
cases here all pass the character filter, so they reach the AST walk.
"""
import pytest
import sympy

from lossforge.primitives import GrammarError, parse
from lossforge.primitives.parse import MAX_DEPTH, MAX_LENGTH, MAX_NODES, parse_sympy
from lossforge.primitives.symbols import P, Y

_KNOWN = "abs, add, cube, div, exp, log, max, min, mul, neg, pow, sigmoid, softplus, sqrt, square, sub, tanh"


@pytest.mark.parametrize("text, message", [
    ("p**y", "the exponent must be a constant, not an expression of y at column 1 in 'p**y'"),
    ("pow(p, y*p)", "the exponent must be a constant, not an expression of p, y at column 1 in 'pow(p, y*p)'"),
    ("p**9", "exponent 9 is outside [-6, 6] at column 1 in 'p**9'"),
    ("p**-9", "exponent -9 is outside [-6, 6] at column 1 in 'p**-9'"),
    ("p**6.5", "exponent 6.50000000000000 is outside [-6, 6] at column 1 in 'p**6.5'"),
    ("9**9**9", "exponent 9 is outside [-6, 6] at column 4 in '9**9**9'"),
    ("0**(-1)", "zero raised to a negative power at column 1 in '0**(-1)'"),
    ("pow(0, -1)", "zero raised to a negative power at column 1 in 'pow(0, -1)'"),
    ("(1e6)**2.0001", "constant 1000000.00000000**2.00010000000000 is larger than 1e12 at column 1 in '(1e6)**2.0001'"),
    ("(1e-3)**-6", "constant 0.00100000000000000**-6 is larger than 1e12 at column 1 in '(1e-3)**-6'"),
    ("1e6*1e6*1.5", "constant 1500000000000.00 is larger than 1e12 at column 1 in '1e6*1e6*1.5'"),
    ("1e6*1e6+0.5", "constant 1000000000000.50 is larger than 1e12 at column 1 in '1e6*1e6+0.5'"),
    ("-(1e6*1e6*2)", "constant 2000000000000.00 is larger than 1e12 at column 3 in '-(1e6*1e6*2)'"),
    ("p*exp(1e6)", "constant 3.03321539680209E+434294 is larger than 1e12 at column 3 in 'p*exp(1e6)'"),
    ("max(p, y, 1e6*1e6*2)", "constant 2000000000000.00 is larger than 1e12 at column 11 in 'max(p, y, 1e6*1e6*2)'"),
    ("1000001", "constant 1000001 is outside [-1e+06, 1e+06] at column 1 in '1000001'"),
    ("p + 1000000.5", "constant 1000000.5 is outside [-1e+06, 1e+06] at column 5 in 'p + 1000000.5'"),
    ("log(**p)", "'log' takes no keyword arguments at column 1 in 'log(**p)'"),
    ("log(p, *y)", "starred arguments are not allowed at column 8 in 'log(p, *y)'"),
    ("max(p)", "'max' takes at least 2 arguments, got 1 at column 1 in 'max(p)'"),
    ("log(p, y)", "'log' takes 1 argument, got 2 at column 1 in 'log(p, y)'"),
    ("pow(p)", "'pow' takes 2 arguments, got 1 at column 1 in 'pow(p)'"),
    ("exp()", "'exp' takes 1 argument, got 0 at column 1 in 'exp()'"),
    ("div(p, y-y)", "division by the constant zero at column 1 in 'div(p, y-y)'"),
    ("p/(1-1)", "division by the constant zero at column 4 in 'p/(1-1)'"),
    ("foo(p)", f"unknown function 'foo'; known: {_KNOWN} at column 1 in 'foo(p)'"),
    ("lgo(p)", f"unknown function 'lgo' (did you mean 'log'?); known: {_KNOWN} at column 1 in 'lgo(p)'"),
    ("p.real(y)", "only calls of grammar functions are allowed, not 'p.real' at column 1 in 'p.real(y)'"),
    ("log(p)(y)", "only calls of grammar functions are allowed, not 'log(p)' at column 1 in 'log(p)(y)'"),
    ("x", "unknown name 'x'; the terminals are p (prediction), y (target) and the constants c0..c9 "
          "at column 1 in 'x'"),
    ("2*c10", "unknown name 'c10' (did you mean 'c1'?); the terminals are p (prediction), y (target) and the "
              "constants c0..c9 at column 3 in '2*c10'"),
    ("log", "'log' is a function; call it, e.g. log(p) at column 1 in 'log'"),
    ("p**True", "literal True is not a number at column 4 in 'p**True'"),
    ("None", "literal None is not a number at column 1 in 'None'"),
    ("not p", "operator 'not p' is not allowed (use +, -, *, /, **) at column 1 in 'not p'"),
    ("p // y", "operator 'FloorDiv' is not allowed (use +, -, *, /, **) at column 1 in 'p // y'"),
    ("p % y", "character '%' at column 3 is not allowed in a loss expression"),
    ("  p +  ", "syntax error in 'p +': invalid syntax"),
    ("p +\n y", "syntax error at column 4 in 'p +\\n y': invalid syntax"),
    ("   ", "empty expression; write a loss in p and y, e.g. '-y*log(p)'"),
    ("p" + " " * MAX_LENGTH, f"expression is {MAX_LENGTH + 1} characters long; the limit is {MAX_LENGTH}"),
    ("(" * (MAX_DEPTH + 1) + "p" + ")" * (MAX_DEPTH + 1),
     f"parentheses nested deeper than {MAX_DEPTH} levels (column {MAX_DEPTH + 1})"),
])
def test_error_messages_are_exact(text, message):
    with pytest.raises(GrammarError) as info:
        parse_sympy(text)
    assert str(info.value) == message


@pytest.mark.parametrize("text, node", [
    ("p and y", "BoolOp"),
    ("p or y", "BoolOp"),
    ("p in y", "Compare"),
    ("p is y", "Compare"),
    ("p not in y", "Compare"),
    ("(p, y)", "Tuple"),
    ("p.real", "Attribute"),
    ("p.__class__", "Attribute"),
    ("p if y else p", "IfExp"),
    ("(p for p in y)", "GeneratorExp"),
    ("log(p for p in y)", "GeneratorExp"),
    ("(yield p)", "Yield"),
    ("await p", "Await"),
    ("log(p) + (p, y)", "Tuple"),
])
def test_syntax_that_passes_the_character_filter_is_stopped_by_the_node_whitelist(text, node):
    with pytest.raises(GrammarError) as info:
        parse(text)
    msg = str(info.value)
    assert f"({node}) is not part of the loss grammar" in msg, msg
    assert "character" not in msg


def test_limits_accept_exactly_up_to_the_bound():
    assert parse_sympy("(" * MAX_DEPTH + "p" + ")" * MAX_DEPTH) == P
    assert parse_sympy("-" * MAX_DEPTH + "p") == P
    with pytest.raises(GrammarError, match=f"nested deeper than {MAX_DEPTH} levels at column {MAX_DEPTH + 2}"):
        parse_sympy("-" * (MAX_DEPTH + 1) + "p")
    assert parse_sympy("log(" * MAX_DEPTH + "p" + ")" * MAX_DEPTH).count(sympy.Function) >= 1
    n = MAX_NODES // 2  # a flat sum of n terms is 2n nodes
    assert parse_sympy("+".join(["p"] * n)) == n * P
    assert parse_sympy("*".join(["y"] * n)) == Y**n
    for op in "+*":
        with pytest.raises(GrammarError, match=f"more than {MAX_NODES} nodes; simplify it at column"):
            parse_sympy(op.join(["p"] * (n + 1)))
    assert parse_sympy("p" + " " * (MAX_LENGTH - 1)) == P
    assert parse_sympy("1000000") == 1000000 and parse_sympy("-1000000") == -1000000
    assert parse_sympy("1e6") == sympy.Float(1e6)
    assert parse_sympy("p**6") == P**6 and parse_sympy("p**-6") == P**-6
    assert parse_sympy("1e6*1e6") == sympy.Float(1e12) and parse_sympy("10**6*10**6") == 10**12
    assert parse_sympy("0.5**-6") == sympy.Float(64)
    assert parse_sympy("0**0") == 1 and parse_sympy("0**0.5") == 0


def test_variadic_and_operator_functions():
    assert parse_sympy("add(p, y, p)") == 2 * P + Y
    assert parse_sympy("mul(p, y, 2)") == 2 * P * Y
    assert parse_sympy("min(p, y, 0)") == parse_sympy("min(min(p, y), 0)")
    assert parse_sympy("max(1, 2)") == 2
    assert parse_sympy("sub(p, y)") == P - Y and parse_sympy("neg(p)") == -P
    assert parse_sympy("p\t+\ty") == P + Y and parse_sympy("(p\n+y)") == P + Y
    assert parse_sympy("p - y - 1") == P - Y - 1 and parse_sympy("p / y / 2") == P / (2 * Y)
    assert parse_sympy("--p") == P and parse_sympy("+-p") == -P


def test_a_tiny_divisor_folds_to_a_large_coefficient_without_crashing():
    # found by mutation testing: rounding 1e308 once raised OverflowError from round(inf)
    e = parse("div(p, 1e-308)")
    assert e.canonical == parse("p/1e-308").canonical
    assert "e+308" in str(e)


def test_non_string_and_error_types():
    with pytest.raises(GrammarError, match="an expression must be a string, got int"):
        parse_sympy(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("text, message", [
    ("p and y", "'p and y' (BoolOp) is not part of the loss grammar at column 1 in 'p and y'"),
    ("log(p) + (p, y)", "'(p, y)' (Tuple) is not part of the loss grammar at column 10 in 'log(p) + (p, y)'"),
    ("-" * 3999 + "p", "expression cannot be parsed (RecursionError); it is too deeply nested or too large"),
    ("p**((-1)**0.5)", "exponent 1.0*I is outside [-6, 6] at column 1 in 'p**((-1)**0.5)'"),
    ("add(1e6*1e6, 1e6*1e6, 1)", "constant 2000000000001.00 is larger than 1e12 at column 1 in "
                                 "'add(1e6*1e6, 1e6*1e6, 1)'"),
    # 600 nodes are reached inside the flattened chain: the first leaf (column 2) is the 601st
    ("(p)+" + "+".join(["p"] * 599), "expression has more than 600 nodes; simplify it at column 2 in "
                                     "'(p)+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p...'"),
    # ... or while walking the chain itself, reported at the chain's operator
    ("(p)+" + "+".join(["p"] * 700), "expression has more than 600 nodes; simplify it at column 1 in "
                                     "'(p)+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p+p...'"),
])
def test_more_error_messages_are_exact(text, message):
    with pytest.raises(GrammarError) as info:
        parse_sympy(text)
    assert str(info.value) == message


def test_long_tokens_and_texts_are_shortened_in_messages():
    token40 = "(p, " + "y" * 35 + ")"
    assert len(token40) == 40
    with pytest.raises(GrammarError, match=None) as info:
        parse_sympy(token40)
    assert str(info.value).startswith(f"'{token40}' (Tuple)")
    token41 = "(p, " + "y" * 36 + ")"
    with pytest.raises(GrammarError) as info:
        parse_sympy(token41)
    assert str(info.value).startswith(f"'{token41[:37]}...' (Tuple)")
    for n, shown in [(60, None), (61, 57)]:
        text = "p and " + "y" * (n - 6)
        assert len(text) == n
        with pytest.raises(GrammarError) as info:
            parse_sympy(text)
        assert str(info.value).endswith(" in " + repr(text if shown is None else text[:shown] + "..."))
    text = "p +* " + "y" * 70
    with pytest.raises(GrammarError) as info:
        parse_sympy(text)
    assert str(info.value) == f"syntax error at column 4 in {text[:60]!r}: invalid syntax"


# Each template puts the leaf at nesting depth k + 1 through a different kind of
# node (unary plus/minus, the left or right of a sum, product or power, a call
# argument), without parentheses beyond one level.
_DEPTH_TEMPLATES = {
    "unary plus": lambda k: "+" * (k + 1) + "p",
    "sum, left": lambda k: "(" + "-" * k + "p)+y",
    "sum, right": lambda k: "y+" + "-" * k + "p",
    "product, right": lambda k: "y*" + "-" * k + "p",
    "power base": lambda k: "(" + "-" * k + "p)**2",
    "power exponent": lambda k: "p**" + "-" * k + "1",
    "call argument": lambda k: "log(" + "-" * k + "p)",
}


@pytest.mark.parametrize("kind", sorted(_DEPTH_TEMPLATES))
def test_every_kind_of_node_counts_one_level_of_depth(kind):
    make = _DEPTH_TEMPLATES[kind]
    parse_sympy(make(MAX_DEPTH - 1))  # the leaf at depth MAX_DEPTH
    with pytest.raises(GrammarError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_sympy(make(MAX_DEPTH))


def test_separate_parentheses_do_not_add_up_and_exact_1e12_powers_parse():
    assert parse_sympy("+".join(["(p)"] * (MAX_DEPTH + 6))) == (MAX_DEPTH + 6) * P
    assert parse_sympy("(1e6*1e6)**1") == sympy.Float(1e12)
