"""Invariants between catalogue entries, checked with hypothesis."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from lossforge.losses import get

finite = st.floats(min_value=-30, max_value=30, allow_nan=False)
residuals = st.lists(finite, min_size=1, max_size=16)
logit_rows = st.lists(st.lists(st.floats(min_value=-8, max_value=8), min_size=4, max_size=4), min_size=1, max_size=6)


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def loss(name: str, **params):
    return get(name).module(reduction="none", **params)


def close(a, b, **tol):
    torch.testing.assert_close(a, b, **tol)


@given(residuals, st.floats(min_value=0.05, max_value=5))
def test_smooth_l1_is_huber_over_beta(r, beta):
    x, y = t64(r), torch.zeros(len(r), dtype=torch.float64)
    close(loss("smooth_l1", beta=beta)(x, y), loss("huber", delta=beta)(x, y) / beta)


@given(residuals, st.floats(min_value=0.05, max_value=5))
def test_huber_lies_below_both_of_its_pieces(r, delta):
    x, y = t64(r), torch.zeros(len(r), dtype=torch.float64)
    h = loss("huber", delta=delta)(x, y)
    assert (h <= 0.5 * x**2 + 1e-12).all() and (h <= delta * x.abs() + 1e-12).all()


@given(residuals)
def test_log_cosh_is_between_abs_minus_log2_and_abs(r):
    x, y = t64(r), torch.zeros(len(r), dtype=torch.float64)
    lc = loss("log_cosh")(x, y)
    assert (lc <= x.abs() + 1e-12).all() and (lc >= x.abs() - math.log(2) - 1e-12).all()
    assert (lc <= 0.5 * x**2 + 1e-12).all()


@given(residuals)
def test_median_quantile_is_half_the_absolute_error(r):
    x, y = t64(r), torch.zeros(len(r), dtype=torch.float64)
    close(loss("quantile", q=0.5)(x, y), 0.5 * loss("mae")(x, y))


@given(st.lists(st.floats(min_value=0.05, max_value=20), min_size=1, max_size=10),
       st.lists(st.integers(min_value=0, max_value=20), min_size=10, max_size=10))
def test_tweedie_limits_are_mse_and_poisson_deviance(mu, counts):
    m, y = t64(mu), t64(counts[:len(mu)])
    close(loss("tweedie", power=0)(m, y), loss("mse")(m, y))
    close(loss("tweedie", power=1)(m, y), loss("poisson_deviance")(m, y))


@given(st.lists(st.floats(min_value=-20, max_value=20), min_size=1, max_size=12), st.data())
def test_soft_margin_is_bce_with_logits_of_mapped_labels(z, data):
    signs = data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=len(z), max_size=len(z)))
    zz, s = t64(z), t64(signs)
    close(loss("soft_margin")(zz, s), loss("bce_with_logits")(zz, (s + 1) / 2))


@given(logit_rows, st.data())
def test_gce_tends_to_cross_entropy_as_q_goes_to_zero(rows, data):
    z = t64(rows)
    t = torch.tensor(data.draw(st.lists(st.integers(0, 3), min_size=len(rows), max_size=len(rows))))
    ce = F.cross_entropy(z, t, reduction="none")
    close(loss("gce", q=1e-6)(z, t), ce, rtol=1e-4, atol=1e-5)
    close(loss("gce", q=1.0)(z, t), loss("mae_ce")(z, t) / 2)
    assert (loss("gce", q=0.7)(z, t) <= ce + 1e-12).all()  # (1 - p**q)/q <= -log p


@given(logit_rows, st.data(), st.floats(min_value=0.0, max_value=2.0), st.floats(min_value=0.0, max_value=2.0))
def test_sce_is_a_mix_of_cross_entropy_and_mae(rows, data, alpha, beta):
    z = t64(rows)
    t = torch.tensor(data.draw(st.lists(st.integers(0, 3), min_size=len(rows), max_size=len(rows))))
    expected = alpha * F.cross_entropy(z, t, reduction="none") + beta * 4 * loss("mae_ce")(z, t) / 2
    close(loss("sce", alpha=alpha, beta=beta)(z, t), expected)


@given(logit_rows, st.data())
def test_kl_div_to_a_one_hot_target_is_cross_entropy(rows, data):
    z = t64(rows)
    t = torch.tensor(data.draw(st.lists(st.integers(0, 3), min_size=len(rows), max_size=len(rows))))
    close(loss("kl_div")(F.log_softmax(z, 1), F.one_hot(t, 4).double()), F.cross_entropy(z, t, reduction="none"))


seg_maps = st.integers(min_value=0, max_value=2**16)


@given(seg_maps)
def test_overlap_losses_are_tversky_special_cases(seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, 3, (2, 4, 4), generator=g)
    close(loss("tversky", alpha=0.5, beta=0.5, eps=0.0)(z, t), loss("dice", eps=0.0)(z, t))
    close(loss("tversky", alpha=1.0, beta=1.0, eps=0.0)(z, t), loss("jaccard", eps=0.0)(z, t))
    close(loss("focal_tversky", gamma=1.0)(z, t), loss("tversky")(z, t))
    d, j = loss("dice", eps=0.0)(z, t), loss("jaccard", eps=0.0)(z, t)
    assert ((0 <= d) & (d <= j + 1e-12) & (j <= 1)).all()  # J = D/(2 - D) <= D per class
