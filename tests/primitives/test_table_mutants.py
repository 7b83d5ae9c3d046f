"""Registering a row: the export form it derives, what its probe reports, and what a
redefinition keeps (found by mutation testing, ``experiments/mutation.py table``)."""
from __future__ import annotations

import dataclasses
import functools

import pytest
import sympy
import torch
import torch.nn.functional as F

from lossforge.losses.export_torch import elementwise_source
from lossforge.primitives import Primitive, PrimitiveError, get_primitive, parse, primitives, register, unregister
from lossforge.primitives.table import row_for_head


@pytest.fixture
def registered():
    """Register rows for one test and remove them afterwards."""
    names: list[str] = []

    def add(row: Primitive, **kw) -> Primitive:
        out = register(row, **kw)
        names.append(row.name)
        return out

    yield add
    for name in names:
        if name in primitives():
            unregister(name)


def soft_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.tanh(a - b)


@pytest.mark.parametrize("fn, sym, export", [
    (torch.asinh, sympy.asinh, "torch.asinh({0})"),
    (F.softsign, lambda a: a / (1 + sympy.Abs(a)), "F.softsign({0})"),
    (torch.special.ndtr, lambda a: (1 + sympy.erf(a / sympy.sqrt(2))) / 2, "torch.special.ndtr({0})"),
])
def test_a_torch_function_row_is_exported_as_a_call_by_name_with_no_source(registered, fn, sym, export):
    row = registered(Primitive(name="userfn", arity=1, sympy=sym, torch=fn, complexity=2))
    assert (row.export, row.export_source) == (export, "")


def test_a_two_argument_def_row_is_exported_with_both_operands_and_its_source(registered):
    row = registered(Primitive(name="soft_gap", arity=2, sympy=lambda a, b: sympy.tanh(a - b), torch=soft_gap,
                               complexity=2, head=None))
    assert row.export == "soft_gap({0}, {1})"
    assert row.export_source.startswith("def soft_gap(a: torch.Tensor, b: torch.Tensor)")


def test_a_row_whose_torch_form_has_no_name_registers_without_an_export_form(registered):
    row = registered(Primitive(name="sq2", arity=1, sympy=lambda a: a**2,
                               torch=functools.partial(torch.pow, exponent=2), complexity=1))
    assert row.export is None and row.export_source == ""


def test_a_user_row_with_a_head_is_found_by_head_and_forgotten_when_removed():
    class userhead(sympy.Function):
        pass

    row = register(Primitive(name="userhead", arity=1, sympy=userhead, torch=torch.tanh, complexity=2,
                             head=userhead, domain=lambda a: False))
    try:
        assert row_for_head(userhead) is row and get_primitive("userhead") is row
        assert str(parse("userhead(p)").sympy) == "userhead(p)"
    finally:
        unregister("userhead")
    assert row_for_head(userhead) is None and "userhead" not in primitives()
    with pytest.raises(PrimitiveError, match="unknown primitive 'userhead'"):
        get_primitive("userhead")


def test_removing_a_row_that_shares_a_head_keeps_the_row_registered_for_that_head(registered):
    # a second row with the built-in sqrt head replaces it in the head map; removing it must not
    # take sqrt's row out of the map while sqrt is still in the table
    sqrt_row = get_primitive("sqrt")
    assert row_for_head(sqrt_row.head) is sqrt_row
    register(dataclasses.replace(sqrt_row, name="sqrt2"))
    try:
        register(sqrt_row, replace=True)
        assert row_for_head(sqrt_row.head).name == "sqrt"
    finally:
        unregister("sqrt2")
    assert row_for_head(sqrt_row.head).name == "sqrt"


def test_an_unknown_primitive_name_suggests_the_closest_and_lists_the_known():
    with pytest.raises(PrimitiveError, match=r"unknown primitive 'sqr'.*did you mean 'sqrt'.*known: add, sub, mul"):
        get_primitive("sqr")


def test_primitives_is_a_copy_the_caller_cannot_corrupt():
    table = primitives()
    table.pop("log")
    assert "log" in primitives()


def test_probe_errors_name_the_row_the_failing_part_and_the_input(registered):
    def raises(a):
        raise ValueError("boom")

    with pytest.raises(PrimitiveError, match=r"^primitive 'bad' raised on the probe inputs: boom$"):
        register(Primitive(name="bad", arity=1, sympy=lambda a: a, torch=raises, complexity=1))
    with pytest.raises(PrimitiveError, match=r"^primitive 'bad' gives a non-finite output at \(0\.0,\) in float32; "
                                             r"protect it \(clamp the input or the result\) before registering$"):
        register(Primitive(name="bad", arity=1, sympy=sympy.log, torch=torch.log, complexity=1))
    with pytest.raises(PrimitiveError, match=r"^primitive 'bad' gives a non-finite gradient 0 at \(0\.0,\)"):
        register(Primitive(name="bad", arity=1, sympy=sympy.sqrt, torch=lambda a: torch.sqrt(a.abs()),
                           complexity=1, domain=lambda a: False))
    # the second argument's gradient (d/db sqrt(|b|) at b = 0), checked after the first argument,
    # which the row does not use (no gradient at all)
    with pytest.raises(PrimitiveError, match=r"^primitive 'bad' gives a non-finite gradient 1 at \(0\.0, 0\.0\)"):
        register(Primitive(name="bad", arity=2, sympy=lambda a, b: b, torch=lambda a, b: torch.sqrt(b.abs()),
                           complexity=1, domain=lambda a, b: False))
    with pytest.raises(PrimitiveError, match=r"^primitive 'bad' has arity 3; only 1 and 2 are supported$"):
        register(Primitive(name="bad", arity=3, sympy=lambda a, b, c: a, torch=lambda a, b, c: a, complexity=1))
    assert "bad" not in primitives()


