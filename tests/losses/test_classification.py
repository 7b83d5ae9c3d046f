"""Multiclass, imbalance, noisy-label and meta-learned losses against their reference implementations."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossforge.losses import LossInputError, LossParameterError, get

from .helpers import CLASS_COUNTS, close, generator, module

kornia_losses = pytest.importorskip("kornia.losses")

REDUCTIONS = ("none", "mean")
K = 5


def logits_and_labels(n: int = 30, classes: int = K, scale: float = 2.0, seed: int = 0, spatial=()):
    g = generator(seed)
    z = torch.randn(n, classes, *spatial, generator=g, dtype=torch.float64) * scale
    t = torch.randint(0, classes, (n, *spatial), generator=g)
    return z, t


def p_true(z, t):
    return F.softmax(z, 1).gather(1, t[:, None]).squeeze(1)


# ------------------------------------------------------------------ torch.nn.functional
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.4])
def test_cross_entropy_equals_torch(label_smoothing, reduction):
    z, t = logits_and_labels()
    close(module("cross_entropy", reduction, label_smoothing=label_smoothing)(z, t),
          F.cross_entropy(z, t, label_smoothing=label_smoothing, reduction=reduction))


def test_cross_entropy_label_smoothing_formula_and_spatial_inputs():
    z, t = logits_and_labels(spatial=(3, 4))
    eps = 0.1
    logq = F.log_softmax(z, 1)
    target = (1 - eps) * F.one_hot(t, K).movedim(-1, 1) + eps / K  # eps/K also on the true class
    close(module("cross_entropy", "none", label_smoothing=eps)(z, t), -(target * logq).sum(1))


def test_cross_entropy_is_finite_for_huge_logits_in_float32():
    z = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    out = module("cross_entropy", "sum")(z, torch.tensor([1]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_equals_torch(reduction):
    z, t = logits_and_labels()
    logp = F.log_softmax(z, 1)
    close(module("nll", reduction)(logp, t), F.nll_loss(logp, t, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p, margin", [(1, 1.0), (2, 1.0), (1, 0.5)])
def test_multi_margin_equals_torch(p, margin, reduction):
    z, t = logits_and_labels()
    close(module("multi_margin", reduction, p=p, margin=margin)(z, t),
          F.multi_margin_loss(z, t, p=p, margin=margin, reduction=reduction))


def test_kl_div_equals_torch_batchmean():
    g = generator(7)
    logq = F.log_softmax(torch.randn(20, K, generator=g, dtype=torch.float64), 1)
    target = F.softmax(torch.randn(20, K, generator=g, dtype=torch.float64) * 2, 1)
    target[0] = F.one_hot(torch.tensor(2), K).double()  # zeros in the target: 0 log 0 = 0
    close(module("kl_div", "none")(logq, target), F.kl_div(logq, target, reduction="none").sum(1))
    close(module("kl_div", "mean")(logq, target), F.kl_div(logq, target, reduction="batchmean"))
    # torch's own 'mean' divides by N*C: a different number
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about exactly this
        torch_mean = F.kl_div(logq, target, reduction="mean")
    close(torch_mean * K, module("kl_div", "mean")(logq, target))


# ------------------------------------------------------------------ focal (kornia)
@pytest.mark.parametrize("gamma", [2.0, 0.5, 0.0])
@pytest.mark.parametrize("alpha", [-1.0, 0.25])
def test_focal_equals_kornia(alpha, gamma):
    z, t = logits_and_labels()
    k_alpha = None if alpha < 0 else alpha
    kornia_none = kornia_losses.focal_loss(z, t, alpha=k_alpha, gamma=gamma, reduction="none")  # [N, C]
    close(module("focal", "none", alpha=alpha, gamma=gamma)(z, t), kornia_none.sum(1))
    # kornia's 'mean' averages the [N, C] tensor, i.e. also divides by the number of classes
    kornia_mean = kornia_losses.focal_loss(z, t, alpha=k_alpha, gamma=gamma, reduction="mean")
    close(module("focal", "mean", alpha=alpha, gamma=gamma)(z, t), kornia_mean * K)


def test_focal_with_gamma_zero_is_cross_entropy_and_saturation_keeps_gradients_finite():
    z, t = logits_and_labels()
    close(module("focal", "none", gamma=0.0)(z, t), F.cross_entropy(z, t, reduction="none"))
    big = torch.tensor([[50.0, -50.0, 0.0]], requires_grad=True)  # p_t == 1 in float32
    module("focal", "sum", gamma=0.5)(big, torch.tensor([0])).backward()
    assert torch.isfinite(big.grad).all()


# ------------------------------------------------------------------ formulas written out from the papers / code
@pytest.mark.parametrize("epsilon", [1.0, 2.0])
def test_poly1_equals_the_timm_formula(epsilon):
    z, t = logits_and_labels()
    # timm.loss.PolyCrossEntropy (not installed here): ce + epsilon * (1 - pt)
    expected = F.cross_entropy(z, t, reduction="none") + epsilon * (1 - p_true(z, t))
    close(module("poly1", "none", epsilon=epsilon)(z, t), expected)


def test_class_balanced_ce_equals_torch_weighted_ce_with_cuis_weights():
    z, t = logits_and_labels()
    beta = 0.999
    # Cui et al.'s reference code (numpy), transcribed
    effective_num = 1.0 - np.power(beta, CLASS_COUNTS)
    weights = (1.0 - beta) / np.array(effective_num)
    weights = weights / np.sum(weights) * len(CLASS_COUNTS)
    w = torch.tensor(weights, dtype=torch.float64)
    loss = get("class_balanced_ce")

    def ours(**kw):
        return loss.module(class_counts=CLASS_COUNTS, **kw)(z, t)

    close(ours(reduction="none"), F.cross_entropy(z, t, weight=w, reduction="none"))
    close(ours(reduction="sum"), F.cross_entropy(z, t, weight=w, reduction="sum"))
    # 'mean' is a per-sample mean; torch's weighted 'mean' divides by sum(w_y) instead
    close(ours(), F.cross_entropy(z, t, weight=w, reduction="none").mean())
    close(ours(beta=0.0, reduction="none"), F.cross_entropy(z, t, reduction="none"))
    with pytest.raises(LossParameterError, match="> 0"):
        loss.module(class_counts=[10, 0, 3, 1, 1])
    with pytest.raises(LossInputError, match="entries for"):
        loss.module(class_counts=[10, 3])(z, t)


def test_ldam_equals_the_authors_code():
    z, t = logits_and_labels()
    max_m, s = 0.5, 30.0
    # LDAMLoss of github.com/kaidic/LDAM-DRW, transcribed
    m_list = 1.0 / np.sqrt(np.sqrt(CLASS_COUNTS))
    m_list = torch.tensor(m_list * (max_m / np.max(m_list)), dtype=torch.float64)
    index = torch.zeros_like(z, dtype=torch.bool).scatter_(1, t[:, None], True)
    batch_m = (m_list[None, :] @ index.double().T).view(-1, 1)
    output = torch.where(index, z - batch_m, z)
    expected = F.cross_entropy(s * output, t, reduction="none")
    close(get("ldam").module(class_counts=CLASS_COUNTS, reduction="none")(z, t), expected)


def test_mae_ce_is_the_l1_distance_to_the_one_hot_target():
    z, t = logits_and_labels()
    expected = (F.one_hot(t, K) - F.softmax(z, 1)).abs().sum(1)
    close(module("mae_ce", "none")(z, t), expected)
    close(module("mae_ce", "none")(z, t), 2 * (1 - p_true(z, t)))


@pytest.mark.parametrize("q", [0.7, 0.3, 1.0])
def test_gce_equals_the_paper(q):
    z, t = logits_and_labels()
    close(module("gce", "none", q=q)(z, t), (1 - p_true(z, t) ** q) / q)


def symmetric_ce_reference(z, t, alpha, beta, log_zero):
    """SCELoss of github.com/HanxunH/SCELoss-Reproduce, transcribed, with the one-hot clamp
    at exp(A) (the code's 1e-4 is A = log 1e-4) and without the 1e-7 clamp of the probabilities."""
    ce = F.cross_entropy(z, t, reduction="none")
    pred = F.softmax(z, dim=1)
    label_one_hot = torch.clamp(F.one_hot(t, K).double(), min=np.exp(log_zero), max=1.0)
    rce = -torch.sum(pred * torch.log(label_one_hot), dim=1)
    return alpha * ce + beta * rce


@pytest.mark.parametrize("alpha, beta, A", [(0.1, 1.0, -4.0), (1.0, 0.5, float(np.log(1e-4)))])
def test_sce_equals_the_authors_code(alpha, beta, A):
    z, t = logits_and_labels()
    close(module("sce", "none", alpha=alpha, beta=beta, A=A)(z, t), symmetric_ce_reference(z, t, alpha, beta, A))


# ------------------------------------------------------------------ GLO / TaylorGLO
def test_baikal_equals_the_paper_formula():
    z, t = logits_and_labels()
    x = F.softmax(z, 1)  # the paper's x is the prediction, y the one-hot label
    y = F.one_hot(t, K).double()
    expected = torch.stack([-sum(torch.log(x[i, c]) - y[i, c] / x[i, c] for c in range(K))
                            for i in range(len(t))])
    close(module("baikal", "none")(z, t), expected)
    close(module("baikal", "mean")(z, t), expected.mean())


def lossferatu_taylor(theta, order: int = 3):
    """A TaylorGLO loss as the authors' code evaluates it (LossferatuRunner Taylor.swift and
    fumanchu/utils/lossferatu_loss.py): variables (x = one-hot label, y = softmax), the raw
    coefficients include the factorials, terms with no y are trimmed, center = last two entries,
    loss = mean over the batch of -sum over classes."""
    raw = [theta[2], theta[3] / 2, theta[4] / 6, theta[5], theta[6] / 2, theta[7] / 2]
    center = (theta[0], theta[1])
    # multi-indices (i_x, i_y) with i_x + i_y <= order, enumerated as base-(order+1) numbers, as in Taylor.swift
    indices = [(i // (order + 1), i % (order + 1)) for i in range((order + 1) ** 2)]
    indices = [m for m in indices if sum(m) <= order and m[1] != 0]  # missingZeroPartialTerms(y)
    assert indices == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1)]

    def loss(z, t):
        x = F.one_hot(t, z.shape[1]).double()
        y = F.softmax(z, 1)
        f = sum(c * (x - center[0]) ** ix * (y - center[1]) ** iy for c, (ix, iy) in zip(raw, indices))
        return -f.sum(1)

    return loss


@pytest.mark.parametrize("seed", range(4))
def test_taylor_glo_equals_the_authors_evaluation(seed):
    g = generator(100 + seed)
    theta = (torch.randn(8, generator=g, dtype=torch.float64) * 1.5).tolist()
    params = {f"theta{i}": v for i, v in enumerate(theta)}
    z, t = logits_and_labels(seed=seed)
    expected = lossferatu_taylor(theta)(z, t)
    close(module("taylor_glo", "none", **params)(z, t), expected)
    close(module("taylor_glo", "mean", **params)(z, t), expected.mean())


def test_taylor_glo_defaults_are_the_cross_entropy_expansion():
    z, t = logits_and_labels()
    pt = p_true(z, t)
    close(module("taylor_glo", "none")(z, t), (1 - pt) + (1 - pt) ** 2 / 2)
    # ... whose error against -log(p_t) is the dropped tail sum_{k>=3} (1 - p_t)**k / k
    near = torch.tensor([[4.0, 0.0, 0.0]], dtype=torch.float64)
    ce = F.cross_entropy(near, torch.tensor([0]))
    assert abs(float(module("taylor_glo", "mean")(near, torch.tensor([0])) - ce)) < 1e-3


def test_class_targets_are_checked():
    z, t = logits_and_labels()
    with pytest.raises(LossInputError, match="integer class indices"):
        module("cross_entropy", "mean")(z, t.double())
    with pytest.raises(LossInputError, match="target shape"):
        module("baikal", "mean")(z, t[:, None])
