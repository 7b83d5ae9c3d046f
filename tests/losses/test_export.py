"""Export: the standalone torch module equals lossforge's compiled loss (values and gradients),
scripts and compiles; json, latex and sympy exports; the CLI."""
from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import random

import numpy as np
import pytest
import sympy
import torch

from lossforge.losses import ExportError, ExpressionLoss, export, get, names, save
from lossforge.losses.export import module_kind
from lossforge.losses.export_torch import elementwise_source, helper_source, module_source
from lossforge.primitives import CompileError, parse
from lossforge.primitives.generate import random_expression

# torch 2.13 deprecates TorchScript; exported modules still support it for users who deploy with it
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

_counter = itertools.count()


def load_module(code: str, directory):
    """Import generated code as a fresh module (the user's own generated file)."""
    name = f"lossforge_export_{next(_counter)}"
    path = directory / f"{name}.py"
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loss_class(module):
    return next(v for k, v in vars(module).items() if k.endswith("Loss") and isinstance(v, type)
                and issubclass(v, torch.nn.Module))


def probe_inputs(space: str, dtype):
    """Inputs that reach every protection: zeros, tiny, negative and huge values."""
    g = torch.Generator().manual_seed(0)
    if space == "probability":
        p = torch.cat([torch.rand(120, generator=g, dtype=dtype), torch.tensor([0.0, 1e-9, 1.0, 0.5], dtype=dtype)])
        y = (torch.rand(124, generator=g) < 0.5).to(dtype)
    else:
        p = torch.cat([torch.randn(120, generator=g, dtype=dtype) * 5, torch.tensor([0.0, 1e-9, -1e-9, 40.0], dtype=dtype)])
        y = torch.cat([torch.randn(120, generator=g, dtype=dtype) * 5, torch.tensor([0.0, 0.0, 1e-7, -40.0], dtype=dtype)])
    return p, y


def value_and_grads(fn, p, y):
    p = p.clone().requires_grad_()
    y = y.clone().requires_grad_()
    v = fn(p, y)
    v.sum().backward()
    return v.detach(), p.grad, y.grad


def assert_same(a, b):
    for x, z in zip(a, b):
        assert (x is None) == (z is None)
        if x is not None:
            torch.testing.assert_close(x, z, rtol=1e-6, atol=1e-9, equal_nan=True)


def catalogue_expressions():
    return [get(n).expr for n in names(kind="reference") if get(n).expr is not None]


def random_expressions(n: int, seed: int = 1):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        e = random_expression(rng, max_depth=5)
        try:
            e.compile()
        except CompileError:
            continue
        out.append(e)
    return out


# ----------------------------------------------------------------------------- exactness
def test_elementwise_equals_the_compiled_expression(tmp_path):
    exprs = catalogue_expressions() + random_expressions(120)
    # one generated module holding every expression's elementwise form keeps the test fast
    sources = [elementwise_source(e, f"elementwise_{i}") for i, e in enumerate(exprs)]
    helpers = sorted({h for _, used in sources for h in used})
    code = "import torch\nimport torch.nn.functional as F\n\n" + helper_source(helpers)
    for source, _ in sources:
        code += "\n\n" + source
    module = load_module(code, tmp_path)
    for i, e in enumerate(exprs):
        exported = getattr(module, f"elementwise_{i}")
        for space, dtype in itertools.product(("probability", "real"), (torch.float32, torch.float64)):
            p, y = probe_inputs(space, dtype)
            assert_same(value_and_grads(e.compile(), p, y), value_and_grads(exported, p, y))


@pytest.mark.parametrize("name", ["focal", "bce_with_logits", "huber", "tukey_biweight", "mape", "exponential", "gce",
                                  "quantile", "poly1"])
def test_the_module_equals_lossforges_expression_loss(name, tmp_path):
    loss = get(name)
    kind = module_kind(loss)
    module = load_module(export(name, "py"), tmp_path)
    cls = loss_class(module)
    g = torch.Generator().manual_seed(3)
    if kind == "multiclass":
        shapes = [((8, 5), (8,)), ((4, 3, 6), (4, 6))]  # [N, C] and [N, C, d]
        make = lambda xs, ts: (torch.randn(*xs, generator=g, dtype=torch.float64),  # noqa: E731
                               torch.randint(0, xs[1], ts, generator=g))
    elif kind == "binary":
        shapes = [((8,), (8,)), ((2, 1, 3, 3), (2, 1, 3, 3))]
        make = lambda xs, ts: (torch.randn(*xs, generator=g, dtype=torch.float64),  # noqa: E731
                               (torch.rand(*ts, generator=g) < 0.5).double())
    else:
        shapes = [((8,), (8,)), ((3, 4), (3, 4))]
        make = lambda xs, ts: (torch.randn(*xs, generator=g, dtype=torch.float64) * 3,  # noqa: E731
                               torch.randn(*ts, generator=g, dtype=torch.float64))
    for (xs, ts), reduction in itertools.product(shapes, ("none", "mean", "sum")):
        x, t = make(xs, ts)
        results = []
        for m in (ExpressionLoss(loss.expr, kind, reduction=reduction), cls(reduction=reduction)):
            xx = x.clone().requires_grad_()
            v = m(xx, t)
            v.sum().backward()
            results.append((v.detach(), xx.grad))
        assert_same(*results)


