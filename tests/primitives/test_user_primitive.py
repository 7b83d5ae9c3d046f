"""A primitive is one row: ``asinh`` registered in one call works in parse, compile,
the population program, ``Task.evaluate``, a search, ``compare`` and a standalone
export that runs with torch alone (lossforge not importable)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import sympy
import torch

from lossforge.losses import ExportError, export_expression
from lossforge.primitives import Primitive, parse, register, unregister
from lossforge.tasks import get as get_task
from lossforge.tasks.program import PopulationProgram


def asinh_torch(x: torch.Tensor) -> torch.Tensor:
    return torch.asinh(x)


@pytest.fixture
def asinh():
    row = register(Primitive(name="asinh", arity=1, sympy=sympy.asinh, torch=asinh_torch, complexity=2,
                             head=sympy.asinh))
    yield row
    unregister("asinh")


def test_the_row_carries_everything_export_needs(asinh):
    assert asinh.export == "asinh_torch({0})"
    assert asinh.export_source.startswith("def asinh_torch(")
    assert asinh.derivative is None  # the population program derives it with autograd


def test_parse_compile_and_population_program(asinh):
    e = parse("asinh(p - y)**2 + asinh(p)")
    assert "asinh" in str(e) and parse(str(e)).canonical == e.canonical
    p = torch.linspace(-3, 3, 13, dtype=torch.float64, requires_grad=True)
    y = torch.linspace(1, -1, 13, dtype=torch.float64)
    value = e.compile()(p, y)
    value.sum().backward()
    want = torch.asinh(p.detach() - y) ** 2 + torch.asinh(p.detach())
    torch.testing.assert_close(value.detach(), want)
    program = PopulationProgram([e.compile(), parse("(p - y)**2").compile()])
    values, derivatives = program.evaluate(torch.stack([p.detach(), p.detach()]), y)
    torch.testing.assert_close(values[0], want)
    torch.testing.assert_close(derivatives[0], p.grad)


def test_task_evaluate_and_a_two_generation_search(asinh, tmp_path):
    from lossforge.search import SearchConfig, run

    (result,) = get_task("sine").evaluate([parse("asinh(p - y)**2")], seed=0, steps=20)
    assert result.status == "ok", result.error
    config = SearchConfig(tasks=["sine"], generations=2, population=6, steps=20, evaluator="local", save_best=0,
                          chunk_size=6, confirm_top=0, primitives=["asinh", "add", "sub", "mul", "neg", "square"],
                          seed_losses=["asinh(p - y)**2"])
    out = run(config, tmp_path / "run", quiet=True)
    texts = [str(entry.expr) for entry in out.hall_of_fame]
    assert any("asinh" in t for t in texts), texts


def test_compare(asinh, tmp_path):
    try:
        from lossforge.search.compare import compare
    except ImportError:  # before compare moved to the search layer
        from lossforge.losses.compare import compare
    comparison = compare(["sine"], ["asinh(p - y)**2", "mse"], seeds=2, steps=20)
    label = comparison.losses[0]
    cell = comparison.cell("sine", label)
    assert "asinh" in label and cell.applicable and len(cell.values) == 2 and cell.n_error == 0, cell


_RUN_WITHOUT_LOSSFORGE = textwrap.dedent('''
    import importlib.util, json, sys
    sys.modules["lossforge"] = None          # lossforge cannot be imported in this process
    try:
        import lossforge  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("lossforge is importable")
    import torch
    spec = importlib.util.spec_from_file_location("exported", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    p = torch.linspace(-3, 3, 13, dtype=torch.float64)
    y = torch.linspace(1, -1, 13, dtype=torch.float64)
    print(json.dumps({"elementwise": module.elementwise(p, y).tolist(),
                      "module": module.CustomLoss(reduction="none")(p, y).tolist(),
                      "lossforge_modules": sorted(m for m, v in sys.modules.items()
                                                   if m.startswith("lossforge") and v is not None)}))
''')


def test_export_expression_runs_with_torch_alone(asinh, tmp_path):
    e = parse("asinh(p - y)**2 + 0.5*asinh(p)")
    code = export_expression(e, kind="regression", format="py")
    assert "def asinh_torch(" in code and "import lossforge" not in code and "from lossforge" not in code
    path = tmp_path / "exported_asinh.py"
    path.write_text(code)
    script = tmp_path / "run_exported.py"
    script.write_text(_RUN_WITHOUT_LOSSFORGE)
    done = subprocess.run([sys.executable, "-I", str(script), str(path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["lossforge_modules"] == []
    p = torch.linspace(-3, 3, 13, dtype=torch.float64)
    y = torch.linspace(1, -1, 13, dtype=torch.float64)
    want = e.compile()(p, y)
    assert torch.equal(torch.tensor(got["elementwise"], dtype=torch.float64), want)
    assert torch.equal(torch.tensor(got["module"], dtype=torch.float64), want)
    for fmt in ("json", "latex", "sympy"):
        assert "asinh" in export_expression(e, kind="regression", format=fmt)


def test_a_lambda_torch_form_needs_an_export_form(tmp_path):
    register(Primitive(name="twice", arity=1, sympy=lambda a: 2 * a,
                       torch=lambda a: 2 * a, complexity=1, head=None))
    try:
        with pytest.raises(ExportError, match="twice"):
            # a row without a head never appears in a compiled expression: export it through the generator
            from lossforge.losses.export_torch import _Generator, _Tensor

            _Generator().op("twice", [_Tensor("p", True)], None)
    finally:
        unregister("twice")
    with pytest.raises(ExportError, match="kind 'multiclas' is not one of"):
        export_expression("p", kind="multiclas")


def test_a_built_in_redefined_with_a_new_torch_form_drops_the_old_rule_and_export(tmp_path):
    import dataclasses

    from lossforge.primitives import get_primitive

    original = get_primitive("tanh")

    def softsign(x: torch.Tensor) -> torch.Tensor:
        return x / (1 + x.abs())

    try:
        row = register(dataclasses.replace(original, torch=softsign, domain=lambda a: False), replace=True)
        assert row.derivative is None and row.export == "softsign({0})"
        e = parse("tanh(p - y)")
        p = torch.linspace(-3, 3, 13, dtype=torch.float64, requires_grad=True)
        y = torch.zeros(13, dtype=torch.float64)
        softsign(p - y).sum().backward()
        values, derivatives = PopulationProgram([e.compile()]).evaluate(p.detach()[None], y)
        torch.testing.assert_close(values[0], softsign(p.detach()))
        torch.testing.assert_close(derivatives[0], p.grad)
        assert "def softsign(" in export_expression(e, kind="regression")
    finally:
        register(original, replace=True)
    assert get_primitive("tanh").derivative is original.derivative


def test_a_user_row_with_a_derivative_rule_is_used_by_the_population_program():
    calls = []

    def rule_asinh(a, ta, ov, ot, z):  # the convention of lossforge.primitives.derivatives
        calls.append(a.shape)
        torch.asinh(a, out=ov)
        torch.mul(ta, torch.rsqrt(1 + a * a), out=ot)

    register(Primitive(name="asinh", arity=1, sympy=sympy.asinh, torch=torch.asinh, complexity=2, head=sympy.asinh,
                       derivative=rule_asinh))
    try:
        e = parse("asinh(p*y)")
        p = torch.linspace(-3, 3, 13, dtype=torch.float64, requires_grad=True)
        y = torch.full((13,), 0.5, dtype=torch.float64)
        torch.asinh(p * y).sum().backward()
        values, derivatives = PopulationProgram([e.compile()]).evaluate(p.detach()[None], y)
        assert calls
        torch.testing.assert_close(values[0], torch.asinh(p.detach() * y))
        torch.testing.assert_close(derivatives[0], p.grad)
    finally:
        unregister("asinh")
