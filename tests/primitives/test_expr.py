import pickle
import random

import pytest
import sympy
import torch
from hypothesis import given
from hypothesis import strategies as st

from lossforge.primitives import CompileError, Expr, GrammarError, parse
from lossforge.primitives.generate import random_expression
from lossforge.primitives.symbols import P, Y

from .helpers import plain_domain, sympy_value


@pytest.mark.parametrize("a, b", [
    ("p*y + y", "y*(1+p)"),
    ("p + y", "y + p"),
    ("2*p + 3*p", "5*p"),
    ("(1-p)**2", "1 - 2*p + p**2"),
    ("0.5*p + 0.5*p", "p"),
    ("log(2)*p", "0.693147*p"),
    ("-(p - y)", "y - p"),
    ("p/2", "0.5*p"),
    ("max(p, y)", "Max(y, p)"),
    ("sigmoid(p)*(y+1)", "y*sigmoid(p) + sigmoid(p)"),
    ("log(p*(1+y))", "log(p + p*y)"),
])
def test_algebraically_equal_simple_forms_share_a_canonical_string(a, b):
    assert parse(a).canonical == parse(b).canonical
    assert parse(a) == parse(b) and hash(parse(a)) == hash(parse(b))


@pytest.mark.parametrize("a, b", [("p*y", "p+y"), ("log(p)", "log(y)"), ("p**2", "p**3"), ("0.5*p", "0.51*p")])
def test_different_forms_differ(a, b):
    assert parse(a).canonical != parse(b).canonical


def test_canonicalisation_is_bounded_for_large_expansions():
    import time

    t = time.perf_counter()
    e = parse("(p + y + 1)**6 * (p - y + 2)**6 * (log(p) + y + 3)**6")
    e.canonical  # must fall back to the unexpanded normal form, not expand 10^5 terms
    assert time.perf_counter() - t < 2.0
    assert len(e.canonical) < 200


def test_complexity_counts_operators_and_leaves():
    assert parse("p").complexity == 1
    assert parse("p + y").complexity == 3
    assert parse("-y*log(p)").complexity == 6
    assert parse("(p-y)**2").complexity < parse("(p-y)**2 + log(abs(p)) * exp(y)").complexity


def test_expr_is_immutable_and_pickles_as_text():
    e = parse("-y*log(p)")
    with pytest.raises(AttributeError):
        e.foo = 1
    assert pickle.loads(pickle.dumps(e)) == e
    assert e.__reduce__()[1] == ("-y*log(p)",)


def test_tunable_constants_bind_and_unbound_ones_refuse_to_compile():
    e = parse("c0*(p-y)**2 + c1*abs(p-y)")
    assert e.constants == ("c0", "c1")
    with pytest.raises(CompileError, match="bind"):
        e.compile()
    b = e.bind(c0=1.0, c1=0.5)
    assert b.constants == ()
    assert b.compile()(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(5.0)
    with pytest.raises(GrammarError, match="tunable"):
        e.bind(q=1.0)


def test_terminals_and_latex():
    assert parse("p**2").terminals == {"p"}
    assert parse("-y*log(p)").terminals == {"p", "y"}
    assert "\\sigma" in parse("sigmoid(p)").latex()
    assert "\\log" in parse("-y*log(p)").latex()


def test_expr_from_sympy_is_validated():
    assert Expr(-Y * sympy.log(P)) == parse("-y*log(p)")
    with pytest.raises(GrammarError, match="not a grammar terminal"):
        Expr(sympy.Symbol("x") * P)
    with pytest.raises(GrammarError, match="not part of the loss grammar"):
        Expr(sympy.sin(P))
    with pytest.raises(GrammarError, match="undefined"):
        Expr(P / sympy.Integer(0))


@given(seed=st.integers(0, 10**6))
def test_str_round_trips_to_the_same_canonical_form(seed):
    e = random_expression(random.Random(seed), max_depth=5)
    again = parse(str(e))
    assert again.canonical == e.canonical


@given(seed=st.integers(0, 10**6))
def test_compiled_torch_agrees_with_sympy_on_random_trees(seed):
    rng = random.Random(seed)
    e = random_expression(rng, max_depth=4)
    prog = e.compile()
    checked = 0
    for _ in range(8):
        p, y = rng.uniform(0.01, 0.99), rng.choice([0.0, 1.0, rng.uniform(-2, 2)])
        if not plain_domain(e.sympy, p, y):
            continue
        want = sympy_value(e.sympy, p, y)
        got = prog(torch.tensor([p], dtype=torch.float64), torch.tensor([y], dtype=torch.float64)).item()
        assert got == pytest.approx(want, rel=1e-7, abs=1e-9), (str(e), p, y)
        checked += 1


@given(seed=st.integers(0, 10**6))
def test_gradients_are_finite_on_the_classification_and_regression_domains(seed):
    e = random_expression(random.Random(seed), max_depth=5)
    prog = e.compile()
    p = torch.cat([torch.linspace(1e-6, 1 - 1e-6, 50), torch.linspace(-1e3, 1e3, 50)]).requires_grad_(True)
    y = torch.cat([torch.randint(0, 2, (50,)).float(), torch.linspace(-1e3, 1e3, 50)])
    out = prog(p, y)
    assert out.shape == p.shape
    out.sum().backward()
    assert torch.isfinite(p.grad).all(), str(e)


def test_constant_and_single_terminal_expressions_broadcast_and_keep_a_graph():
    p = torch.rand(4, 3, requires_grad=True)
    y = torch.rand(4, 3)
    for text in ("2", "y", "p"):
        out = parse(text).compile()(p, y)
        assert out.shape == (4, 3)
        out.sum().backward()


def test_compiled_program_pickles_and_shares_common_subexpressions():
    prog = parse("log(p)*y + log(p)**2").compile()
    ops = [op for op, _, _ in prog.instructions]
    assert ops.count("log") == 1
    again = pickle.loads(pickle.dumps(prog))
    p, y = torch.rand(5), torch.rand(5)
    assert torch.equal(again(p, y), prog(p, y))
