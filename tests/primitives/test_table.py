import math

import pytest
import sympy
import torch
from hypothesis import given
from hypothesis import strategies as st

from lossforge.primitives import Primitive, PrimitiveError, get_primitive, primitives, register
from lossforge.primitives.table import PROBE_VALUES, probe

REQUIRED = {"add", "sub", "mul", "div", "neg", "square", "sqrt", "abs", "log", "exp",
            "tanh", "sigmoid", "softplus", "min", "max", "pow"}

finite = st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False)


def test_table_has_the_required_rows():
    assert REQUIRED <= set(primitives())
    for row in primitives().values():
        assert row.complexity >= 1
        assert row.arity in (1, 2)


@pytest.mark.parametrize("name", sorted(REQUIRED - {"pow"}))
@given(a=finite, b=finite)
def test_sympy_and_torch_forms_agree_where_the_plain_form_applies(name, a, b):
    row = get_primitive(name)
    args = (a, b)[: row.arity]
    if not row.domain(*args):
        return
    syms = sympy.symbols(f"x0:{row.arity}", real=True)
    want = complex(row.sympy(*syms).xreplace({s: sympy.Float(v) for s, v in zip(syms, args)}).evalf())
    if want.imag or not math.isfinite(want.real):
        return
    got = row.torch(*[torch.tensor(v, dtype=torch.float64) for v in args]).item()
    assert got == pytest.approx(want.real, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", sorted(primitives()))
def test_every_row_is_finite_with_finite_gradients_on_the_probe_values(name):
    row = get_primitive(name)
    if name == "pow":
        pairs = [(v, e) for v in PROBE_VALUES for e in (-3.0, -0.5, 0.5, 2.0, 6.0)]
        a = torch.tensor([x for x, _ in pairs], requires_grad=True)
        out = torch.stack([row.torch(a[i], e) for i, (_, e) in enumerate(pairs)])
        args = [a]
    else:
        vals = torch.tensor(PROBE_VALUES)
        grids = torch.meshgrid(*[vals] * row.arity, indexing="ij")
        args = [g.reshape(-1).clone().requires_grad_(True) for g in grids]
        out = row.torch(*args)
    out.sum().backward()
    assert torch.isfinite(out).all()
    for a in args:
        assert torch.isfinite(a.grad).all()


def test_an_unprotected_primitive_is_rejected_at_registration():
    bad = Primitive("rawlog", 1, sympy.log, torch.log, 2)
    with pytest.raises(PrimitiveError, match="rawlog.*non-finite"):
        register(bad)
    assert "rawlog" not in primitives()


def test_a_row_whose_two_forms_disagree_is_rejected():
    wrong = Primitive("wrongsq", 1, lambda a: a**2, lambda a: a**2 + 1, 1)
    with pytest.raises(PrimitiveError, match="disagree"):
        probe(wrong)


def test_registering_twice_needs_replace():
    with pytest.raises(PrimitiveError, match="already registered"):
        register(get_primitive("log"))


def test_a_well_behaved_user_primitive_registers_and_parses():
    from lossforge.primitives import parse

    from lossforge.primitives.table import unregister

    row = Primitive("tanhshrink", 1, lambda a: a - sympy.tanh(a), lambda a: a - torch.tanh(a), 2, gp=False)
    register(row)
    try:
        e = parse("tanhshrink(p - y)")
        assert e.compile()(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(2 - math.tanh(2))
    finally:
        unregister("tanhshrink")
    with pytest.raises(PrimitiveError, match="built-in"):
        unregister("log")
