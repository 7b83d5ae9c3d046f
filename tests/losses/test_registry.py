"""The catalogue: names, lookup, the Loss contract, the table and the source seam."""
from __future__ import annotations

import pytest
import torch

from lossforge.losses import (CatalogueError, ExpressionLoss, Loss, LossNotFound, LossParameterError, catalogue_table,
                              get, names, register_source, sources, unregister_source)
from lossforge.losses.loss import INPUTS, TARGETS, TASK_KINDS, CatalogueLoss
from lossforge.primitives import Expr, LossforgeError, parse

from .helpers import build, make_batch

REQUIRED = {
    "regression": ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile", "msle", "charbonnier", "cauchy",
                   "geman_mcclure", "welsch", "tukey_biweight", "poisson_nll", "tweedie"],
    "binary": ["bce", "bce_with_logits", "soft_margin", "hinge", "squared_hinge", "modified_huber", "exponential",
               "sigmoid_focal"],
    "multiclass": ["cross_entropy", "focal", "poly1", "multi_margin", "kl_div", "mae_ce", "gce", "sce", "baikal",
                   "taylor_glo"],
    "segmentation": ["dice", "jaccard", "tversky", "focal_tversky", "log_cosh_dice"],
    "more": ["balanced_bce", "class_balanced_ce", "generalized_dice", "gaussian_nll", "mape", "smape",
             "balanced_l1", "lovasz_hinge"],
}
ALL = names()


def test_at_least_forty_reference_losses_and_every_required_name():
    reference = names(kind="reference")
    assert len(reference) >= 40
    missing = [n for group in REQUIRED.values() for n in group if n not in reference]
    assert not missing
    assert len(set(reference)) == len(reference)


def test_issue_conventions_of_key_entries():
    assert get("bce").input == "probabilities" and get("bce_with_logits").input == "logits"
    assert get("soft_margin").target == get("hinge").target == "signed"
    assert get("poisson_nll").input == "log_rate"
    assert get("kl_div").input == "log_probabilities" and get("kl_div").target == "probabilities"
    assert dict(get("sigmoid_focal").params) == {"alpha": 0.25, "gamma": 2.0}
    assert get("focal").params["alpha"] < 0  # no alpha by default
    assert dict(get("sce").params) == {"alpha": 0.1, "beta": 1.0, "A": -4.0}
    assert get("gce").params["q"] == 0.7 and get("poly1").params["epsilon"] == 1.0
    assert get("tukey_biweight").params["c"] == 4.685
    assert get("tversky").params["alpha"] == 0.3 and get("tversky").params["beta"] == 0.7
    assert get("lovasz_hinge").expr is None
    assert "Gonzalez" in get("baikal").reference and "1905.11528" in get("baikal").reference
    assert "Gonzalez" in get("taylor_glo").reference and "2002.00059" in get("taylor_glo").reference
    assert len(get("taylor_glo").params) == 8


@pytest.mark.parametrize("name", ALL)
def test_entry_contract(name):
    loss = get(name)
    assert isinstance(loss, Loss) and loss.name == name and loss.kind in ("reference", "discovered")
    assert loss.formula and loss.reference and loss.family
    assert loss.input in INPUTS and loss.target in TARGETS
    assert set(loss.task_kinds) <= set(TASK_KINDS)
    assert (loss.expr is None) == (loss.space is None)
    if loss.expr is not None:
        assert isinstance(loss.expr, Expr) and loss.space in ("probability", "real")
        assert loss.expression() == loss.expr
        assert not loss.expr.constants  # every constant is bound
    with pytest.raises(TypeError):
        loss.params["x"] = 1.0  # immutable mapping
    module = build(loss)
    assert isinstance(module, torch.nn.Module)
    if isinstance(module, CatalogueLoss):
        assert dict(module.params) == dict(loss.params)
        doc = type(module).__doc__
        assert "Shape:" in doc and "reduction" in doc
        assert callable(type(module).functional)


@pytest.mark.parametrize("name", ALL)
def test_bad_reduction_is_a_value_error(name):
    loss = get(name)
    with pytest.raises(ValueError, match="reduction"):
        build(loss, reduction="batchmean")
    module = build(loss, reduction="none")
    module.reduction = "avg"
    batch = make_batch(loss)
    with pytest.raises(ValueError, match="reduction"):
        module(*batch.args)


@pytest.mark.parametrize("name", ALL)
def test_shape_mismatch_is_a_value_error(name):
    loss = get(name)
    batch = make_batch(loss)
    input, target, *rest = batch.args
    bad_target = target[:-1]
    with pytest.raises(ValueError):
        build(loss)(input, bad_target, *rest)
    if batch.kind in ("regression", "binary"):  # [N] against [N, 1] would broadcast in F.mse_loss
        with pytest.raises(ValueError, match="shape"):
            build(loss)(input.unsqueeze(1), target, *[r.unsqueeze(1) for r in rest])


@pytest.mark.parametrize("name", ALL)
def test_reductions_agree(name):
    loss = get(name)
    batch = make_batch(loss, seed=3)
    none = build(loss, reduction="none")(*batch.args)
    assert none.shape[0] == batch.raw.shape[0]
    torch.testing.assert_close(build(loss, reduction="mean")(*batch.args), none.mean())
    torch.testing.assert_close(build(loss, reduction="sum")(*batch.args), none.sum())
    torch.testing.assert_close(build(loss)(*batch.args), none.mean())  # 'mean' is the default


@pytest.mark.parametrize("name", ALL)
def test_gradients_are_finite_in_float32(name):
    loss = get(name)
    batch = make_batch(loss, seed=5, dtype=torch.float32)
    input = batch.args[0].detach().clone().requires_grad_(True)
    out = build(loss)(input, *batch.args[1:])
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(input.grad).all()


