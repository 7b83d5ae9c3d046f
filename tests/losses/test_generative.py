"""Generative-model losses against torch.nn.functional, torch.distributions and the review's code.

References: ``F.binary_cross_entropy_with_logits`` (gan_bce), ``F.mse_loss``
(lsgan, noise_prediction), the review's ``adversarial_loss.py`` WGAN mode
(critic ``-mean D(x) + mean D(G(z))``), the hinge loss written per case
(hinge_gan), ``torch.distributions.kl_divergence`` (vae_kl), ``F.l1_loss``
(cycle_consistency) and the review's ``noise_prediction_loss.py`` schedule
(``linspace(1e-4, 0.02, 1000)``, cumulative product) for ``add_noise``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from lossforge.losses import LossInputError, LossParameterError, get

from .helpers import assert_reductions, assert_same, generator

ALL = ["gan_bce", "lsgan", "wgan", "hinge_gan", "vae_kl", "cycle_consistency", "noise_prediction"]
GAN = ALL[:4]


def randn(*shape, seed=0, scale=1.0, dtype=torch.float64):
    return torch.randn(*shape, generator=generator(seed), dtype=dtype) * scale


def labels(n=12, dtype=torch.float64):
    return (torch.arange(n) % 2).to(dtype)


def test_gan_bce_equals_torch_and_the_minimax_generator_loss():
    z, t = randn(12, scale=3), labels()
    assert_same(get("gan_bce").module(reduction="none"),
                lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none"), z, t, wrt=1)
    ones = torch.ones(12, dtype=torch.float64)
    # minimax generator: log(1 - D(G(z))) = -BCE(z, 0)
    assert_same(get("gan_bce").module(saturating=1, reduction="none"),
                lambda x, y: -F.binary_cross_entropy_with_logits(x, torch.zeros_like(y), reduction="none"),
                z, ones, wrt=1)
    # a PatchGAN map [N, 1, H, W]: one value per score
    maps = randn(3, 1, 4, 4, seed=1)
    real = torch.ones_like(maps)
    torch.testing.assert_close(get("gan_bce").module()(maps, real), F.binary_cross_entropy_with_logits(maps, real))


def test_lsgan_equals_mse_and_wgan_the_review_code():
    d, t = randn(12, seed=2), labels()
    assert_same(get("lsgan").module(reduction="none"), lambda x, y: F.mse_loss(x, y, reduction="none"), d, t, wrt=1)
    real, fake = randn(6, seed=3), randn(6, seed=4)
    both = torch.cat([real, fake])
    target = torch.cat([torch.ones(6), torch.zeros(6)]).to(torch.float64)
    critic = get("wgan").module(reduction="sum")(both, target) / 6
    torch.testing.assert_close(critic, -real.mean() + fake.mean())  # the review's WGAN discriminator mode
    torch.testing.assert_close(get("wgan").module()(fake, torch.ones(6, dtype=torch.float64)), -fake.mean())
    assert_same(get("wgan").module(reduction="none"), lambda x, y: torch.where(y == 1, -x, x), both, target, wrt=1)


def test_hinge_gan_discriminator_and_generator():
    d, t = randn(12, seed=5, scale=2), labels()
    expected = torch.where(t == 1, torch.clamp(1 - d, min=0), torch.clamp(1 + d, min=0))
    assert_same(get("hinge_gan").module(reduction="none"),
                lambda x, y: torch.where(y == 1, torch.clamp(1 - x, min=0), torch.clamp(1 + x, min=0)), d, t, wrt=1)
    torch.testing.assert_close(get("hinge_gan").module(reduction="none")(d, t), expected)
    ones = torch.ones(12, dtype=torch.float64)
    assert_same(get("hinge_gan").module(generator=1, reduction="none"), lambda x, y: -x, d, ones, wrt=1)


def test_vae_kl_equals_torch_distributions():
    mu, logvar = randn(12, 5, seed=6), randn(12, 5, seed=7)

    def theirs(m, lv):
        return kl_divergence(Normal(m, (0.5 * lv).exp()), Normal(torch.zeros_like(m), torch.ones_like(m))).sum(1)

    assert_same(get("vae_kl").module(reduction="none"), theirs, mu, logvar, wrt=1)
    # and the gradient with respect to the log-variance
    lv = logvar.clone().requires_grad_(True)
    get("vae_kl").module(reduction="sum")(mu, lv).backward()
    torch.testing.assert_close(lv.grad, 0.5 * (logvar.exp() - 1))


def test_cycle_consistency_equals_l1():
    x, rec = randn(4, 3, 5, 5, seed=8), randn(4, 3, 5, 5, seed=9)
    assert_same(get("cycle_consistency").module(lambda_cycle=1.0, reduction="none"),
                lambda a, b: F.l1_loss(a, b, reduction="none").mean((1, 2, 3)), rec, x, wrt=1)
    torch.testing.assert_close(get("cycle_consistency").module()(rec, x), 10 * F.l1_loss(rec, x))


def test_noise_prediction_is_the_mse_and_add_noise_the_review_schedule():
    eps_hat, eps = randn(4, 3, 5, 5, seed=10), randn(4, 3, 5, 5, seed=11)
    module = get("noise_prediction").module(reduction="none")
    assert_same(module, lambda a, b: F.mse_loss(a, b, reduction="none").mean((1, 2, 3)), eps_hat, eps, wrt=1)
    x0, t = randn(4, 3, 5, 5, seed=12), torch.tensor([0, 10, 500, 999])
    alpha_bar = torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), dim=0)[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(module.add_noise(x0, eps, t), alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps)
    short = get("noise_prediction").module(beta_start=1e-3, beta_end=0.05, num_train_timesteps=10)
    assert len(short.alphas_cumprod) == 10
    assert short.alphas_cumprod[0].item() == pytest.approx(1 - 1e-3)
    with pytest.raises(LossInputError, match="timesteps must be in"):
        short.add_noise(x0, eps, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(LossParameterError, match="beta_start"):
        get("noise_prediction").module(beta_start=0.1, beta_end=0.01)


def _args(name, n=12, dtype=torch.float64):
    if name in GAN:
        return randn(n, seed=13, scale=2, dtype=dtype), labels(n, dtype)
    if name == "vae_kl":
        return randn(n, 4, seed=14, dtype=dtype), randn(n, 4, seed=15, dtype=dtype)
    return randn(n, 2, 3, 3, seed=16, dtype=dtype), randn(n, 2, 3, 3, seed=17, dtype=dtype)


@pytest.mark.parametrize("name", ALL)
def test_reductions(name):
    assert_reductions(get(name), _args(name), 12)


@pytest.mark.parametrize("name", ALL)
def test_shape_mismatch_is_a_clear_error(name):
    x, y = _args(name)
    with pytest.raises(LossInputError, match="shape"):
        get(name).module()(x, y[:-1])
    with pytest.raises(LossInputError, match="shape"):
        get(name).module()(x.unsqueeze(1), y)


def test_gan_targets_must_be_real_or_fake_labels():
    with pytest.raises(LossInputError, match="1 \\(real\\) and 0 \\(fake\\)"):
        get("gan_bce").module()(randn(4), torch.tensor([1.0, -1.0, 0.0, 1.0], dtype=torch.float64))
    with pytest.raises(LossParameterError, match="switch"):
        get("hinge_gan").module(generator=2)


@pytest.mark.parametrize("name", ALL)
def test_float32_extreme_inputs_are_finite(name):
    x, y = _args(name, dtype=torch.float32)
    extremes = [x * 1e4, x * 0, x.clone().fill_(-1e4)]
    if name == "vae_kl":
        extremes = [x * 1e4, x * 0, x * 1e-20]
        targets = [y.clamp(-80, 80) * 20, torch.full_like(y, -80.0), torch.full_like(y, 80.0)]
    else:
        targets = [y] * 3 if name in GAN else [x * 1e4, x * 0, y]  # identical, constant, far apart
    for a, b in zip(extremes, targets):
        a = a.clone().requires_grad_(True)
        out = get(name).module()(a, b.clamp(-80, 80) if name == "vae_kl" else b)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(a.grad).all(), (name, out)
