"""Segmentation losses against kornia and the monai / smp formulas written out (float64)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lossforge.losses import LossInputError

from .helpers import close, generator, module

kornia_losses = pytest.importorskip("kornia.losses")

REDUCTIONS = ("none", "mean")
B, K, H, W = 4, 3, 5, 6


def maps(classes: int = K, seed: int = 0, scale: float = 2.0):
    g = generator(seed)
    z = torch.randn(B, classes, H, W, generator=g, dtype=torch.float64) * scale
    if classes == 1:
        t = torch.randint(0, 2, (B, H, W), generator=g)
    else:
        t = torch.randint(0, classes, (B, H, W), generator=g)
    return z, t


def per_sample(reference, z, t, **kw):
    """A batch-mean reference applied to each sample alone: the unreduced values."""
    return torch.stack([reference(z[i:i + 1], t[i:i + 1], **kw) for i in range(z.shape[0])])


def with_absent_class(t):
    t = t.clone()
    t[0][t[0] == 2] = 1  # sample 0 has no class 2: it must leave the class mean
    return t


# ------------------------------------------------------------------ kornia
@pytest.mark.parametrize("absent", [False, True])
def test_dice_equals_kornia_macro(absent):
    z, t = maps()
    t = with_absent_class(t) if absent else t
    ref = kornia_losses.dice_loss
    close(module("dice", "none")(z, t), per_sample(ref, z, t, average="macro"))
    close(module("dice", "mean")(z, t), ref(z, t, average="macro"))


@pytest.mark.parametrize("absent", [False, True])
@pytest.mark.parametrize("alpha, beta", [(0.3, 0.7), (0.5, 0.5), (0.9, 0.1)])
def test_tversky_equals_kornia(alpha, beta, absent):
    z, t = maps()
    t = with_absent_class(t) if absent else t
    ref = kornia_losses.tversky_loss
    close(module("tversky", "none", alpha=alpha, beta=beta)(z, t), per_sample(ref, z, t, alpha=alpha, beta=beta))
    close(module("tversky", "mean", alpha=alpha, beta=beta)(z, t), ref(z, t, alpha=alpha, beta=beta))


def test_tversky_alpha_weights_false_positives():
    z = torch.tensor([[[[5.0, 5.0, -5.0]]], [[[5.0, 5.0, -5.0]]]], dtype=torch.float64)  # predicts pixels 0, 1
    t = torch.tensor([[[1, 0, 0]], [[1, 1, 1]]])  # sample 0: one false positive; sample 1: one false negative
    fp_heavy = module("tversky", "none", alpha=0.9, beta=0.1)(z, t)
    assert fp_heavy[0] > fp_heavy[1]
    fn_heavy = module("tversky", "none", alpha=0.1, beta=0.9)(z, t)
    assert fn_heavy[0] < fn_heavy[1]


def test_jaccard_equals_kornia_tversky_at_one_one():
    z, t = maps()
    close(module("jaccard", "none")(z, t), per_sample(kornia_losses.tversky_loss, z, t, alpha=1.0, beta=1.0))


def test_log_cosh_dice_is_log_cosh_of_kornia_dice():
    z, t = maps()
    dice = per_sample(kornia_losses.dice_loss, z, t, average="macro")
    close(module("log_cosh_dice", "none")(z, t), torch.log(torch.cosh(dice)))
    close(module("log_cosh_dice", "mean")(z, t), torch.log(torch.cosh(dice)).mean())


def test_lovasz_hinge_equals_kornia():
    z, t = maps(classes=1)
    close(module("lovasz_hinge", "none")(z, t), per_sample(kornia_losses.lovasz_hinge_loss, z, t))
    close(module("lovasz_hinge", "mean")(z, t), kornia_losses.lovasz_hinge_loss(z, t))


def test_lovasz_softmax_equals_kornia_when_every_class_is_present():
    z, t = maps()
    assert all(len(t[i].unique()) == K for i in range(B))
    close(module("lovasz_softmax", "none")(z, t), per_sample(kornia_losses.lovasz_softmax_loss, z, t))


def test_lovasz_softmax_averages_over_present_classes_only():
    z, t = maps()
    t = with_absent_class(t)
    kornia_first = kornia_losses.lovasz_softmax_loss(z[:1], t[:1])
    # kornia: mean over all K classes, an absent class entering with its largest probability
    absent_term = F.softmax(z[:1], 1)[0, 2].max()
    ours = module("lovasz_softmax", "none")(z, t)[0]
    close(ours, (kornia_first * K - absent_term) / (K - 1))


# ------------------------------------------------------------------ formulas written out
def test_focal_tversky_equals_the_smp_formula():
    z, t = maps()
    alpha, beta, gamma = 0.3, 0.7, 0.75
    expected = per_sample(kornia_losses.tversky_loss, z, t, alpha=alpha, beta=beta) ** gamma
    close(module("focal_tversky", "none")(z, t), expected)


def test_squared_dice_equals_the_vnet_formula():
    z, t = maps()
    p = F.softmax(z, 1).flatten(2)
    oh = F.one_hot(t, K).movedim(-1, 1).double().flatten(2)
    score = 2 * (p * oh).sum(2) / ((p**2).sum(2) + (oh**2).sum(2) + 1e-8)
    close(module("squared_dice", "none")(z, t), 1 - score.mean(1))


def monai_generalized_dice(input, target, smooth_nr=1e-5, smooth_dr=1e-5):
    """monai.losses.GeneralizedDiceLoss(softmax=True, w_type='square', batch=False, reduction='none'), transcribed."""
    input = torch.softmax(input, 1)
    target = F.one_hot(target, input.shape[1]).movedim(-1, 1).to(input.dtype)
    reduce_axis = list(range(2, len(input.shape)))
    intersection = torch.sum(target * input, reduce_axis)
    ground_o = torch.sum(target, reduce_axis)
    pred_o = torch.sum(input, reduce_axis)
    denominator = ground_o + pred_o
    w = torch.reciprocal(ground_o * ground_o)
    infs = torch.isinf(w)
    w[infs] = 0.0
    max_values = torch.max(w, dim=1)[0].unsqueeze(dim=1)
    w = w + infs * max_values
    numer = 2.0 * (intersection * w).sum(1, keepdim=True) + smooth_nr
    denom = (denominator * w).sum(1, keepdim=True) + smooth_dr
    return (1.0 - numer / denom).squeeze(1)


@pytest.mark.parametrize("absent", [False, True])
def test_generalized_dice_equals_monai(absent):
    z, t = maps()
    t = with_absent_class(t) if absent else t
    close(module("generalized_dice", "none")(z, t), monai_generalized_dice(z, t))


def test_binary_maps_use_the_sigmoid_foreground():
    z, t = maps(classes=1)
    p = torch.sigmoid(z).flatten(1)
    y = t.double().flatten(1)
    tp, fp, fn = (p * y).sum(1), (p * (1 - y)).sum(1), ((1 - p) * y).sum(1)
    close(module("dice", "none")(z, t), 1 - 2 * tp / (p.sum(1) + y.sum(1) + 1e-8))
    close(module("tversky", "none")(z, t), 1 - tp / (tp + 0.3 * fp + 0.7 * fn + 1e-8))
    close(module("jaccard", "none", smooth=1.0)(z, t), 1 - (tp + 1) / (tp + fp + fn + 1 + 1e-8))


def test_segmentation_inputs_are_checked():
    z, t = maps()
    with pytest.raises(LossInputError, match="target shape"):
        module("dice", "mean")(z, t[:, :-1])
    with pytest.raises(LossInputError, match="class indices"):
        module("dice", "mean")(z, t.double())
    with pytest.raises(LossInputError, match="one logit channel"):
        module("lovasz_hinge", "mean")(z, t)
    with pytest.raises(LossInputError, match="C >= 2"):
        module("lovasz_softmax", "mean")(z[:, :1], t.clamp_max(1))