def test_unknown_name_suggests_the_closest():
    with pytest.raises(LossNotFound, match="did you mean 'huber'") as info:
        get("hubr")
    assert isinstance(info.value, KeyError) and isinstance(info.value, LossforgeError)
    assert str(info.value).startswith("no loss named 'hubr'")  # no KeyError quoting
    with pytest.raises(LossNotFound, match="cross_entropy"):
        get("cross_entropi")


def test_unknown_parameter_suggests_the_closest():
    with pytest.raises(LossParameterError, match="did you mean 'delta'"):
        get("huber").module(delt=2.0)
    with pytest.raises(TypeError):  # as a torch module would for an unexpected keyword
        get("mse").module(beta=1.0)
    with pytest.raises(LossParameterError, match="did you mean 'gamma'"):
        get("focal").expression(gama=1.0)


@pytest.mark.parametrize("name, params", [("huber", {"delta": 0}), ("quantile", {"q": 1.5}), ("gce", {"q": 0}),
                                          ("tweedie", {"power": 0.5}), ("sigmoid_focal", {"gamma": -1}),
                                          ("cross_entropy", {"label_smoothing": 2}), ("multi_margin", {"p": 3}),
                                          ("sce", {"A": 1}), ("huber", {"delta": "big"})])
def test_out_of_range_parameters_are_rejected(name, params):
    with pytest.raises(LossParameterError):
        build(get(name), **params)


def test_names_filter_by_kind_and_family():
    shipped = names(kind="discovered")  # the losses shipped in losses/discovered/
    assert not set(shipped) & set(names(kind="reference"))
    assert all(get(n).kind == "discovered" for n in shipped)
    seg = names(family="segmentation")
    assert "dice" in seg and "mse" not in seg
    assert set(names(family="meta-learned")) == {"baikal", "taylor_glo"}
    with pytest.raises(CatalogueError, match="did you mean 'reference'"):
        names(kind="referenc")
    with pytest.raises(CatalogueError, match="known"):
        names(family="nonsense")


def test_catalogue_table_lists_every_loss():
    table = catalogue_table()
    for name in ALL:
        assert f"\n{name} " in table
    assert "formula" in table.splitlines()[0] and "params" in table.splitlines()[0]
    assert "delta=1" in table
    seg = catalogue_table(family="segmentation")
    assert "dice" in seg and "\nmse " not in seg
    discovered = names(kind="discovered")
    if discovered:
        assert all(f"\n{n} " in catalogue_table(kind="discovered") for n in discovered)
    else:
        assert "no discovered losses" in catalogue_table(kind="discovered")


def test_cli_catalogue(capsys):
    from lossforge.search.cli import main

    assert main(["catalogue", "--family", "binary"]) == 0
    out = capsys.readouterr().out
    assert "\nhinge " in out and "\nhuber " not in out
    assert main(["catalogue", "--family", "nope"]) == 2  # a LossforgeError: one line on stderr
    assert "unknown loss family" in capsys.readouterr().err


def _discovered(name: str) -> Loss:
    return Loss(name=name, kind="discovered", family="multiclass", formula="-y*log(p)*(2 - p)", params={},
                reference="found by a test", expr=parse("-y*log(p)*(2 - p)"), space="probability", input="logits",
                target="index", task_kinds=("multiclass",))


def test_a_registered_source_is_seen_by_get_and_names():
    register_source("test-store", lambda: [_discovered("test_discovered")])
    try:
        assert "test-store" in sources()
        assert "test_discovered" in names(kind="discovered")
        loss = get("test_discovered")
        module = loss.module(reduction="none")
        assert isinstance(module, ExpressionLoss)
        z = torch.randn(4, 3, dtype=torch.float64)
        t = torch.tensor([0, 1, 2, 1])
        p_t = torch.softmax(z, 1).gather(1, t[:, None]).squeeze(1)
        torch.testing.assert_close(module(z, t), -torch.log(p_t) * (2 - p_t))
        with pytest.raises(CatalogueError, match="already registered"):
            register_source("test-store", lambda: [])
    finally:
        unregister_source("test-store")
    assert "test_discovered" not in names()


def test_a_name_defined_by_two_sources_is_an_error():
    register_source("test-clash", lambda: [_discovered("mse")])
    try:
        with pytest.raises(CatalogueError, match="'mse' is defined by both"):
            get("mse")
    finally:
        unregister_source("test-clash")
    with pytest.raises(CatalogueError):
        unregister_source("reference")


def test_losses_and_modules_pickle():
    import pickle

    for name in ("huber", "taylor_glo", "dice"):
        loss = pickle.loads(pickle.dumps(get(name)))
        assert loss is get(name)
        module = pickle.loads(pickle.dumps(build(loss, reduction="sum")))
        batch = make_batch(loss)
        torch.testing.assert_close(module(*batch.args), build(loss, reduction="sum")(*batch.args))
    discovered = pickle.loads(pickle.dumps(_discovered("d")))
    assert discovered.expr == parse("-y*log(p)*(2 - p)") and discovered.kind == "discovered"


def test_invalid_entries_are_rejected():
    with pytest.raises(LossforgeError, match="space must be given"):
        Loss(name="x", kind="reference", family="f", formula="f", params={}, reference="r", expr=parse("p"),
             space=None, input="logits", target="index", task_kinds=())
    with pytest.raises(LossforgeError, match="kind"):
        _discovered("y").__class__(**{**_discovered("y").__dict__, "kind": "found"})