def test_a_discovered_loss_exports_with_its_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSFORGE_STORE", str(tmp_path / "store"))
    name = save("-y*(1 - p)**3*log(p) + p*(1 - y)", task_kind="multiclass",
                provenance={"run_id": "run-7", "config_digest": "abc123", "generation": 4, "eval_seeds": [1, 2]},
                scores={"digits": {"metric": "accuracy", "mean": 0.97, "seeds": [1, 2]}})
    code = export(name, "py")
    assert "run-7" in code and "abc123" in code and "0.97" in code
    assert f"L(p, y) = {parse('-y*(1 - p)**3*log(p) + p*(1 - y)')}" in code  # the formula in the docstring
    module = load_module(code, tmp_path)
    logits, labels = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 4, (6,))
    fn = getattr(module, f"{name}_loss")
    want = get(name).module(reduction="none")(logits, labels)
    assert torch.allclose(fn(logits, labels, reduction="none"), want)
    assert torch.allclose(loss_class(module)()(logits, labels), want.mean())


def test_hostile_provenance_cannot_inject_code(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSFORGE_STORE", str(tmp_path / "store"))
    marker = tmp_path / "PWNED"
    evil = f'x"""\nimport os\nos.system("touch {marker}")\n#'
    name = save("(p - y)**2", task_kind="regression", provenance={"run_id": evil, evil: evil})
    code = export(name, "py")
    load_module(code, tmp_path)
    assert not marker.exists()
    tree = ast.parse(code)
    calls = [n for n in tree.body if isinstance(n, ast.Expr) and not isinstance(n.value, ast.Constant)]
    assert calls == []  # nothing runs at import but imports and definitions


def test_the_py_export_imports_only_torch_and_names_no_device(tmp_path):
    for name in ("focal", "huber", "bce_with_logits"):
        code = export(name, "py")
        imported = set()
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module.split(".")[0])
        assert imported == {"torch"}
        assert "cuda" not in code and '"cpu"' not in code


