"""The compiler: each lowering rule computes the protected value, constants, shapes, pickling
and the errors (found by mutation testing, ``experiments/mutation.py compile``)."""
from __future__ import annotations

import pickle

import pytest
import sympy
import torch

from lossforge.primitives import CompileError, parse
from lossforge.primitives.compile import compile_sympy
from lossforge.primitives.symbols import ALL_SYMBOLS, P, Y, log, sqrt

D64 = dict(dtype=torch.float64)
PV = torch.tensor([0.0, 1e-9, -0.5, 2.0, -3.0, 0.0], **D64)
YV = torch.tensor([0.0, 2.0, 0.25, 0.0, -1.5, 1e-7], **D64)


def _div(a, b):  # protected division: |b| floored at 1e-6, sign kept (+ for 0)
    b = torch.as_tensor(b, **D64).expand_as(torch.as_tensor(a, **D64))
    return a / torch.where(b.abs() < 1e-6, torch.where(b < 0, -1e-6, 1e-6).to(b.dtype), b)


@pytest.mark.parametrize("text, want", [
    ("p + y + 1", lambda p, y: p + y + 1),
    ("p*y*(p - 2)", lambda p, y: p * y * (p - 2)),
    ("-p*y", lambda p, y: -(p * y)),
    ("-p", lambda p, y: -p),
    ("-2*p/y", lambda p, y: _div(-2 * p, y)),
    ("3*p*y/(p - y)", lambda p, y: _div(3 * p * y, p - y)),
    ("1/(p*y)", lambda p, y: _div(torch.ones_like(p), p * y)),
    ("2/p", lambda p, y: _div(torch.full_like(p, 2.0), p)),
    ("p/(y*(p + 1))", lambda p, y: _div(p, y * (p + 1))),
    ("p**2", lambda p, y: p * p),
    ("(p - y)**3", lambda p, y: (p - y) ** 3),
    ("sqrt(p)", lambda p, y: torch.sqrt(p.abs().clamp(min=1e-12))),
    ("p**1.5", lambda p, y: p.abs().clamp(min=1e-12) ** 1.5),
    ("p**-2", lambda p, y: _div(torch.ones_like(p), p**2)),
    ("max(p, y, 0.5)", lambda p, y: torch.maximum(torch.maximum(p, y), torch.tensor(0.5, **D64))),
    ("min(p, y, 0.5, -p)", lambda p, y: torch.minimum(torch.minimum(torch.minimum(p, y), torch.tensor(0.5, **D64)),
                                                       -p)),
])
def test_each_lowering_rule_computes_the_protected_value(text, want):
    got = parse(text).compile()(PV, YV)
    torch.testing.assert_close(got, want(PV, YV), rtol=1e-15, atol=0)


def test_sympy_square_roots_lower_to_the_protected_root_and_its_reciprocal():
    # sympy's own sqrt (Pow(x, 1/2)), as a user's sympy tree may hold, not the grammar's sqrt
    root = torch.sqrt(PV.abs().clamp(min=1e-12))
    torch.testing.assert_close(compile_sympy(P ** sympy.Rational(1, 2))(PV, YV), root, rtol=1e-15, atol=0)
    torch.testing.assert_close(compile_sympy(P ** sympy.Rational(-1, 2))(PV, YV), _div(torch.ones_like(PV), root),
                               rtol=1e-15, atol=0)
    # x**(-1/2) is 1 / protected sqrt(x), bit for bit (x**-0.5 differs in the last bit now and then)
    x = torch.rand(20_000, **D64) * 100
    assert torch.equal(compile_sympy(P ** sympy.Rational(-1, 2))(x, x), 1 / torch.sqrt(x.abs().clamp(min=1e-12)))
    assert compile_sympy(1 / sqrt(P))(PV, YV)[0] == pytest.approx(1e6)


def test_constant_subtrees_are_folded_with_the_protected_operators():
    # log(1e-20) is log(1e-12) and exp(100) is exp(30), as in training, not -inf and an overflow
    got = compile_sympy(P * log(sympy.Rational(1, 10**20)))
    assert got(torch.ones(1, **D64), torch.ones(1, **D64)).item() == pytest.approx(torch.log(torch.tensor(1e-12)).item())
    e = parse("p*exp(100) + exp(2)")
    out = e.compile()(torch.ones(1, **D64), torch.zeros(1, **D64)).item()
    assert out == pytest.approx(torch.exp(torch.tensor(30.0, **D64)).item() + torch.exp(torch.tensor(2.0, **D64)).item())


