"""Metric-learning losses against torch.nn.functional, pytorch-metric-learning and the review's code.

References: ``F.triplet_margin_loss`` and ``F.cosine_embedding_loss`` (triplet,
cosine_embedding); pytorch-metric-learning 2.9 ``NTXentLoss``, ``ArcFaceLoss``,
``CosFaceLoss`` (nt_xent, info_nce, arcface, cosface); for contrastive and
text_image_matching the review repository's numpy / loop code, transcribed
here as plain loops over the pairs (``_contrastive_reference``,
``_matching_reference``); center loss from Wen et al.'s eq. 2.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossforge.losses import LossInputError, LossParameterError, get
from lossforge.losses.embedding import pairs_from_labels, triplets_from_labels

from .helpers import EMB_CLASSES, EMB_DIM, assert_reductions, assert_same, balanced_labels, build, generator

pml = pytest.importorskip("pytorch_metric_learning.losses")

ALL = ["contrastive", "cosine_embedding", "triplet", "nt_xent", "info_nce", "arcface", "cosface", "center",
       "text_image_matching"]


def emb(n=12, d=EMB_DIM, seed=0, scale=1.0, dtype=torch.float64):
    return torch.randn(n, d, generator=generator(seed), dtype=dtype) * scale


# ------------------------------------------------------------------ torch.nn.functional
@pytest.mark.parametrize("margin, p, swap", [(1.0, 2, False), (0.3, 1, False), (2.0, 2, True), (1.0, 3, True)])
def test_triplet_equals_torch(margin, p, swap):
    a, pos, neg = emb(seed=1), emb(seed=2), emb(seed=3)
    ours = build(get("triplet"), reduction="none", margin=margin, p=p, swap=swap)
    torch.testing.assert_close(ours(a, pos, neg), F.triplet_margin_loss(a, pos, neg, margin=margin, p=p, swap=swap,
                                                                         reduction="none"))
    assert_same(lambda *x: ours(*x).sum(),
                lambda *x: F.triplet_margin_loss(*x, margin=margin, p=p, swap=swap, reduction="sum"), a, pos, neg)


@pytest.mark.parametrize("margin", [0.0, 0.5, -0.3])
def test_cosine_embedding_equals_torch(margin):
    x1, x2 = emb(seed=4), emb(seed=5)
    y = torch.tensor([1, -1] * 6)
    ours = build(get("cosine_embedding"), reduction="none", margin=margin)
    torch.testing.assert_close(ours(x1, x2, y), F.cosine_embedding_loss(x1, x2, y, margin=margin, reduction="none"))
    assert_same(lambda a, b: ours(a, b, y).sum(),
                lambda a, b: F.cosine_embedding_loss(a, b, y, margin=margin, reduction="sum"), x1, x2)


# ------------------------------------------------------------------ pytorch-metric-learning
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_nt_xent_equals_pytorch_metric_learning(temperature):
    x, labels = emb(n=12), balanced_labels(12)  # every label 3 times: PML's mean over pairs = the mean over anchors
    ours = build(get("nt_xent"), temperature=temperature)
    assert_same(lambda e: ours(e, labels), lambda e: pml.NTXentLoss(temperature=temperature)(e, labels), x)


def test_nt_xent_two_views_is_simclr():
    # SimCLR: 2N views, each anchor's one positive is its other view, the 2N - 2 others are negatives.
    z = emb(n=8, seed=6)
    labels = torch.arange(4).repeat(2)
    s = F.normalize(z, dim=1) @ F.normalize(z, dim=1).T / 0.5
    s = s.masked_fill(torch.eye(8, dtype=torch.bool), -math.inf)
    partner = (torch.arange(8) + 4) % 8
    simclr = torch.logsumexp(s, 1) - s[torch.arange(8), partner]
    torch.testing.assert_close(get("nt_xent").module(temperature=0.5, reduction="none")(z, labels), simclr)


def test_info_nce_equals_pytorch_metric_learning_with_reference_embeddings():
    q, k = emb(n=10, seed=7), emb(n=10, seed=8)
    labels = torch.arange(10)
    ours = get("info_nce").module(temperature=0.2)
    theirs = pml.NTXentLoss(temperature=0.2)
    # PML passes no gradient to ref_emb: compare the query's gradient with PML, both with the matrix form
    assert_same(lambda a: ours(a, k), lambda a: theirs(a, labels, ref_emb=k, ref_labels=labels.clone()), q)
    # (a clone: PML drops the diagonal pairs when ref_labels is the labels object itself)

    def matrix_form(a, b):
        return F.cross_entropy(F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.2, labels)

    assert_same(lambda a, b: ours(a, b), matrix_form, q, k)


@pytest.mark.parametrize("name, pml_class, margin", [("arcface", "ArcFaceLoss", 28.6), ("arcface", "ArcFaceLoss", 60.0),
                                                     ("cosface", "CosFaceLoss", 0.35), ("cosface", "CosFaceLoss", 0.1)])
def test_margin_softmax_losses_equal_pytorch_metric_learning(name, pml_class, margin):
    x, labels = emb(n=16, seed=9), torch.randint(0, EMB_CLASSES, (16,), generator=generator(10))
    ours = build(get(name), margin=margin, scale=16.0).double()
    theirs = getattr(pml, pml_class)(num_classes=EMB_CLASSES, embedding_size=EMB_DIM, margin=margin, scale=16.0)
    theirs.W.data = ours.W.data.clone()
    assert ours.W.shape == theirs.W.shape == (EMB_DIM, EMB_CLASSES)
    assert ours.W.requires_grad and [n for n, _ in ours.named_parameters()] == ["W"]

    def run(module):
        e = x.clone().requires_grad_(True)
        module.zero_grad()
        out = module(e, labels)
        out.backward()
        return out.detach(), e.grad, module.W.grad.clone()

    for a, b in zip(run(ours), run(theirs)):
        torch.testing.assert_close(a, b)
    if name == "arcface" and margin == 60.0:  # some angles beyond pi - m: the linear continuation
        cos = F.normalize(x, dim=1) @ F.normalize(ours.W, dim=0)
        assert (cos.gather(1, labels[:, None]) < -math.cos(math.radians(60))).any()


def test_center_loss_is_half_the_squared_distance_to_the_class_centre():
    x, labels = emb(n=10, seed=11), torch.randint(0, EMB_CLASSES, (10,), generator=generator(12))
    module = build(get("center"), reduction="none").double()
    assert module.centers.shape == (EMB_CLASSES, EMB_DIM) and module.centers.requires_grad
    c = module.centers.detach()
    expected = torch.tensor([0.5 * float(((x[i] - c[labels[i]]) ** 2).sum()) for i in range(10)], dtype=torch.float64)
    torch.testing.assert_close(module(x, labels), expected)
    # gradients: x - c_y for the embedding, and -(sum over the class's samples) for its centre
    e = x.clone().requires_grad_(True)
    module(e, labels).sum().backward()
    torch.testing.assert_close(e.grad, x - c[labels])
    for k in range(EMB_CLASSES):
        torch.testing.assert_close(module.centers.grad[k], -(x - c[labels])[labels == k].sum(0))


# ------------------------------------------------------------------ the review's code
def _contrastive_reference(x1, x2, y, margin):
    d = np.linalg.norm(x1 - x2, axis=1)
    return y * d**2 + (1 - y) * np.maximum(0, margin - d) ** 2


def test_contrastive_equals_the_review_code_and_its_example():
    x1 = torch.tensor([[1.0, 2.0], [0.5, 1.5], [3.0, 3.0]], dtype=torch.float64)
    x2 = torch.tensor([[1.2, 2.1], [2.0, 2.5], [2.5, 2.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    # D = sqrt(0.05), sqrt(3.25), sqrt(1.25): 0.05 + max(0, 1 - 1.803)^2 = 0 + 1.25
    assert get("contrastive").module()(x1, x2, y).item() == pytest.approx((0.05 + 0 + 1.25) / 3)
    a, b = emb(seed=13), emb(seed=14) * 0.3
    y = torch.tensor([1.0, 0.0] * 6, dtype=torch.float64)
    for margin in (1.0, 4.0):
        out = get("contrastive").module(margin=margin, reduction="none")(a, b, y)
        torch.testing.assert_close(out, torch.from_numpy(_contrastive_reference(a.numpy(), b.numpy(), y.numpy(),
                                                                                margin)))
    # gradient: 2 (x1 - x2) for similar pairs, -2 (m - D)(x1 - x2)/D for dissimilar ones inside the margin
    e = a.clone().requires_grad_(True)
    get("contrastive").module(margin=4.0, reduction="sum")(e, b, y).backward()
    d = (a - b).norm(dim=1, keepdim=True)
    expected = torch.where(y[:, None] > 0, 2 * (a - b), -2 * torch.clamp(4.0 - d, min=0) * (a - b) / d)
    torch.testing.assert_close(e.grad, expected)


def _matching_reference(images, texts, margin):
    s = F.normalize(images, dim=1) @ F.normalize(texts, dim=1).T
    n = len(s)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total = total + torch.clamp(margin - s[i, i] + s[i, j], min=0)
                total = total + torch.clamp(margin - s[i, i] + s[j, i], min=0)
    return total / (n * (n - 1))


@pytest.mark.parametrize("margin", [0.2, 0.7])
def test_text_image_matching_equals_the_review_code(margin):
    images, texts = emb(n=7, seed=15), emb(n=7, seed=16)
    assert_same(lambda i, t: get("text_image_matching").module(margin=margin)(i, t),
                lambda i, t: _matching_reference(i, t, margin), images, texts)


# ------------------------------------------------------------------ batches into pairs and triplets
def test_pairs_and_triplets_from_labels():
    x, labels = emb(n=6), torch.tensor([0, 0, 1, 1, 1, 2])
    a, b, same = pairs_from_labels(x, labels)
    assert len(a) == 15 and int(same.sum()) == 1 + 3
    a, p, n = triplets_from_labels(x, labels)
    # anchors of class 0: 2 x 1 positive x 4 negatives; class 1: 3 x 2 x 3; class 2: none
    assert len(a) == 2 * 4 + 3 * 2 * 3
    rows = {tuple(r.tolist()) for r in x}
    assert all(tuple(r.tolist()) in rows for r in torch.cat([a, p, n]))
    out = get("triplet").module()(a, p, n)
    assert torch.isfinite(out)


# ------------------------------------------------------------------ contract: reductions, shapes, float32
def _args(name, n=12, dtype=torch.float64, seed=20):
    x, y = emb(n=n, seed=seed, dtype=dtype), emb(n=n, seed=seed + 1, dtype=dtype)
    if name in ("contrastive",):
        return (x, y, (torch.arange(n) % 2).to(dtype))
    if name == "cosine_embedding":
        return (x, y, 1 - 2 * (torch.arange(n) % 2))
    if name == "triplet":
        return (x, y, emb(n=n, seed=seed + 2, dtype=dtype))
    if name in ("info_nce", "text_image_matching"):
        return (x, y)
    return (x, balanced_labels(n))


@pytest.mark.parametrize("name", ALL)
def test_reductions(name):
    assert_reductions(get(name), _args(name), 12)


@pytest.mark.parametrize("name", ALL)
def test_shape_mismatch_is_a_clear_error(name):
    first, second, *rest = _args(name)
    module = build(get(name))
    with pytest.raises(LossInputError, match="shape|differ|\\[N"):
        module(first, second[:-1], *rest)
    with pytest.raises(LossInputError, match="\\[N, D\\]|shape"):
        module(first[0], second[0], *[r[0] for r in rest])


def test_label_and_parameter_errors():
    x = emb(n=4)
    with pytest.raises(LossInputError, match="integer class indices"):
        get("nt_xent").module()(x, torch.zeros(4))
    with pytest.raises(LossInputError, match="num_classes=4"):
        build(get("arcface"))(x, torch.tensor([0, 1, 2, 7]))
    with pytest.raises(LossInputError, match="embedding_size=8"):
        build(get("cosface"))(emb(n=4, d=3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(LossParameterError, match="needs num_classes"):
        get("arcface").module()
    with pytest.raises(LossParameterError, match="degrees"):
        build(get("arcface"), margin=100)
    with pytest.raises(LossInputError, match="-1 and \\+1"):
        get("cosine_embedding").module()(x, x, torch.tensor([0, 1, 1, 0]))
    with pytest.raises(LossParameterError, match="temperature"):
        get("nt_xent").module(temperature=0)


@pytest.mark.parametrize("name", ALL)
def test_float32_identical_and_huge_embeddings_are_finite(name):
    for scale, same in ((1.0, True), (1e4, False), (1e-8, True)):
        args = list(_args(name, dtype=torch.float32))
        args[0] = args[0] * scale
        if same:  # identical embeddings: every pair (and view) the same point
            args[1] = args[0].clone() if args[1].is_floating_point() and args[1].dim() == 2 else args[1]
        if name == "triplet" and same:
            args[2] = args[0].clone()
        first = args[0].detach().requires_grad_(True)
        out = build(get(name))(first, *args[1:])
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(first.grad).all(), (name, scale, out, first.grad)
