"""Task.evaluate: the population trainer's guarantees."""
import math

import numpy as np
import pytest
import torch

from lossforge.losses.spaces import per_sample_loss
from lossforge.primitives import parse
from lossforge.tasks import Task, TaskError, get, names
from lossforge.tasks.models import reference_model
from lossforge.tasks.trainer import batch_schedule

CE = "-y*log(p)"
MIX = [CE, "(p-y)**2", "-y*(1-p)**2*log(p)", "abs(p-y)"]
INFINITE = "(1000000*p)**6*exp(30)*exp(30)"  # inf for every p > 0: diverges at the first step


def metrics(results):
    return [r.metric for r in results]


def test_ce_on_digits_reaches_95_percent_in_the_default_budget():
    (res,) = get("digits").evaluate([CE], seed=0)
    assert res.ok and res.steps == 500
    assert res.metric >= 0.95


def test_same_seed_same_results_other_seed_other_results():
    t = get("digits")
    a = t.evaluate(MIX, seed=3, steps=40)
    b = t.evaluate(MIX, seed=3, steps=40)
    c = t.evaluate(MIX, seed=4, steps=40)
    assert metrics(a) == metrics(b)
    assert metrics(a) != metrics(c)
    assert all(r.seed == 3 and r.steps == 40 and r.train_time > 0 for r in a)


def test_common_random_numbers_result_does_not_depend_on_neighbours():
    t = get("wine")
    alone = t.evaluate([CE], seed=1, steps=60)[0].metric
    crowd = t.evaluate(["(p-y)**2", CE, "abs(p-y)", "exp(-y*p)"], seed=1, steps=60)[1].metric
    assert crowd == pytest.approx(alone, abs=1e-9)
    chunked = t.evaluate(["(p-y)**2", CE, "abs(p-y)"], seed=1, steps=60, max_population=1)
    together = t.evaluate(["(p-y)**2", CE, "abs(p-y)"], seed=1, steps=60)
    assert metrics(chunked) == pytest.approx(metrics(together), abs=1e-9)


