"""Every symbolic form equals its module, through the prediction spaces."""
from __future__ import annotations

import pytest
import torch

from lossforge.losses import ExpressionLoss, get, names
from lossforge.losses.spaces import SpaceError, per_sample_loss
from lossforge.primitives import CompileError, parse

from .helpers import C, build, generator, make_batch

WITH_EXPR = [n for n in names() if get(n).expr is not None]

# Non-default parameters whose expression must still equal the module.
VARIANTS = [
    ("huber", {"delta": 2.5}), ("huber", {"delta": 0.3}), ("smooth_l1", {"beta": 0.0}), ("smooth_l1", {"beta": 0.5}),
    ("quantile", {"q": 0.9}), ("quantile", {"q": 0.1}), ("charbonnier", {"c": 2.0}), ("cauchy", {"c": 0.5}),
    ("geman_mcclure", {"c": 3.0}), ("welsch", {"c": 2.0}), ("tukey_biweight", {"c": 1.0}),
    ("balanced_l1", {"alpha": 0.4, "gamma": 1.2, "beta": 2.0}),
    ("tweedie", {"power": 0.0}), ("tweedie", {"power": 1.0}), ("tweedie", {"power": 2.0}), ("tweedie", {"power": 3.0}),
    ("tweedie", {"power": -1.0}), ("hinge", {"margin": 2.0}), ("squared_hinge", {"margin": 0.5}),
    ("sigmoid_focal", {"alpha": -1.0}), ("sigmoid_focal", {"alpha": -1.0, "gamma": 1.5}),
    ("sigmoid_focal", {"alpha": 0.5}), ("balanced_bce", {"beta": 0.5}), ("focal", {"gamma": 0.5}),
    ("focal", {"gamma": 0.0}), ("poly1", {"epsilon": 2.0}), ("gce", {"q": 0.3}), ("gce", {"q": 1.0}),
    ("sce", {"alpha": 1.0, "beta": 0.5, "A": -9.21}),
    ("taylor_glo", {"theta0": 0.3, "theta1": 0.4, "theta2": -1.2, "theta3": 0.7, "theta4": 2.0, "theta5": 1.5,
                    "theta6": -0.8, "theta7": 0.9}),
]


