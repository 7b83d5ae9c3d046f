"""The population program's contract beyond its values: the keep mask of the backward,
input checks, broadcasting, the device, the table layout and the grouping (found by
mutation testing, ``experiments/mutation.py program``)."""
from __future__ import annotations

import pytest
import torch

from lossforge.primitives import Primitive, get_primitive, parse, register, unregister
from lossforge.tasks.program import PopulationProgram, population_loss, with_derivatives

D64 = dict(dtype=torch.float64)


def _programs(*texts):
    return [parse(t).compile() for t in texts]


@pytest.mark.parametrize("shape", [(3, 4), (3, 2, 4)])
def test_rows_not_kept_get_a_zero_gradient_even_where_the_derivative_is_not_finite(shape):
    p = torch.rand(shape, **D64, requires_grad=True)
    values = torch.rand(shape, **D64)
    derivatives = torch.rand(shape, **D64) + 1
    derivatives[1] = float("nan")
    derivatives[2].view(-1)[0] = float("inf")
    keep = torch.ones(shape[0], dtype=torch.bool)
    out = with_derivatives(p, values, derivatives, keep)
    assert torch.equal(out, values)
    keep[1] = False  # filled in after the call, before backward: the trainer does this
    keep[2] = False
    grad_out = torch.rand(shape, **D64)
    (g,) = torch.autograd.grad(out, p, grad_out)
    assert torch.equal(g[0], grad_out[0] * derivatives[0])
    assert torch.equal(g[1], torch.zeros_like(g[1])) and torch.equal(g[2], torch.zeros_like(g[2]))
    assert g.dtype == torch.float64
    # without a mask every row gets grad * derivative
    (g_all,) = torch.autograd.grad(with_derivatives(p, values, derivatives), p, grad_out)
    assert torch.equal(g_all[0], g[0]) and torch.isnan(g_all[1]).all()


def test_population_loss_is_differentiable_through_the_derivatives():
    pop = PopulationProgram(_programs("(p-y)**2", "p*y"))
    p = torch.rand(2, 5, **D64, requires_grad=True)
    y = torch.rand(5, **D64)
    population_loss(pop, p, y).sum().backward()
    torch.testing.assert_close(p.grad, torch.stack([2 * (p[0] - y), y]).detach())


def test_a_population_needs_a_program_and_p_needs_a_row_for_each():
    with pytest.raises(ValueError, match="^PopulationProgram needs at least one program$"):
        PopulationProgram([])
    one = PopulationProgram(_programs("(p-y)**2"))
    values, _ = one.evaluate(torch.ones(1, 3), torch.zeros(3))
    assert values.tolist() == [[1.0, 1.0, 1.0]]
    two = PopulationProgram(_programs("p", "y"))
    with pytest.raises(ValueError, match=r"^p has 3 rows for 2 programs$"):
        two.evaluate(torch.ones(3, 5), torch.zeros(5))


def test_targets_broadcast_to_the_shape_of_a_candidates_predictions():
    pop = PopulationProgram(_programs("p - y", "y"))
    p = torch.rand(2, 3, 4, **D64)
    y = torch.rand(4, **D64)
    values, derivatives = pop.evaluate(p, y)
    torch.testing.assert_close(values[0], p[0] - y)
    torch.testing.assert_close(values[1], y.expand(3, 4))
    assert derivatives.shape == (2, 3, 4) and torch.all(derivatives[1] == 0)


def test_evaluation_stays_on_the_device_of_p():
    # meta tensors have no values: a table or an index left on the CPU fails loudly
    pop = PopulationProgram(_programs("-y*log(p)", "max(p, y)*min(p, 0.3)", "p**1.5 + p**-1.5", "tanh(p)/sigmoid(y)",
                                      "(p - y)**2"))
    p = torch.empty(5, 3, 4, device="meta")
    values, derivatives = pop.evaluate(p, torch.empty(3, 4, device="meta"))
    assert values.device.type == derivatives.device.type == "meta"
    assert values.shape == derivatives.shape == (5, 3, 4)
    values, _ = pop.evaluate(torch.rand(5, 3, 4), torch.rand(3, 4))  # and back on the CPU
    assert values.device.type == "cpu" and torch.isfinite(values).all()


def test_the_tables_hold_a_row_for_each_p_y_constant_and_node():
    pop = PopulationProgram(_programs("2*p + 3", "(p - y)**2", "p*y + 3"))
    n_const = 2  # 2.0 and 3.0, shared
    assert pop.n_rows == 3 + 1 + n_const + pop.n_nodes
    assert pop.table_bytes(10) == 2 * pop.n_rows * 10 * 4
    assert pop.table_bytes(10, element_size=8) == 2 * pop.n_rows * 10 * 8


@pytest.mark.parametrize("texts", [("tanh(p)", "tanh(abs(p))"), ("log(p)", "log(p**2)"),
                                   ("abs(p)", "abs(tanh(p))", "abs(sigmoid(p))")])
def test_a_key_is_run_when_all_its_nodes_are_ready_so_it_is_not_split(texts):
    # e.g. tanh(p0) is ready at once and tanh(abs(p1)) after abs: running tanh first would
    # need a second tanh group; the schedule runs abs first, then both tanh nodes together
    pop = PopulationProgram(_programs(*texts))
    opcodes = {op for prog in pop.programs for op, _, _ in prog.instructions}
    assert pop.n_groups == len(opcodes)


# ----------------------------------------------------------------------------- rows with a payload
@pytest.fixture
def pow_row():
    """pow, restored after a test that redefines it (its exponent is the payload)."""

    old = get_primitive("pow")
    yield old
    register(old, probe_row=False, replace=True)
    assert get_primitive("pow") is not None and get_primitive("pow").derivative is old.derivative


