"""Binary losses against torch, scikit-learn, kornia and the torchvision focal formula (float64)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lossforge.losses import LossInputError

from .helpers import close, generator, module

kornia_losses = pytest.importorskip("kornia.losses")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

REDUCTIONS = ("none", "mean")


def logits_and_labels(n: int = 40, scale: float = 3.0, seed: int = 0):
    g = generator(seed)
    z = torch.randn(n, generator=g, dtype=torch.float64) * scale
    t = torch.randint(0, 2, (n,), generator=g).to(torch.float64)
    return z, t


# ------------------------------------------------------------------ cross-entropy family
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_equals_torch_including_p_near_0_and_1(reduction):
    z, t = logits_and_labels()
    p = torch.sigmoid(z)
    p[:4] = torch.tensor([0.0, 1e-12, 1 - 1e-12, 1.0], dtype=torch.float64)
    t[:4] = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # confidently wrong: torch clamps log at -100
    out = module("bce", reduction)(p, t)
    close(out, F.binary_cross_entropy(p, t, reduction=reduction))
    assert torch.isfinite(out).all()


def test_bce_accepts_soft_targets():
    p = torch.tensor([0.2, 0.7], dtype=torch.float64)
    t = torch.tensor([0.3, 0.9], dtype=torch.float64)
    close(module("bce", "none")(p, t), F.binary_cross_entropy(p, t, reduction="none"))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [1.0, 3.0])
def test_bce_with_logits_equals_torch(pos_weight, reduction):
    z, t = logits_and_labels()
    expected = F.binary_cross_entropy_with_logits(z, t, pos_weight=torch.tensor(pos_weight, dtype=torch.float64),
                                                  reduction=reduction)
    close(module("bce_with_logits", reduction, pos_weight=pos_weight)(z, t), expected)


def test_bce_with_logits_is_finite_for_large_logits_in_float32():
    z = torch.tensor([100.0, -100.0, 60.0, -60.0], requires_grad=True)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0])
    out = module("bce_with_logits", "none")(z, t)
    close(out.double(), [100.0, 100.0, 0.0, 0.0], atol=1e-6, rtol=1e-6)
    out.sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("beta", [0.5, 0.8, 0.1])
def test_balanced_bce_equals_weighted_torch_bce(beta):
    z, t = logits_and_labels()
    weight = beta * t + (1 - beta) * (1 - t)
    close(module("balanced_bce", "none", beta=beta)(z, t),
          F.binary_cross_entropy_with_logits(z, t, weight=weight, reduction="none"))


# ------------------------------------------------------------------ margin losses
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin_equals_torch(reduction):
    z, t = logits_and_labels()
    s = 2 * t - 1
    close(module("soft_margin", reduction)(z, s), F.soft_margin_loss(z, s, reduction=reduction))


def test_margin_losses_reject_zero_one_targets():
    z, t = logits_and_labels()
    t[0], t[1] = 0.0, 1.0
    for name in ("soft_margin", "hinge", "squared_hinge", "modified_huber", "exponential"):
        with pytest.raises(LossInputError, match="-1 and \\+1"):
            module(name, "mean")(z, t)


def _sgd_losses():
    return pytest.importorskip("sklearn.linear_model._sgd_fast")


@pytest.mark.parametrize("margin", [1.0, 2.0])
def test_hinge_equals_sklearn(margin):
    z, t = logits_and_labels()
    s = 2 * t - 1
    hinge = _sgd_losses().Hinge(margin)
    per_element = [hinge.py_loss(zi, si) for zi, si in zip(z.tolist(), s.tolist())]
    close(module("hinge", "none", margin=margin)(z, s), per_element)
    if margin == 1.0:
        close(module("hinge", "mean")(z, s), sklearn_metrics.hinge_loss(s.numpy(), z.numpy()))


def test_squared_hinge_equals_sklearn_and_torch_multi_margin():
    z, t = logits_and_labels()
    s = 2 * t - 1
    sq = _sgd_losses().SquaredHinge(1.0)
    ours = module("squared_hinge", "none")(z, s)
    close(ours, [sq.py_loss(zi, si) for zi, si in zip(z.tolist(), s.tolist())])
    # Two classes with scores (-z/2, z/2): F.multi_margin_loss(p=2) = max(0, 1 - y z)**2 / 2.
    scores = torch.stack([-z / 2, z / 2], dim=1)
    close(ours, 2 * F.multi_margin_loss(scores, t.long(), p=2, reduction="none"))


def test_modified_huber_equals_sklearn():
    z, t = logits_and_labels(scale=3.0)
    s = 2 * t - 1
    mh = _sgd_losses().ModifiedHuber()
    expected = [mh.py_loss(zi, si) for zi, si in zip(z.tolist(), s.tolist())]
    close(module("modified_huber", "none")(z, s), expected)
    assert ((s * z) < -1).any() and ((s * z) > 1).any()  # all three pieces


def test_exponential_equals_sklearn():
    from sklearn._loss.loss import ExponentialLoss

    z, t = logits_and_labels(scale=2.0)
    expected = ExponentialLoss().loss(y_true=t.numpy(), raw_prediction=z.numpy())
    close(module("exponential", "none")(z, 2 * t - 1), expected)


# ------------------------------------------------------------------ sigmoid focal
def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss (v0.29), written out: torchvision cannot be installed here."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.75, 1.0), (-1.0, 2.0), (0.25, 0.0), (-1.0, 0.5)])
def test_sigmoid_focal_equals_torchvision_and_kornia(alpha, gamma, reduction):
    z, t = logits_and_labels()
    ours = module("sigmoid_focal", reduction, alpha=alpha, gamma=gamma)(z, t)
    close(ours, torchvision_sigmoid_focal_loss(z, t, alpha, gamma, reduction))
    kornia = kornia_losses.binary_focal_loss_with_logits(z[:, None], t[:, None], alpha=None if alpha < 0 else alpha,
                                                         gamma=gamma, reduction=reduction)
    close(ours, kornia.squeeze(1) if reduction == "none" else kornia)


def test_sigmoid_focal_alpha_weights_the_positives():
    z = torch.zeros(2, dtype=torch.float64)
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    out = module("sigmoid_focal", "none", alpha=0.25)(z, t)
    close(out[0] / out[1], 0.25 / 0.75)
    unweighted = module("sigmoid_focal", "none", alpha=-1)(z, t)
    close(unweighted, torchvision_sigmoid_focal_loss(z, t, alpha=-1))
    close(unweighted[0], unweighted[1])


def test_sigmoid_focal_gradient_is_finite_when_saturated():
    z = torch.tensor([40.0, -40.0, 0.3], requires_grad=True)  # sigmoid(40) == 1 in float32
    t = torch.tensor([1.0, 0.0, 1.0])
    module("sigmoid_focal", "sum", gamma=0.5)(z, t).backward()
    assert torch.isfinite(z.grad).all()