def test_the_module_checks_its_inputs(tmp_path):
    m = load_module(export("focal", "py"), tmp_path)
    cls = loss_class(m)
    with pytest.raises(ValueError, match="reduction"):
        cls(reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        m.focal_loss(torch.randn(3, 4), torch.tensor([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="integer class indices"):
        cls()(torch.randn(3, 4), torch.rand(3))
    with pytest.raises(ValueError, match="target shape"):
        cls()(torch.randn(3, 4), torch.tensor([0, 1]))
    r = load_module(export("huber", "py"), tmp_path)
    with pytest.raises(ValueError, match="differ"):  # no silent broadcasting of [N] against [N, 1]
        loss_class(r)()(torch.randn(4, 1), torch.randn(4))


# ----------------------------------------------------------------------------- TorchScript and torch.compile
@pytest.mark.parametrize("name", ["focal", "bce_with_logits", "huber", "mape", "quantile", "tweedie"])
def test_torchscript(name, tmp_path):
    m = load_module(export(name, "py"), tmp_path)
    eager = loss_class(m)(reduction="mean")
    scripted = torch.jit.script(eager)
    kind = module_kind(get(name))
    if kind == "multiclass":
        x, t = torch.randn(6, 5), torch.randint(0, 5, (6,))
    elif kind == "binary":
        x, t = torch.randn(6), (torch.rand(6) < 0.5).float()
    else:
        x, t = torch.rand(6) + 0.5, torch.rand(6) + 0.1
    results = []
    for fn in (eager, scripted):
        xx = x.clone().requires_grad_()
        v = fn(xx, t)
        v.backward()
        results.append((v.detach(), xx.grad))
    assert_same(*results)
    with pytest.raises(Exception, match="shape"):  # the checks survive scripting
        scripted(x, t[:2])
    scripted_elementwise = torch.jit.script(m.elementwise)
    p, y = probe_inputs("real", torch.float32)
    assert_same(value_and_grads(m.elementwise, p, y), value_and_grads(scripted_elementwise, p, y))


def test_torchscript_random_expressions(tmp_path):
    for i, e in enumerate(random_expressions(12, seed=5)):
        m = load_module(module_source(f"r{i}", e, "regression", title="t", comments=[], version="test"), tmp_path)
        scripted = torch.jit.script(m.elementwise)
        p, y = probe_inputs("real", torch.float64)
        assert_same(value_and_grads(e.compile(), p, y), value_and_grads(scripted, p, y))


def test_torch_compile_traces_the_whole_module(tmp_path):
    # backend="eager": dynamo traces the module in one graph (fullgraph) without the C++ build of inductor
    m = load_module(export("focal", "py"), tmp_path)
    module = loss_class(m)()
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    x, t = torch.randn(6, 5, requires_grad=True), torch.randint(0, 5, (6,))
    assert torch.allclose(compiled(x, t), module(x, t))


@pytest.mark.slow
def test_torch_compile_inductor(tmp_path):
    m = load_module(export("focal", "py"), tmp_path)
    module = loss_class(m)()
    compiled = torch.compile(module)
    x, t = torch.randn(6, 5, requires_grad=True), torch.randint(0, 5, (6,))
    torch.testing.assert_close(compiled(x, t), module(x, t))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_module_runs_on_cuda(tmp_path):
    m = load_module(export("focal", "py"), tmp_path)
    module = loss_class(m)(reduction="none")
    x, t = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 5, (6,))
    torch.testing.assert_close(module(x.cuda(), t.cuda()).cpu(), module(x, t))


# ----------------------------------------------------------------------------- json, latex, sympy
def test_json_export(tmp_path, monkeypatch):
    doc = json.loads(export("focal", "json"))
    e = get("focal").expr
    assert doc["name"] == "focal" and doc["kind"] == "reference"
    assert parse(doc["expression"]) == e and doc["canonical"] == e.canonical and doc["latex"] == e.latex()
    assert doc["params"] == {"gamma": 2.0, "alpha": -1.0} and doc["task_kind"] == "multiclass"
    monkeypatch.setenv("LOSSFORGE_STORE", str(tmp_path))
    name = save("abs(p - y)**3", task_kind="regression", provenance={"run_id": "r9", "generation": 2})
    doc = json.loads(export(name, "json"))
    assert doc["kind"] == "discovered" and doc["provenance"] == {"run_id": "r9", "generation": 2}
    assert doc["input"] == "prediction" and doc["file"].endswith(f"{name}.toml")


def test_parameters_can_be_set():
    doc = json.loads(export("focal", "json", gamma=1.0))
    assert parse(doc["expression"]) == get("focal").expression(gamma=1.0)
    assert doc["params"]["gamma"] == 1.0


def test_latex_export():
    assert export("mse", "latex").strip() == get("mse").expr.latex()


@pytest.mark.parametrize("name", ["focal", "cross_entropy", "gce", "huber", "log_cosh", "charbonnier", "quantile",
                                  "exponential", "poly1", "tweedie"])
def test_sympy_export_is_the_same_function(name):
    loss = get(name)
    namespace: dict = {}
    exec(export(name, "sympy"), namespace)  # noqa: S102 - our own generated snippet, as a user would run it
    plain = namespace["loss"]
    p, y = namespace["p"], namespace["y"]
    fn = sympy.lambdify((p, y), plain, "numpy")
    compiled = loss.expr.compile()
    probability = loss.space == "probability"
    ps = np.linspace(0.05, 0.95, 7) if probability else np.linspace(0.3, 4.0, 7)  # away from the numeric guards
    ys = np.array([0.0, 1.0]) if probability else np.array([0.5, 2.5])
    for pv, yv in itertools.product(ps, ys):
        want = float(compiled(torch.tensor(pv, dtype=torch.float64), torch.tensor(yv, dtype=torch.float64)))
        assert float(fn(pv, yv)) == pytest.approx(want, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- errors
def test_a_reference_without_an_expression_says_where_it_lives():
    with pytest.raises(ExportError, match=r"multi_margin.*module.*MultiMarginLoss"):
        export("multi_margin", "py")


def test_unknown_format_and_name():
    from lossforge.losses import LossNotFound

    with pytest.raises(ExportError, match="did you mean 'json'"):
        export("focal", "jsn")
    with pytest.raises(LossNotFound, match="did you mean 'focal'"):
        export("focall", "py")
    with pytest.raises(ExportError, match="probability-space"):
        export("focal", "py", task_kind="regression")


def test_cli_export(tmp_path, capsys):
    from lossforge.search.cli import main

    assert main(["export", "focal", "--format", "latex"]) == 0
    assert capsys.readouterr().out.strip() == get("focal").expr.latex()
    target = tmp_path / "focal_loss.py"
    assert main(["export", "focal", "-o", str(target)]) == 0
    assert "wrote" in capsys.readouterr().out
    module = load_module(target.read_text(), tmp_path)
    assert hasattr(module, "FocalLoss")
    for argv, needle in ((["export", "focall"], "did you mean 'focal'"), (["export", "focal", "--format", "pyy"], "'py'"),
                         (["export", "multi_margin"], "its module"),
                         (["export", "focal", "-o", str(tmp_path / "missing" / "dir" / "x.py")], "cannot write")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err
