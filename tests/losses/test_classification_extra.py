"""weighted_ce, label_smoothing_ce, ghm_c, zero_one, gini_impurity and sensitivity_specificity
against their established implementations.

References: ``F.cross_entropy(weight=..., label_smoothing=...)``; mmdetection's
``GHMC`` (not installable here: its loop over the bins is transcribed in
``_mmdet_ghmc``); ``sklearn.metrics.zero_one_loss``; the review's
``gini_impurity.py`` (numpy) and scikit-learn's fitted ``DecisionTreeClassifier``
(the Gini impurities of a split's children); Brosch et al.'s formula written
per sample and class in numpy (sensitivity_specificity).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import zero_one_loss
from sklearn.tree import DecisionTreeClassifier

from lossforge.losses import LossInputError, LossParameterError, get

from .helpers import C, assert_reductions, assert_same, generator

ALL = ["weighted_ce", "label_smoothing_ce", "ghm_c", "zero_one", "gini_impurity", "sensitivity_specificity"]
WEIGHT = [0.5, 2.0, 1.0, 3.0, 0.25]


def logits(n=20, classes=C, seed=0, scale=2.0, spatial=(), dtype=torch.float64):
    g = generator(seed)
    return (torch.randn(n, classes, *spatial, generator=g, dtype=dtype) * scale,
            torch.randint(0, classes, (n, *spatial), generator=g))


@pytest.mark.parametrize("spatial", [(), (3, 2)])
def test_weighted_ce_equals_torch(spatial):
    z, t = logits(spatial=spatial)
    w = torch.tensor(WEIGHT, dtype=torch.float64)
    ours = get("weighted_ce")
    assert_same(ours.module(weight=WEIGHT, reduction="none"),
                lambda x, y: F.cross_entropy(x, y, weight=w, reduction="none"), z, t, wrt=1)
    torch.testing.assert_close(ours.module(weight=w, reduction="sum")(z, t), F.cross_entropy(z, t, weight=w,
                                                                                               reduction="sum"))
    # torch's weighted 'mean' divides by the weights of the targets; this 'mean' by the number of samples
    torch.testing.assert_close(ours.module(weight=w, reduction="sum")(z, t) / w[t].sum(),
                               F.cross_entropy(z, t, weight=w))
    torch.testing.assert_close(ours.module(weight=w)(z, t),
                               F.cross_entropy(z, t, weight=w, reduction="sum") / t.numel())
    torch.testing.assert_close(ours.module()(z, t), F.cross_entropy(z, t))  # no weight: plain cross-entropy


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_ce_equals_torch(eps):
    z, t = logits()
    assert_same(get("label_smoothing_ce").module(label_smoothing=eps, reduction="none"),
                lambda x, y: F.cross_entropy(x, y, label_smoothing=eps, reduction="none"), z, t, wrt=1)
    assert get("label_smoothing_ce").params["label_smoothing"] == 0.1
    assert get("label_smoothing_ce").expr is None and get("label_smoothing_ce").expression(label_smoothing=0.0) \
        == get("cross_entropy").expr


def _mmdet_ghmc(pred, target, bins=10, momentum=0.0, acc_sum=None):
    """mmdetection's GHMC.forward (loss_weight 1, every label weight 1), as a loop over the bins."""
    edges = [i / bins for i in range(bins + 1)]
    edges[-1] += 1e-6
    weights = torch.zeros_like(pred)
    g = (pred.sigmoid().detach() - target).abs()
    tot = max(float(pred.numel()), 1.0)
    n = 0
    for i in range(bins):
        inds = (g >= edges[i]) & (g < edges[i + 1])
        num_in_bin = inds.sum().item()
        if num_in_bin > 0:
            if momentum > 0:
                acc_sum[i] = momentum * acc_sum[i] + (1 - momentum) * num_in_bin
                weights[inds] = tot / acc_sum[i]
            else:
                weights[inds] = tot / num_in_bin
            n += 1
    if n > 0:
        weights = weights / n
    return F.binary_cross_entropy_with_logits(pred, target, weights, reduction="sum") / tot


@pytest.mark.parametrize("bins", [10, 4, 30])
def test_ghm_c_equals_mmdetection(bins):
    g = generator(1)
    z = torch.randn(200, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, 2, (200,), generator=g).to(torch.float64)
    assert_same(get("ghm_c").module(bins=bins), lambda x, y: _mmdet_ghmc(x, y, bins), z, t, wrt=1)
    spatial = z.reshape(8, 25)  # dense predictions: the histogram is over every element
    torch.testing.assert_close(get("ghm_c").module(bins=bins)(spatial, t.reshape(8, 25)), _mmdet_ghmc(z, t, bins))


def test_ghm_c_momentum_keeps_a_running_count_like_mmdetection():
    module = get("ghm_c").module(momentum=0.75)
    acc = [0.0] * 10
    for seed in range(3):
        g = generator(seed)
        z = torch.randn(100, generator=g, dtype=torch.float64) * 3
        t = torch.randint(0, 2, (100,), generator=g).to(torch.float64)
        torch.testing.assert_close(module(z, t), _mmdet_ghmc(z, t, momentum=0.75, acc_sum=acc))
    torch.testing.assert_close(module.acc_sum, torch.tensor(acc, dtype=torch.float64))
    with pytest.raises(LossParameterError, match="running count"):
        from lossforge.losses.classification_extra import ghm_c_loss
        ghm_c_loss(z, t, momentum=0.5)