def test_a_payload_row_uses_the_rule_its_row_brings(pow_row):
    import dataclasses

    from lossforge.primitives.derivatives import rule_pow

    made = []

    def pow_rule(e):  # the row's own rule, a function of the exponent
        made.append(e)
        return rule_pow(e)

    register(dataclasses.replace(pow_row, torch=lambda a, e: pow_row.torch(a, e), derivative=pow_rule),
             probe_row=False, replace=True)
    pop = PopulationProgram(_programs("p**1.5", "p**4"))
    assert sorted(made) == [1.5, 4.0]  # not torch autograd
    p = torch.rand(2, 6, **D64) + 0.5
    values, derivatives = pop.evaluate(p, torch.rand(6, **D64))
    torch.testing.assert_close(values, torch.stack([p[0] ** 1.5, p[1] ** 4]))
    torch.testing.assert_close(derivatives, torch.stack([1.5 * p[0] ** 0.5, 4 * p[1] ** 3]))


def test_a_payload_row_without_a_rule_gets_its_tangent_from_autograd(pow_row):
    import dataclasses

    # a new torch form drops the old rule (register): the exponent goes to autograd
    register(dataclasses.replace(pow_row, torch=lambda a, e: a.abs() ** e), probe_row=False, replace=True)

    assert get_primitive("pow").derivative is None
    pop = PopulationProgram(_programs("p**1.5", "p**4"))
    p = torch.rand(2, 6, **D64) + 0.5
    values, derivatives = pop.evaluate(p, torch.rand(6, **D64))
    torch.testing.assert_close(values, torch.stack([p[0] ** 1.5, p[1] ** 4]))
    torch.testing.assert_close(derivatives, torch.stack([1.5 * p[0] ** 0.5, 4 * p[1] ** 3]))


# ----------------------------------------------------------------------------- tangents
def test_no_tangent_is_taken_through_an_argument_that_does_not_depend_on_p():
    # a user row without a rule gets autograd's partial derivatives, and only those of
    # arguments that depend on p: d/dy of p*sqrt(y) is infinite at y = 0, where d/dp is 0
    import sympy

    from lossforge.primitives.compile import compile_sympy
    from lossforge.primitives.symbols import P, Y

    class psqrty(sympy.Function):  # noqa: N801
        nargs = 2

    register(Primitive("psqrty", 2, psqrty, lambda a, b: a * torch.sqrt(b.abs()), 2, head=psqrty,
                       domain=lambda a, b: False), probe_row=False)
    try:
        pop = PopulationProgram([compile_sympy(psqrty(P, Y)), compile_sympy(psqrty(P * P, Y))])
        p = torch.rand(2, 5, **D64) + 0.5
        y = torch.tensor([0.0, 0.25, 1.0, 0.0, 4.0], **D64)
        values, derivatives = pop.evaluate(p, y)
        torch.testing.assert_close(values, torch.stack([p[0], p[1] ** 2]) * y.sqrt())
        torch.testing.assert_close(derivatives, torch.stack([y.sqrt(), 2 * p[1] * y.sqrt()]))
    finally:
        unregister("psqrty")


# ----------------------------------------------------------------------------- layout
def test_a_population_of_one_writes_its_rows_in_place_without_resizing():
    # a one-member group gathers [1, ...] slices; gathering single rows would make the
    # rules' out= results resize (torch warns) instead of filling the table's rows
    import warnings

    for text in ("tanh(p)", "log(p)*y", "p**1.5", "sqrt(p) + exp(y)", "max(p, y)", "p/y"):
        pop = PopulationProgram(_programs(text))
        p = torch.rand(1, 4, **D64) + 0.1
        y = torch.rand(4, **D64)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values, derivatives = pop.evaluate(p, y)
        expected = parse(text).compile()
        torch.testing.assert_close(values[0], expected(p[0], y))


def test_the_schedule_does_not_depend_on_the_order_of_the_programs():
    # keys tied on readiness are taken in a fixed order, not in the order the nodes came
    texts = ["tanh(p - y) + abs(tanh(p))", "exp(sqrt(p*p))", "abs(y)"]
    forward, backward = PopulationProgram(_programs(*texts)), PopulationProgram(_programs(*texts[::-1]))
    assert forward.n_groups == backward.n_groups == 8
    assert [g.opcode for g in forward._groups] == [g.opcode for g in backward._groups]
    texts = ["exp(y)", "p", "abs(sigmoid(y) + tanh(y))"]
    forward, backward = PopulationProgram(_programs(*texts)), PopulationProgram(_programs(*texts[::-1]))
    assert [g.opcode for g in forward._groups] == [g.opcode for g in backward._groups]


def test_indices_are_moved_to_the_device_of_p_once_per_table():
    # index tensors (gathers, the output rows) are built on the CPU; each is moved to p's
    # device on first use and cached (a GPU would otherwise copy one per gather, or fail)
    pop = PopulationProgram(_programs("-y*log(p)", "max(p, y)*min(p, 0.3)", "p**1.5 + p**-1.5", "(p - y)**2",
                                      "tanh(p)/sigmoid(y)", "y*p"))
    assert any(a[0] == "index" for g in pop._groups for a in g.args)
    meta = torch.device("meta")
    pop.evaluate(torch.empty(6, 3, device=meta), torch.empty(3, device=meta))
    cached = dict(pop._device_index)
    assert id(pop._output_rows) in cached
    assert cached and all(t.device == meta for t in cached.values())
    pop.evaluate(torch.empty(6, 3, device=meta), torch.empty(3, device=meta))
    assert pop._device_index.keys() == cached.keys()
    assert all(pop._device_index[key] is t for key, t in cached.items())  # not moved again
