"""Canonical forms: folded constants keep their sign, numbers round and snap as
documented, and distinct losses never share a canonical string."""
import pytest
import sympy

from lossforge.primitives import parse
from lossforge.primitives.canonical import round_number


@pytest.mark.parametrize("minus, plus, folded_minus, folded_plus", [
    ("p - log(2)", "p + log(2)", "p - 0.693147", "p + 0.693147"),
    ("p - E", "p + E", "p - 2.71828", "p + 2.71828"),
    ("y*p - 2*log(3)", "y*p + 2*log(3)", "p*y - 2.19722", "p*y + 2.19722"),
    ("-sqrt(2)*p", "sqrt(2)*p", "-1.41421*p", "1.41421*p"),
    ("p - exp(-1)", "p + exp(-1)", "p - 0.367879", "p + 0.367879"),
])
def test_folding_a_negative_constant_keeps_its_sign(minus, plus, folded_minus, folded_plus):
    a, b = parse(minus), parse(plus)
    assert (a.canonical, b.canonical) == (folded_minus, folded_plus)
    assert a != b


@pytest.mark.parametrize("value, expected", [
    (0.0, sympy.Integer(0)),
    (1 / 3, sympy.Rational(1, 3)),
    (-1 / 3, sympy.Rational(-1, 3)),
    (7 / 12, sympy.Rational(7, 12)),
    (2.5, sympy.Rational(5, 2)),
    (5 / 13, sympy.Float("0.384615", 15)),       # 13 is past the snapping denominators
    (0.1234567, sympy.Float("0.123457", 15)),
    (123456789.0, sympy.Integer(123457000)),
    (1e308, sympy.Float(1e308, 15)),             # once raised OverflowError (round of inf)
    (-1e308, sympy.Float(-1e308, 15)),
    (1e-300, sympy.Float(1e-300, 15)),
])
def test_round_number(value, expected):
    got = round_number(value)
    assert got == expected and type(got) is type(expected)


def test_round_number_keeps_infinities():
    assert round_number(float("inf")) == sympy.oo and round_number(float("-inf")) == -sympy.oo


@pytest.mark.parametrize("value, expected", [
    (1 / 7, sympy.Rational(1, 7)),                # numerator 1, no multiple within q <= 12
    (1.00001, sympy.Float("1.00001", 15)),        # 1e-5 away from 1: beyond the 0.5e-5 relative tolerance
    (0.083334, sympy.Float("0.083334", 15)),      # 8e-6 relative from 1/12
    (9.99996, sympy.Integer(10)),                 # 4e-6 relative from 10: within it
    (9.99994, sympy.Float("9.99994", 15)),        # 6e-6 relative from 10: beyond it
])
def test_snapping_tolerance_is_half_a_unit_in_the_sixth_digit(value, expected):
    got = round_number(value)
    assert got == expected and type(got) is type(expected)


def test_rationals_stay_exact_and_constants_fold_in_float64():
    assert parse("p/13 + y/7").canonical == "p/13 + y/7"
    # float32 would round these to 49.4025 and 9.8995
    assert parse("p*exp(3.9)").canonical == "49.4024*p"
    assert parse("p*sqrt(98)").canonical == "9.89949*p"