def test_population_of_one_equals_a_plain_pytorch_loop():
    """Same init, same batches, Adam: the stacked layout trains exactly the ordinary model."""
    t, steps, seed = get("digits"), 60, 7
    got = t.evaluate([CE], seed=seed, steps=steps)[0].metric
    torch.manual_seed(0)
    model = reference_model(t.model_spec, t.input_dim, t.output_dim, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    X, y = torch.tensor(t.X_train), torch.tensor(t.y_train)
    prog = parse(CE).compile()
    for idx in batch_schedule(t.n_train, t.batch_size, steps, seed):
        idx = torch.from_numpy(idx)
        loss = per_sample_loss(prog, model(X[idx]), y[idx], "multiclass").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        want = (model(torch.tensor(t.X_val)).argmax(1) == torch.tensor(t.y_val)).double().mean().item()
    assert got == pytest.approx(want, abs=1.5 / t.n_val)  # at most one validation sample apart


def test_a_diverging_loss_is_isolated():
    t = get("digits")
    clean = t.evaluate(MIX, seed=0, steps=30)
    mixed = t.evaluate([MIX[0], INFINITE, *MIX[1:]], seed=0, steps=30)
    bad = mixed.pop(1)
    assert bad.status == "diverged" and math.isnan(bad.metric) and "step 0" in bad.error
    assert metrics(mixed) == pytest.approx(metrics(clean), abs=1e-9)
    assert all(r.ok for r in mixed)


def test_an_exploding_regression_loss_diverges_alone():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X.sum(1)
    t = Task.from_arrays(X[:150], y[:150], X[150:], y[150:], kind="regression", optimizer="sgd", lr=0.05,
                         steps=200, batch_size=32)
    res = t.evaluate(["(p-y)**2", "-p**6", "abs(p-y)"])
    assert [r.status for r in res] == ["ok", "diverged", "ok"]
    alone = t.evaluate(["(p-y)**2", "abs(p-y)"])
    assert [res[0].metric, res[2].metric] == pytest.approx(metrics(alone), abs=1e-9)


def test_errors_are_isolated_and_explained(fake_losses):
    t = get("digits")
    res = t.evaluate([CE, "c0*p", 42, fake_losses["mse"], fake_losses["broken"], fake_losses["nan_after"]],
                     seed=0, steps=20)
    status = [r.status for r in res]
    assert status == ["ok", "error", "error", "error", "error", "diverged"]
    assert "unbound constant" in res[1].error
    assert "pass an Expr" in res[2].error
    assert "trains regression tasks, not a multiclass task" in res[3].error
    assert "this loss is broken" in res[4].error
    assert "non-finite loss at step 5" in res[5].error
    assert res[0].metric == pytest.approx(t.evaluate([CE], seed=0, steps=20)[0].metric, abs=1e-9)


def test_a_typo_in_expression_text_raises_the_parsers_message_at_once():
    from lossforge.primitives import GrammarError

    with pytest.raises(GrammarError, match=r"'\(' was never closed"):
        get("digits").evaluate([CE, "-y*log(p"], seed=0, steps=5)


def test_catalogue_losses_train_through_the_module_path(fake_losses):
    """A module loss trains like the equivalent expression; adapters cover every kind."""
    digits = get("digits")
    ce_module, ce_expr, nll, ovr = digits.evaluate(
        [fake_losses["cross_entropy"], CE, fake_losses["nll"], fake_losses["bce_with_logits"]], seed=0, steps=60)
    assert all(r.ok for r in (ce_module, ce_expr, nll, ovr))
    assert ce_module.metric == pytest.approx(ce_expr.metric, abs=2 / digits.n_val)
    assert nll.metric == pytest.approx(ce_module.metric, abs=2 / digits.n_val)

    binary = get("breast_cancer")
    res = binary.evaluate([fake_losses["bce_with_logits"], fake_losses["cross_entropy"], fake_losses["hinge"], CE],
                          seed=0, steps=60)
    assert all(r.ok for r in res), res
    # On a binary task, multiclass CE on logits [0, z] is BCE: the same training.
    assert res[0].metric == pytest.approx(res[1].metric, abs=1e-9)
    assert res[3].metric == pytest.approx(res[0].metric, abs=2 / binary.n_val)

    reg = get("diabetes")
    mse_module, mse_expr, poisson = reg.evaluate([fake_losses["mse"], "(p-y)**2", fake_losses["poisson"]], steps=60)
    assert mse_module.ok and mse_module.metric == pytest.approx(mse_expr.metric, rel=1e-3)
    assert poisson.status == "error" and "non-negative count targets" in poisson.error

    seg = get("shapes")
    from tests.tasks.conftest import FakeLoss

    binary_only = FakeLoss("bce_binary_only", torch.nn.BCEWithLogitsLoss, "logits", "binary", ("binary",))
    res = seg.evaluate([fake_losses["bce_with_logits"], CE, fake_losses["cross_entropy"], binary_only], steps=5)
    assert all(r.ok for r in res), res  # a binary loss trains a segmentation map pixel by pixel
    assert res[3].metric == res[0].metric


def test_catalogue_loss_with_matching_expression_uses_the_expression_path(fake_losses):
    from tests.tasks.conftest import FakeLoss

    loss = FakeLoss("ce_expr", fake_losses["broken"]._factory, expr=parse(CE), space="probability")
    (res,) = get("digits").evaluate([loss], steps=10)
    assert res.ok  # the broken module is never called


def test_time_limit_marks_unfinished_losses_as_errors():
    t = get("digits")
    res = t.evaluate([CE, "(p-y)**2"], steps=100_000, time_limit=0.5)
    assert all(r.status == "error" and "time limit of 0.5 s reached after" in r.error for r in res)
    assert all(0 < r.steps < 100_000 for r in res)


def test_evaluate_argument_errors():
    t = get("wine")
    with pytest.raises(TaskError, match="did you mean 'val'"):
        t.evaluate([CE], split="vla")
    with pytest.raises(TaskError, match="steps must be a positive integer"):
        t.evaluate([CE], steps=0)
    with pytest.raises(TaskError, match="max_population"):
        t.evaluate([CE], max_population=0)
    X, y = np.random.default_rng(0).normal(size=(40, 2)), np.arange(40) % 2
    no_test = Task.from_arrays(X, y, X, y, kind="binary")
    with pytest.raises(TaskError, match="has no test split"):
        no_test.evaluate([CE], split="test")
    assert t.evaluate([], steps=1) == []
    assert len(t.evaluate(CE, steps=1)) == 1  # a single loss is accepted too


def test_test_and_train_splits_are_scored():
    t = get("wine")
    val, test, train = (t.evaluate([CE], split=s, steps=150)[0] for s in ("val", "test", "train"))
    assert all(r.ok for r in (val, test, train))
    assert train.metric >= 0.9


def test_device_argument_is_honoured():
    task = get("wine")
    (cpu,) = task.evaluate([CE], steps=2, device="cpu")
    assert cpu.ok
    # Meta tensors have shapes but no values: a model really trained there cannot be
    # scored, so an ignored device argument (training on the default device) would be ok.
    (meta,) = task.evaluate([CE], steps=2, device=torch.device("meta"))
    assert meta.status == "error" and "meta tensors" in meta.error, meta
    with pytest.raises(TaskError, match="device 'gpu0' is not a device; use 'cpu', 'cuda'"):
        task.evaluate([CE], steps=2, device="gpu0")
    with pytest.raises(TaskError, match="is not a device"):
        task.evaluate([CE], steps=2, device=3.5)
    if not torch.cuda.is_available():
        with pytest.raises(TaskError, match="CUDA is not available on this machine"):
            task.evaluate([CE], steps=2, device="cuda")
    else:
        (gpu,) = task.evaluate([CE], steps=2, device="cuda")
        assert gpu.ok and gpu.metric == pytest.approx(cpu.metric, abs=0.05)


@pytest.mark.parametrize("name", names())
def test_every_builtin_task_trains_a_few_steps(name):
    t = get(name)
    baseline = "(p-y)**2" if t.kind in ("regression", "boxes") else CE
    losses = [baseline, "abs(p-y)"]
    if t.kind == "embeddings":  # no (p, y) target: the metric-learning losses (tasks/vision.py)
        from lossforge.losses import get as get_loss
        losses = [get_loss("contrastive"), get_loss("triplet")]
    res = t.evaluate(losses, seed=0, steps=3)
    assert [r.status for r in res] == ["ok", "ok"], res
    assert all(np.isfinite(r.metric) for r in res)