def test_a_redefined_row_keeps_the_export_form_given_with_its_new_torch_form():
    original = get_primitive("tanh")
    try:
        row = register(dataclasses.replace(original, torch=F.softsign, export="torch.nn.functional.softsign({0})",
                                           domain=lambda a: False), replace=True)
        assert row.export == "torch.nn.functional.softsign({0})" and row.export_source == ""
        assert "torch.nn.functional.softsign(" in elementwise_source(parse("tanh(p)"))[0]
    finally:
        register(original, replace=True)
    assert get_primitive("tanh") is not None and get_primitive("tanh").torch is original.torch


CHECK_POINTS = (0.0, 1e-3, -0.5, 1.0, -2.0, 3.0, 30.0, -30.0)


@pytest.mark.parametrize("point", CHECK_POINTS)
def test_a_row_whose_forms_disagree_at_any_one_cross_check_point_is_refused(point):
    def off_at_point(a):
        return torch.where(a == point, a + 1, a)

    with pytest.raises(PrimitiveError, match=rf"^primitive 'off': torch gives {point + 1!r} but sympy gives "
                                             rf"{point!r} at \({point!r},\); the two forms of the row disagree$"):
        register(Primitive(name="off", arity=1, sympy=lambda a: a, torch=off_at_point, complexity=1))
    assert "off" not in primitives()


def test_the_cross_check_of_a_two_argument_row_covers_pairs_of_points():
    def off_on_the_diagonal(a, b):
        return torch.where((a == -2.0) & (b == 30.0), a + b + 1, a + b)

    with pytest.raises(PrimitiveError, match=r"at \(-2\.0, 30\.0\); the two forms"):
        register(Primitive(name="off", arity=2, sympy=lambda a, b: a + b, torch=off_on_the_diagonal, complexity=1))


def test_the_cross_check_skips_points_where_the_plain_form_is_complex_and_checks_the_rest(registered):
    # sqrt is complex for a < 0: those points are skipped, the positive ones after them are checked
    def root(a):
        return torch.sqrt(a.abs() + 1e-30)

    registered(Primitive(name="root", arity=1, sympy=sympy.sqrt, torch=root, complexity=2,
                         domain=lambda a: a != 0))

    def root_wrong_above_one(a):
        return torch.where(a > 1.5, a, torch.sqrt(a.abs() + 1e-30))

    with pytest.raises(PrimitiveError, match=r"at \(3\.0,\); the two forms of the row disagree"):
        register(Primitive(name="root2", arity=1, sympy=sympy.sqrt, torch=root_wrong_above_one, complexity=2,
                           domain=lambda a: a != 0))


def test_the_cross_check_is_in_float64_with_a_relative_and_an_absolute_tolerance(registered):
    # float32 would lose the 1e-3 in (a + 1e4) - 1e4 (2 % off); float64 keeps it
    registered(Primitive(name="shifted", arity=1, sympy=lambda a: a, torch=lambda a: (a + 1e4) - 1e4, complexity=1))
    # rounding-level relative differences (1e-8) are agreement, at 30 too (3e-7 absolute)
    registered(Primitive(name="scaled", arity=1, sympy=lambda a: a, torch=lambda a: a * (1 + 1e-8), complexity=1))
    # sin(pi * 1.0) is 1.2e-16 in floating point and exactly 0 in sympy: agreement
    registered(Primitive(name="sinpi", arity=1, sympy=lambda a: sympy.sin(sympy.pi * a),
                         torch=lambda a: torch.sin(a * torch.pi), complexity=2))


def test_a_two_argument_row_built_from_sympy_max_registers_with_its_torch_call(registered):
    row = registered(Primitive(name="max2", arity=2, sympy=sympy.Max, torch=torch.maximum, complexity=2))
    assert row.export == "torch.maximum({0}, {1})"


def test_a_redefined_row_without_an_export_form_carries_nothing_of_the_old_one():
    original = get_primitive("log")
    assert original.export_source and original.export_note
    try:
        row = register(dataclasses.replace(original, torch=lambda a: torch.log(a.abs() + 1e-6),
                                           domain=lambda a: False), replace=True)
        assert (row.export, row.export_source, row.export_note, row.derivative) == (None, "", "", None)
    finally:
        register(original, replace=True)
    assert get_primitive("log") == original