def test_zero_one_equals_sklearn_and_has_zero_gradient():
    z, t = logits(n=50)
    out = get("zero_one").module(reduction="none")(z, t)
    pred = z.argmax(1).numpy()
    for i in range(50):
        assert out[i].item() == zero_one_loss(t[i:i + 1].numpy(), pred[i:i + 1], normalize=False)
    assert get("zero_one").module()(z, t).item() == pytest.approx(zero_one_loss(t.numpy(), pred))
    x = z.clone().requires_grad_(True)
    get("zero_one").module()(x, t).backward()
    assert torch.equal(x.grad, torch.zeros_like(z))


def _review_gini(labels):  # the review's gini_impurity.py
    _, counts = np.unique(labels, return_counts=True)
    return 1.0 - sum((c / len(labels)) ** 2 for c in counts)


def test_gini_impurity_of_one_child_is_the_review_code():
    _, t = logits(n=31, seed=2)
    out = get("gini_impurity").module()(torch.zeros(31, 1, dtype=torch.float64), t)
    assert out.item() == pytest.approx(_review_gini(t.numpy()))


def test_gini_impurity_of_a_hard_split_is_sklearns_split_criterion():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 1))
    y = (X[:, 0] + rng.normal(scale=0.7, size=120) > 0).astype(int) + (X[:, 0] > 1).astype(int)
    tree = DecisionTreeClassifier(max_depth=1, criterion="gini").fit(X, y).tree_
    left = X[:, 0] <= tree.threshold[0]
    n_l, n_r = tree.n_node_samples[1], tree.n_node_samples[2]
    expected = (n_l * tree.impurity[1] + n_r * tree.impurity[2]) / 120
    route = torch.tensor(np.where(left[:, None], [[60.0, -60.0]], [[-60.0, 60.0]]), dtype=torch.float64)
    out = get("gini_impurity").module()(route, torch.tensor(y))
    assert out.item() == pytest.approx(expected, abs=1e-12)


def test_gini_impurity_gradient_matches_finite_differences():
    z = torch.randn(9, 3, generator=generator(3), dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 0, 1, 1, 2, 2, 0])
    assert torch.autograd.gradcheck(lambda x: get("gini_impurity").module(reduction="none")(x, t), (z,))


def _brosch(p, t, r, eps=1e-8):
    err = (t - p) ** 2
    sens = (err * t).sum(-1) / (t.sum(-1) + eps)
    spec = (err * (1 - t)).sum(-1) / ((1 - t).sum(-1) + eps)
    return r * sens + (1 - r) * spec


@pytest.mark.parametrize("r", [0.05, 0.5])
def test_sensitivity_specificity_equals_the_formula(r):
    z, t = logits(n=6, classes=3, spatial=(4, 5), seed=4)
    t[:, 0, 0] = 0  # keep class 0 present; class 2 absent in sample 0
    t[0] = torch.where(t[0] == 2, torch.ones_like(t[0]), t[0])

    def theirs(x, y):
        p = F.softmax(x, 1).flatten(2)
        onehot = F.one_hot(y.flatten(1), 3).transpose(1, 2).to(x.dtype)
        per_class = _brosch(p, onehot, r)
        present = (onehot.sum(-1) > 0).to(x.dtype)
        return (per_class * present).sum(1) / present.sum(1)

    assert_same(get("sensitivity_specificity").module(r=r, reduction="none"), theirs, z, t, wrt=1)
    zb = torch.randn(6, 1, 4, 5, generator=generator(5), dtype=torch.float64)  # binary map: sigmoid
    tb = torch.randint(0, 2, (6, 4, 5), generator=generator(6)).to(torch.float64)
    expected = _brosch(torch.sigmoid(zb).flatten(1), tb.flatten(1), r)
    torch.testing.assert_close(get("sensitivity_specificity").module(r=r, reduction="none")(zb, tb), expected)


def _args(name, dtype=torch.float64, scale=2.0):
    if name == "ghm_c":
        z, t = logits(n=12, classes=1, dtype=dtype, scale=scale)
        return z[:, 0], (t[:] * 0 + torch.arange(12) % 2).to(dtype)
    if name == "gini_impurity":
        return logits(n=12, classes=3, dtype=dtype, scale=scale)[0], torch.arange(12) % C
    if name == "sensitivity_specificity":
        return logits(n=12, classes=3, spatial=(4, 4), dtype=dtype, scale=scale)
    return logits(n=12, dtype=dtype, scale=scale)


@pytest.mark.parametrize("name", ALL)
def test_reductions(name):
    assert_reductions(get(name), _args(name), 12)


@pytest.mark.parametrize("name", ALL)
def test_shape_mismatch_is_a_clear_error(name):
    z, t = _args(name)
    with pytest.raises(LossInputError, match="shape"):
        get(name).module()(z, t[:-1])


def test_weight_and_target_errors():
    z, t = logits()
    with pytest.raises(LossInputError, match="5 classes"):
        get("weighted_ce").module(weight=[1.0, 2.0])(z, t)
    with pytest.raises(LossParameterError, match="non-negative"):
        get("weighted_ce").module(weight=[1.0, -2.0, 1, 1, 1])
    with pytest.raises(LossInputError, match="0/1"):
        get("ghm_c").module()(z[:, 0], z[:, 1])
    with pytest.raises(LossParameterError, match="bins"):
        get("ghm_c").module(bins=2.5)


@pytest.mark.parametrize("name", ALL)
def test_float32_extreme_logits_are_finite(name):
    for scale in (1e4, 0.0):
        z, t = _args(name, dtype=torch.float32, scale=scale)
        z = z.clone().requires_grad_(True)
        kwargs = {"weight": WEIGHT} if name == "weighted_ce" else {}
        out = get(name).module(**kwargs)(z, t)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(z.grad).all(), (name, scale, out)
