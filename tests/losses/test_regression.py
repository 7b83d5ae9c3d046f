"""Regression, robust and probabilistic losses against their established implementations (float64)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossforge.losses import LossInputError, get

from .helpers import close, generator, module

kornia_losses = pytest.importorskip("kornia.losses")
sklearn_metrics = pytest.importorskip("sklearn.metrics")
statsmodels_norms = pytest.importorskip("statsmodels.robust.norms")

REDUCTIONS = ("none", "mean")


def residual_pair(n: int = 40, scale: float = 3.0, seed: int = 0):
    g = generator(seed)
    return (torch.randn(n, generator=g, dtype=torch.float64) * scale,
            torch.randn(n, generator=g, dtype=torch.float64) * scale)


# ------------------------------------------------------------------ torch.nn.functional
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_and_mae_equal_torch(reduction):
    x, y = residual_pair()
    close(module("mse", reduction)(x, y), F.mse_loss(x, y, reduction=reduction))
    close(module("mae", reduction)(x, y), F.l1_loss(x, y, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_huber_equals_torch(delta, reduction):
    x, y = residual_pair()
    close(module("huber", reduction, delta=delta)(x, y), F.huber_loss(x, y, delta=delta, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [0.0, 1 / 9, 1.0, 2.0])
def test_smooth_l1_equals_torch(beta, reduction):
    x, y = residual_pair()
    close(module("smooth_l1", reduction, beta=beta)(x, y), F.smooth_l1_loss(x, y, beta=beta, reduction=reduction))


def test_smooth_l1_differs_from_huber_unless_delta_is_one():
    x, y = residual_pair()
    assert not torch.allclose(module("smooth_l1", "none", beta=2.0)(x, y), module("huber", "none", delta=2.0)(x, y))
    close(module("smooth_l1", "none", beta=1.0)(x, y), module("huber", "none", delta=1.0)(x, y))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("full", [False, True])
def test_poisson_nll_equals_torch_with_log_input(full, reduction):
    g = generator(1)
    z = torch.randn(30, generator=g, dtype=torch.float64)
    y = torch.randint(0, 8, (30,), generator=g).to(torch.float64)
    close(module("poisson_nll", reduction, full=full)(z, y),
          F.poisson_nll_loss(z, y, log_input=True, full=full, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("full", [False, True])
def test_gaussian_nll_equals_torch(full, reduction):
    g = generator(2)
    mu, y = torch.randn(2, 25, generator=g, dtype=torch.float64)
    var = torch.rand(25, generator=g, dtype=torch.float64) * 2
    var[0] = 1e-9  # below eps: clamped
    close(module("gaussian_nll", reduction, full=full)(mu, y, var),
          F.gaussian_nll_loss(mu, y, var, full=full, reduction=reduction))


def test_gaussian_nll_gradient_through_the_clamp_is_torchs_and_negative_variances_are_rejected():
    # torch clamps a clone under no_grad: the gradient passes straight through, taken at the clamped value.
    grads = []
    for fn in (get("gaussian_nll").module(), F.gaussian_nll_loss):
        var = torch.tensor([1e-9, 0.5], dtype=torch.float64, requires_grad=True)
        fn(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), var).backward()
        grads.append(var.grad)
    close(grads[0], grads[1])
    with pytest.raises(LossInputError, match="variance"):
        get("gaussian_nll").module()(torch.zeros(2), torch.ones(2), torch.tensor([-1.0, 1.0]))


# ------------------------------------------------------------------ log-cosh
def test_log_cosh_equals_the_definition_in_float64():
    x, y = residual_pair(scale=6.0)  # |r| < 20, where cosh is exact in float64
    r = (x - y).numpy()
    close(module("log_cosh", "none")(x, y), np.log(np.cosh(r)))
    close(module("log_cosh", "mean")(x, y), np.log(np.cosh(r)).mean())


def test_log_cosh_is_finite_for_large_residuals_in_float32():
    x = torch.tensor([100.0, -100.0, 1e4, 0.0], requires_grad=True)
    y = torch.zeros(4)
    out = module("log_cosh", "none")(x, y)
    assert torch.isinf(torch.log(torch.cosh(torch.tensor(100.0))))  # the naive form overflows here
    assert torch.isfinite(out).all()
    close(out[:2].double(), torch.full((2,), 100 - math.log(2), dtype=torch.float64))
    out.sum().backward()
    close(x.grad.double(), torch.tensor([1.0, -1.0, 1.0, 0.0], dtype=torch.float64))


# ------------------------------------------------------------------ scikit-learn
@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_quantile_equals_sklearn_pinball(q):
    x, y = residual_pair()
    per_element = sklearn_metrics.mean_pinball_loss(y.numpy()[None], x.numpy()[None], alpha=q,
                                                    multioutput="raw_values")
    close(module("quantile", "none", q=q)(x, y), per_element)
    close(module("quantile", "mean", q=q)(x, y), sklearn_metrics.mean_pinball_loss(y.numpy(), x.numpy(), alpha=q))


def test_quantile_residual_is_target_minus_prediction():
    # Under-prediction (y > p) costs q per unit, over-prediction 1 - q.
    loss = module("quantile", "none", q=0.9)
    close(loss(torch.tensor([0.0]), torch.tensor([1.0])), [0.9])
    close(loss(torch.tensor([1.0]), torch.tensor([0.0])), [0.1])


def test_msle_equals_sklearn():
    g = generator(3)
    x, y = torch.rand(2, 30, generator=g, dtype=torch.float64) * 5
    per_element = sklearn_metrics.mean_squared_log_error(y.numpy()[None], x.numpy()[None], multioutput="raw_values")
    close(module("msle", "none")(x, y), per_element)
    close(module("msle", "mean")(x, y), sklearn_metrics.mean_squared_log_error(y.numpy(), x.numpy()))
    with pytest.raises(LossInputError, match="> -1"):
        module("msle", "mean")(torch.tensor([-2.0]), torch.tensor([0.0]))


def test_mape_equals_sklearn():
    x, y = residual_pair()
    y[0] = 0.0  # sklearn's eps floor
    per_element = sklearn_metrics.mean_absolute_percentage_error(y.numpy()[None], x.numpy()[None],
                                                                 multioutput="raw_values")
    close(module("mape", "none")(x, y), per_element)
    close(module("mape", "mean")(x, y), sklearn_metrics.mean_absolute_percentage_error(y.numpy(), x.numpy()))


def test_smape_equals_the_torchmetrics_formula():
    x, y = residual_pair()
    x[0] = y[0] = 0.0
    # torchmetrics.functional.symmetric_mean_absolute_percentage_error, written out (not installed here)
    expected = 2 * (x - y).abs() / torch.clamp(x.abs() + y.abs(), min=1.17e-6)
    close(module("smape", "none")(x, y), expected)
    close(module("smape", "mean")(x, y), expected.mean())


def test_poisson_deviance_equals_sklearn():
    g = generator(4)
    lam = torch.rand(30, generator=g, dtype=torch.float64) * 4 + 0.05
    y = torch.randint(0, 7, (30,), generator=g).to(torch.float64)  # includes zero counts
    per_element = [sklearn_metrics.mean_poisson_deviance([yi], [li]) for yi, li in zip(y.tolist(), lam.tolist())]
    close(module("poisson_deviance", "none")(lam, y), per_element)
    close(module("poisson_deviance", "mean")(lam, y), sklearn_metrics.mean_poisson_deviance(y.numpy(), lam.numpy()))
    with pytest.raises(LossInputError):
        module("poisson_deviance", "mean")(torch.tensor([0.0]), torch.tensor([1.0]))


@pytest.mark.parametrize("power", [-1.0, 0.0, 1.0, 1.5, 1.2, 2.0, 3.0])
def test_tweedie_equals_sklearn(power):
    g = generator(5)
    mu = torch.rand(25, generator=g, dtype=torch.float64) * 4 + 0.05
    y = torch.randint(0, 7, (25,), generator=g).to(torch.float64)
    if power >= 2:
        y = y + 0.5
    per_element = [sklearn_metrics.mean_tweedie_deviance([yi], [mi], power=power)
                   for yi, mi in zip(y.tolist(), mu.tolist())]
    close(module("tweedie", "none", power=power)(mu, y), per_element)
    close(module("tweedie", "mean", power=power)(mu, y),
          sklearn_metrics.mean_tweedie_deviance(y.numpy(), mu.numpy(), power=power))


# ------------------------------------------------------------------ kornia robust losses
KORNIA = {"charbonnier": "charbonnier_loss", "cauchy": "cauchy_loss", "geman_mcclure": "geman_mcclure_loss",
          "welsch": "welsch_loss"}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(KORNIA))
def test_robust_losses_equal_kornia_at_scale_one(name, reduction):
    x, y = residual_pair()
    reference = getattr(kornia_losses, KORNIA[name])
    close(module(name, reduction)(x, y), reference(x, y, reduction=reduction))


@pytest.mark.parametrize("name", sorted(KORNIA))
def test_robust_losses_scale_the_residual(name):
    x, y = residual_pair()
    reference = getattr(kornia_losses, KORNIA[name])
    close(module(name, "none", c=2.5)(x, y), reference(x / 2.5, y / 2.5, reduction="none"))


@pytest.mark.parametrize("c", [4.685, 1.0])
def test_tukey_biweight_equals_statsmodels(c):
    x, y = residual_pair(scale=4.0)
    r = (x - y).numpy()
    rho = statsmodels_norms.TukeyBiweight(c=c).rho(r)
    close(module("tukey_biweight", "none", c=c)(x, y), rho)
    close(module("tukey_biweight", "mean", c=c)(x, y), rho.mean())
    assert (np.abs(r) > c).any() and (np.abs(r) <= c).any()  # both branches exercised


def test_balanced_l1_equals_the_mmdetection_formula():
    x, y = residual_pair(scale=1.0)
    alpha, gamma, beta = 0.5, 1.5, 1.0
    diff = (x - y).abs()
    b = np.e ** (gamma / alpha) - 1
    expected = torch.where(diff < beta, alpha / b * (b * diff + 1) * torch.log(b * diff / beta + 1) - alpha * diff,
                           gamma * diff + gamma / b - alpha * beta)
    close(module("balanced_l1", "none")(x, y), expected)
    # continuous where the two pieces meet
    at = module("balanced_l1", "none")(torch.tensor([1.0 - 1e-9, 1.0 + 1e-9], dtype=torch.float64),
                                      torch.zeros(2, dtype=torch.float64))
    assert abs(float(at[0] - at[1])) < 1e-7