def test_an_unfolded_program_computes_its_constants_in_the_input_precision():
    e = log(sympy.Integer(3)) * P + sympy.pi
    folded, unfolded = compile_sympy(e), compile_sympy(e, _fold=False)
    p = torch.tensor([1.0, 2.0], **D64)
    want = torch.log(torch.tensor(3.0, **D64)) * p + torch.pi
    torch.testing.assert_close(unfolded(p, p), want, rtol=1e-15, atol=0)
    torch.testing.assert_close(folded(p, p), want, rtol=1e-15, atol=0)
    p32 = p.float()
    assert unfolded(p32, p32).dtype == torch.float32 and folded(p32, p32).dtype == torch.float32
    again = pickle.loads(pickle.dumps(unfolded))
    torch.testing.assert_close(again(p, p), want, rtol=1e-15, atol=0)


def test_a_program_returns_the_broadcast_shape_and_a_graph_to_p():
    p = torch.zeros(3, 1, requires_grad=True)
    y = torch.zeros(4)
    for text in ("2", "y", "p*y", "p"):
        out = parse(text).compile()(p, y)
        assert out.shape == (3, 4), text
        (g,) = torch.autograd.grad(out.sum(), p)
        assert g.shape == (3, 1)
    assert parse("y").compile().uses_p is False and parse("y").compile().uses_y is True
    assert parse("p*2").compile().uses_y is False and parse("p*y").compile().uses_p is True


def test_a_pickled_program_computes_the_same_and_reads_like_the_original():
    prog = parse("-y*log(p) + max(p, y, 0.25)").compile()
    again = pickle.loads(pickle.dumps(prog))
    p, y = torch.rand(7, **D64), torch.rand(7, **D64)
    assert torch.equal(again(p, y), prog(p, y))
    assert repr(again) == repr(prog) == f"Program({prog.source!r}, {len(prog.instructions)} instructions)"
    assert repr(parse("p + y + 1").compile()) == "Program('p + y + 1', 1 instructions)"


def test_compile_errors_name_the_symbol_or_node():
    c0, c1 = ALL_SYMBOLS["c0"], ALL_SYMBOLS["c1"]
    with pytest.raises(CompileError, match=r"^expression c0\*c1\*p has unbound constants c0, c1; bind them first, "
                                           r"e\.g\. expr\.bind\(c0=1\.0\)$"):
        compile_sympy(P * c1 * c0)
    with pytest.raises(CompileError, match=r"^unknown symbol 'q'$"):
        compile_sympy(P * sympy.Symbol("q", real=True))
    with pytest.raises(CompileError, match=r"^'sin' in sin\(y\) has no torch form in the primitive table$"):
        compile_sympy(P * sympy.sin(Y))
    from lossforge.primitives.compile import _Lowering

    with pytest.raises(CompileError, match=r"^unbound constant 'c1'$"):
        _Lowering().lower(P * c1)
    with pytest.raises(CompileError, match=r"^exponent c0 \+ c1 is not a number \(unbound c0, c1\)$"):
        _Lowering().lower_pow(P, c1 + c0)


def test_a_program_keeps_the_source_it_was_given_and_otherwise_prints_the_expression():
    assert compile_sympy(P + Y, source="my loss").source == "my loss"
    assert compile_sympy(P + Y).source == "p + y"
    assert compile_sympy(P + Y, source="").source == ""


def test_many_constants_and_repeated_constant_subtrees_compile_to_their_values():
    p = torch.linspace(0.5, 2.0, 4, **D64)
    many = sympy.Add(*[log(P + i) for i in range(1, 100)])  # 99 distinct constants
    want = sum(torch.log(p + i) for i in range(1, 100))
    torch.testing.assert_close(compile_sympy(many)(p, p), want, rtol=1e-13, atol=0)
    twice = log(sympy.Integer(2)) * P + log(sympy.Integer(2)) * Y  # log(2) folded once, used twice
    torch.testing.assert_close(compile_sympy(twice)(p, 2 * p), 3 * p * torch.log(torch.tensor(2.0, **D64)),
                               rtol=1e-15, atol=0)
