import time

import pytest
import sympy

from lossforge.primitives import GrammarError, LossforgeError, parse
from lossforge.primitives.symbols import Max, Min, P, Y
from lossforge.primitives.symbols import log as plog
from lossforge.primitives.symbols import sqrt as psqrt


@pytest.mark.parametrize("text, expected", [
    ("-y*log(p)", -Y * plog(P)),
    ("(p - y)**2", (P - Y) ** 2),
    ("Abs(p - y)", sympy.Abs(P - Y)),
    ("abs(p - y)", sympy.Abs(P - Y)),
    ("max(0, 1 - p*y)", Max(0, 1 - P * Y)),
    ("Max(p, y, 1)", Max(P, Y, 1)),
    ("square(p) + cube(y)", P**2 + Y**3),
    ("div(p, y)", P / Y),
    ("pow(p, 2)", P**2),
    ("neg(p)", -P),
    ("E*p", sympy.E * P),
    ("p**(3/2)", sympy.Abs(P) ** sympy.Rational(3, 2)),  # fractional powers are of |x|
    ("p**0.5", psqrt(P)),
    ("sqrt(p)", psqrt(P)),
    ("+p", P),
])
def test_parses_to_the_sympy_form(text, expected):
    assert parse(text).sympy == expected


def test_grammar_error_is_a_value_error_and_a_lossforge_error():
    with pytest.raises(GrammarError) as info:
        parse("q")
    assert isinstance(info.value, ValueError) and isinstance(info.value, LossforgeError)


@pytest.mark.parametrize("text, fragment", [
    ("__import__('os').system('echo hacked')", "character \"'\" at column 12"),
    ("__import__", "unknown name '__import__'"),
    ("p.__class__", "Attribute"),
    ("os.system(1)", "only calls of grammar functions"),
    ("(lambda: 1)()", "character ':' at column 8"),  # stopped before the AST walk
    ("eval(p)", "unknown function 'eval'"),
    ("exec(p)", "unknown function 'exec'"),
    ("[p for p in y]", "character '[' at column 1"),  # (p for p in y) reaches the whitelist
    ("p if y else p", "(IfExp) is not part of the loss grammar"),
    ("p and y", "(BoolOp) is not part of the loss grammar"),
    ("p in y", "(Compare) is not part of the loss grammar"),
    ("(p for p in y)", "(GeneratorExp) is not part of the loss grammar"),
    ("log(**p)", "takes no keyword arguments"),
    ("p < y", "character '<' at column 3"),  # p in y reaches the whitelist: Compare
    ("p % y", "character '%' at column 3"),
    ("log(p, base=2)", "character '=' at column 12"),  # log(**p) reaches the keyword check
    ("log(*p)", "starred"),
    ("logg(p)", "did you mean 'log'"),
    ("lgo", "unknown name 'lgo'"),
    ("pp * y", "did you mean 'p'"),
    ("log", "is a function"),
    ("log(p, y)", "takes 1 argument"),
    ("max(p)", "at least 2"),
    ("1/0", "division by the constant zero"),
    ("p/(y-y)", "division by the constant zero"),
    ("p**y", "exponent must be a constant"),
    ("p**100", "outside"),
    ("2**6**6", "outside"),
    ("1e400", "outside"),
    ("99999999999", "outside"),
    ("True", "not a number"),
    ("1j", "not a number"),  # a complex literal
    ("", "empty"),
    ("p +", "syntax error"),
])
def test_hostile_and_wrong_text_gives_a_grammar_error_naming_the_problem(text, fragment):
    with pytest.raises(GrammarError, match=None) as info:
        parse(text)
    assert fragment.lower() in str(info.value).lower(), str(info.value)


def test_complex_literals_are_rejected():
    with pytest.raises(GrammarError, match="not a number"):
        parse("1j*p")


def test_deep_nesting_is_rejected_before_it_reaches_the_parser():
    with pytest.raises(GrammarError, match="characters long"):
        parse("(" * 10000 + "p" + ")" * 10000)
    with pytest.raises(GrammarError, match="nested"):
        parse("(" * 1000 + "p" + ")" * 1000)
    with pytest.raises(GrammarError, match="nested"):
        parse("log(" * 500 + "p" + ")" * 500)
    with pytest.raises(GrammarError, match="nested"):
        parse("-" * 3000 + "p")
    with pytest.raises(GrammarError, match="nested"):
        parse("-" * 100 + "p")


def test_huge_input_is_rejected_quickly():
    t = time.perf_counter()
    with pytest.raises(GrammarError, match="characters long"):
        parse("p+" * 500_000 + "p")
    assert time.perf_counter() - t < 0.5


def test_long_flat_sums_parse_without_recursion_but_node_count_is_bounded():
    assert parse("+".join(["p"] * 100)).sympy == 100 * P
    with pytest.raises(GrammarError, match="nodes"):
        parse("+".join([f"p*{i}" for i in range(400)]))


def test_exploding_constant_arithmetic_is_refused_not_computed():
    t = time.perf_counter()
    with pytest.raises(GrammarError):
        parse("((((((((2**6)**6)**6)**6)**6)**6)**6)**6)")
    assert time.perf_counter() - t < 0.5


def test_non_string_input():
    with pytest.raises(GrammarError, match="must be a string"):
        parse(b"p")  # type: ignore[arg-type]