def assert_expr_equals_module(name: str, params: dict, seed: int = 0) -> None:
    loss = get(name)
    expr = loss.expression(**params)
    assert expr is not None
    batch = make_batch(loss, seed=seed)
    kind = batch.kind
    from_expr = per_sample_loss(expr.compile(), batch.raw, batch.space_target, kind)
    from_module = build(loss, reduction="none", **params)(*batch.args)
    torch.testing.assert_close(from_expr, from_module, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", WITH_EXPR)
def test_expression_equals_module(name):
    for seed in range(3):
        assert_expr_equals_module(name, {}, seed)


@pytest.mark.parametrize("name, params", VARIANTS)
def test_expression_with_parameters_equals_module(name, params):
    assert_expr_equals_module(name, params)


@pytest.mark.parametrize("power", [-1.0, 1.5, 1.2])
def test_tweedie_expression_is_exact_at_zero_counts(power):
    loss = get("tweedie")
    mu = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    y = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    from_expr = per_sample_loss(loss.expression(power=power).compile(), mu, y, "regression")
    torch.testing.assert_close(from_expr, loss.module(power=power, reduction="none")(mu, y), rtol=1e-9, atol=1e-12)


def test_expression_can_fail():
    # A wrong form (BCE without the negative class) must not pass the comparison.
    with pytest.raises(AssertionError):
        loss = get("bce_with_logits")
        batch = make_batch(loss)
        wrong = per_sample_loss(parse("-y*log(p)").compile(), batch.raw, batch.space_target, "binary") / 2
        torch.testing.assert_close(wrong, build(loss, reduction="none")(*batch.args))


def test_expressions_of_the_cross_entropy_family():
    # The examples: -y*log(p) over softmax probabilities summed over classes is CE,
    # and in the binary two-column expansion it is BCE with logits.
    assert get("cross_entropy").expr == parse("-y*log(p)")
    assert get("bce_with_logits").expr == parse("-y*log(p)")
    assert get("mse").expr == parse("(p - y)**2")
    assert get("baikal").expr == parse("y/p - log(p)")


@pytest.mark.parametrize("name, params", [("sigmoid_focal", {}), ("sigmoid_focal", {"alpha": 0.75}),
                                          ("bce_with_logits", {"pos_weight": 2.0}), ("balanced_bce", {"beta": 0.9}),
                                          ("focal", {"alpha": 0.25}), ("cross_entropy", {"label_smoothing": 0.1}),
                                          ("poisson_nll", {"full": 1.0})])
def test_class_asymmetric_or_non_elementwise_settings_have_no_expression(name, params):
    assert get(name).expression(**params) is None


def test_parameters_beyond_the_grammar_bounds_give_no_expression():
    assert get("huber").expression(delta=1e7) is None  # constants are bounded by 1e6
    assert get("tweedie").expression(power=9.0) is None  # exponents are bounded by 6
    assert get("huber").module(delta=1e7) is not None


def test_sigmoid_focal_has_an_expression_once_alpha_is_disabled():
    loss = get("sigmoid_focal")
    assert loss.expr is None and loss.space is None
    assert loss.expression(alpha=-1) == parse("-y*(1 - p)**2*log(p)")


# ------------------------------------------------------------------ ExpressionLoss
def test_expression_loss_multiclass_matches_per_sample_loss_and_cross_entropy():
    g = generator(1)
    z = torch.randn(6, C, generator=g, dtype=torch.float64)
    t = torch.randint(0, C, (6,), generator=g)
    module = ExpressionLoss("-y*log(p)", "multiclass", reduction="none")
    torch.testing.assert_close(module(z, t), torch.nn.functional.cross_entropy(z, t, reduction="none"))
    mean = ExpressionLoss(parse("-y*log(p)"), "multiclass")(z, t)
    torch.testing.assert_close(mean, per_sample_loss(parse("-y*log(p)").compile(), z, t, "multiclass").mean())


def test_expression_loss_takes_class_dimension_one_like_torch():
    g = generator(2)
    z = torch.randn(2, C, 3, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, C, (2, 3, 4), generator=g)
    out = ExpressionLoss("-y*log(p)", "multiclass", reduction="none")(z, t)
    torch.testing.assert_close(out, torch.nn.functional.cross_entropy(z, t, reduction="none"))


def test_expression_loss_binary_and_regression():
    g = generator(3)
    z = torch.randn(7, generator=g, dtype=torch.float64)
    t = torch.randint(0, 2, (7,), generator=g).to(torch.float64)
    torch.testing.assert_close(ExpressionLoss("-y*log(p)", "binary", reduction="sum")(z, t),
                               torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="sum"))
    x, y = torch.randn(2, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ExpressionLoss("abs(p - y)", "regression")(x, y), (x - y).abs().mean())


def test_expression_loss_rejects_bad_arguments():
    with pytest.raises(SpaceError, match="unknown task kind"):
        ExpressionLoss("-y*log(p)", "segmentation")
    with pytest.raises(CompileError, match="unbound"):
        ExpressionLoss("-y*log(p)*c0", "multiclass")
    with pytest.raises(ValueError, match="reduction"):
        ExpressionLoss("-y*log(p)", "binary", reduction="avg")
    module = ExpressionLoss("(p - y)**2", "regression")
    with pytest.raises(ValueError, match="shape"):
        module(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="integer class indices"):
        ExpressionLoss("-y*log(p)", "multiclass")(torch.zeros(4, 3), torch.zeros(4))


def test_expression_loss_pickles_and_backpropagates():
    import pickle

    module = pickle.loads(pickle.dumps(ExpressionLoss("y/p - log(p)", "multiclass")))
    z = torch.randn(5, C, requires_grad=True)
    module(z, torch.arange(5) % C).backward()
    assert torch.isfinite(z.grad).all()
