"""The population program's contract beyond its values: the keep mask of the backward,
input checks, broadcasting, the device, the table layout and the grouping (found by
mutation testing, ``experiments/mutation.py program``)."""
from __future__ import annotations

import pytest
import torch

from lossforge.primitives import parse
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
