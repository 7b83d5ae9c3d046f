"""The population program computes exactly what the Programs compute, and their gradients."""
import random

import pytest
import torch

from lossforge.primitives import Primitive, parse, register, unregister
from lossforge.primitives.generate import random_expression
from lossforge.tasks.program import PopulationProgram, population_loss

SPECIAL = ["-y*log(p)", "(p-y)**2", "p", "y", "1 + 0*p", "abs(p-y)", "max(p, y)*min(p, 0.3)", "p**-2", "sqrt(p)",
           "p**1.5 + p**-1.5", "softplus(40*p)", "exp(40*p)", "max(p, 0)", "tanh(p)/sigmoid(y)", "-y*log(p)*(1-p)**2"]


def _expressions(n, seed):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        e = random_expression(rng, max_depth=rng.randint(2, 6), leaf_prob=0.15)
        try:
            e.compile()
        except Exception:
            continue
        out.append(e)
    return out + [parse(s) for s in SPECIAL]


def _inputs(k, space, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    if space == "probability":
        p = torch.softmax(3 * torch.randn(k, 5, 16, generator=g, dtype=dtype), dim=1)
        p[0, 0, 0] = 0.0  # exact zeros and ties exercise the protected branches
        y = torch.nn.functional.one_hot(torch.randint(0, 5, (16,), generator=g), 5).t().to(dtype)
    else:
        p = 3 * torch.randn(k, 5, 16, generator=g, dtype=dtype)
        p[0, 0, 0] = 0.0
        y = 2 * torch.randn(5, 16, generator=g, dtype=dtype)
    return p, y


@pytest.mark.parametrize("space", ["probability", "real"])
def test_values_bitwise_and_gradients_match_autograd(space):
    exprs = _expressions(120, seed=3)
    programs = [e.compile() for e in exprs]
    p, y = _inputs(len(programs), space, torch.float64)
    pop = PopulationProgram(programs)
    assert pop.n_groups < pop.n_nodes  # grouping merges work across candidates
    values, derivs = pop.evaluate(p, y)
    for k, (e, prog) in enumerate(zip(exprs, programs)):
        q = p[k].clone().requires_grad_()
        out = prog(q, y)
        (g,) = torch.autograd.grad(out.sum(), q, allow_unused=True)
        g = torch.zeros_like(q) if g is None else g
        # Program computes ``c / x`` as reciprocal(x) * c (one rounding apart), which exp() may amplify.
        torch.testing.assert_close(values[k], out.detach(), rtol=1e-12, atol=0, equal_nan=True, msg=str(e))
        torch.testing.assert_close(derivs[k], g, rtol=1e-9, atol=1e-12, equal_nan=True, msg=str(e))


def test_float32_values_match_to_rounding():
    exprs = _expressions(60, seed=4)
    programs = [e.compile() for e in exprs]
    p, y = _inputs(len(programs), "probability", torch.float32)
    values, _ = PopulationProgram(programs).evaluate(p, y)
    for k, prog in enumerate(programs):
        out = prog(p[k], y)
        torch.testing.assert_close(values[k], out, rtol=1e-4, atol=0, equal_nan=True, msg=str(exprs[k]))


def test_population_loss_backward_is_the_programs_gradient():
    programs = [parse(s).compile() for s in ("-y*log(p)", "(p-y)**2", "exp(-y*p)")]
    p, y = _inputs(3, "probability", torch.float64)
    z = torch.log(p).clone().requires_grad_()
    population_loss(PopulationProgram(programs), torch.softmax(z, 1), y).sum().backward()
    z2 = torch.log(p).clone().requires_grad_()
    pr = torch.softmax(z2, 1)
    sum(prog(pr[k], y).sum() for k, prog in enumerate(programs)).backward()
    torch.testing.assert_close(z.grad, z2.grad, rtol=1e-10, atol=1e-12)


def test_user_primitive_without_a_rule_falls_back_to_autograd():
    import sympy

    class cosh_(sympy.Function):  # noqa: N801
        nargs = 1

    row = Primitive("coshx", 1, cosh_, torch.cosh, 2, head=cosh_, domain=lambda a: False)
    register(row, probe_row=False)
    try:
        from lossforge.primitives.compile import compile_sympy
        from lossforge.primitives.symbols import P, Y

        prog = compile_sympy(cosh_(P - Y) * 2)
        p, y = _inputs(2, "real", torch.float64)
        values, derivs = PopulationProgram([prog, prog]).evaluate(p, y)
        torch.testing.assert_close(values, 2 * torch.cosh(p - y))
        torch.testing.assert_close(derivs, 2 * torch.sinh(p - y))
    finally:
        unregister("coshx")
