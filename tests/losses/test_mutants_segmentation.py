"""Segmentation losses: the functionals' defaults are the modules' documented ones,
input layouts (no spatial axis, one spatial axis, binary maps), present classes and
parameter messages."""
import pytest
import torch
import torch.nn.functional as F

from lossforge.losses import segmentation as seg
from lossforge.losses.errors import LossInputError, LossParameterError

MODULES = [seg.DiceLoss, seg.JaccardLoss, seg.TverskyLoss, seg.FocalTverskyLoss, seg.LogCoshDiceLoss,
           seg.SquaredDiceLoss, seg.GeneralizedDiceLoss, seg.LovaszHingeLoss, seg.LovaszSoftmaxLoss]


def _inputs(cls, shape=(2, 3, 4, 4)):
    g = torch.Generator().manual_seed(0)
    if cls is seg.LovaszHingeLoss:
        x = torch.randn(shape[0], 1, *shape[2:], generator=g)
        return x, torch.randint(0, 2, (shape[0], *shape[2:]), generator=g).float()
    x = torch.randn(*shape, generator=g)
    # class 0 is never a target: the class count must come from the input
    return x, torch.randint(1, shape[1], (shape[0], *shape[2:]), generator=g)


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_functional_defaults_are_the_modules_defaults(cls):
    x, t = _inputs(cls)
    want = cls()(x, t)
    got = cls.functional(x, t)
    assert got.shape == () and torch.equal(got, want)
    assert torch.equal(cls.functional(x, t, reduction="sum"), cls(reduction="sum")(x, t))


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)])
def test_inputs_without_or_with_one_spatial_axis(shape):
    x, t = _inputs(seg.DiceLoss, shape)
    p, oh = seg.probabilities_and_targets(x, t)
    n, c = shape[:2]
    torch.testing.assert_close(p, F.softmax(x, dim=1).reshape(n, c, -1))
    assert oh.shape == p.shape and oh.dtype == x.dtype
    torch.testing.assert_close(oh.sum(dim=1), torch.ones(n, oh.shape[2]))


def test_binary_maps_and_present_classes():
    x = torch.randn(2, 1, 3)
    t = torch.tensor([[1, 0, 1], [0, 0, 0]])
    p, tt = seg.probabilities_and_targets(x, t)
    torch.testing.assert_close(p, torch.sigmoid(x))
    assert tt.dtype == x.dtype and tt.tolist() == [[[1.0, 0.0, 1.0]], [[0.0, 0.0, 0.0]]]
    present = seg.present_classes(tt)
    assert present.dtype == torch.bool and present.tolist() == [[True], [True]]  # the foreground always counts
    multi = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])  # [N=1, K=3, S=2]: class 1 absent
    assert seg.present_classes(multi).tolist() == [[True, False, True]]
    one = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # each class on exactly one pixel
    assert seg.present_classes(one).tolist() == [[True, True]]


def test_input_and_parameter_messages():
    with pytest.raises(LossInputError) as info:
        seg.probabilities_and_targets(torch.zeros(4), torch.zeros(4))
    assert str(info.value) == "input must be [N, C, *spatial] logits, got shape (4,)"
    for kw, name in [({"smooth": -1.0}, "smooth"), ({"eps": -1.0}, "eps")]:
        with pytest.raises(LossParameterError) as info:
            seg.DiceLoss(**kw)
        assert str(info.value) == f"{name} must be >= 0, got -1.0"


def test_smoothing_and_eps_enter_the_overlap_ratio():
    x, t = _inputs(seg.DiceLoss)
    p, oh = seg.probabilities_and_targets(x, t)
    inter, total = (p * oh).sum(dim=2), p.sum(dim=2) + oh.sum(dim=2)
    for smooth, eps in [(0.0, 1e-8), (1.0, 0.5)]:
        score = (2 * inter + smooth) / (total + smooth + eps)
        present = oh.sum(dim=2) > 0
        want = (1 - (score * present).sum(dim=1) / present.sum(dim=1)).mean()
        torch.testing.assert_close(seg.dice_loss(x, t, smooth=smooth, eps=eps), want)
    tp, fp, fn = inter, (p * (1 - oh)).sum(dim=2), ((1 - p) * oh).sum(dim=2)
    index, _ = seg.tversky_index(x, t, 0.3, 0.7, 1.0, 0.5)
    torch.testing.assert_close(index, (tp + 1.0) / (tp + 0.3 * fp + 0.7 * fn + 1.0 + 0.5))


@pytest.mark.parametrize("cls, kw, message", [
    (seg.TverskyLoss, {"alpha": -0.1}, "alpha must be >= 0, got -0.1"),
    (seg.TverskyLoss, {"beta": -0.1}, "beta must be >= 0, got -0.1"),
    (seg.TverskyLoss, {"smooth": -0.1}, "smooth must be >= 0, got -0.1"),
    (seg.FocalTverskyLoss, {"alpha": -0.1}, "alpha must be >= 0, got -0.1"),
    (seg.FocalTverskyLoss, {"eps": -0.1}, "eps must be >= 0, got -0.1"),
    (seg.FocalTverskyLoss, {"gamma": 0.0}, "gamma must be > 0, got 0.0"),
    (seg.GeneralizedDiceLoss, {"smooth_nr": -0.1}, "smooth_nr must be >= 0, got -0.1"),
    (seg.GeneralizedDiceLoss, {"smooth_dr": 0.0}, "smooth_dr must be > 0, got 0.0"),
])
def test_parameter_checks_name_the_parameter(cls, kw, message):
    with pytest.raises(LossParameterError) as info:
        cls(**kw)
    assert str(info.value) == message
    cls(**{k: 0.0 if "must be >= 0" in message else 1.0 for k in kw})  # the bound itself is allowed


# ----------------------------------------------------------------------------- reviewed survivors
def _overlap(x, t):
    p, oh = seg.probabilities_and_targets(x, t)
    present = oh.sum(dim=2) > 0
    return p, oh, lambda score: (1 - (score * present).sum(dim=1) / present.sum(dim=1))


def test_the_functionals_check_their_own_parameters_by_name():
    # the functional forms are called without a module (e.g. by the catalogue's tests)
    x, t = _inputs(seg.GeneralizedDiceLoss)
    with pytest.raises(LossParameterError) as info:
        seg.generalized_dice_loss(x, t, smooth_nr=-0.1)
    assert str(info.value) == "smooth_nr must be >= 0, got -0.1"
    with pytest.raises(LossParameterError) as info:
        seg.generalized_dice_loss(x, t, smooth_dr=0.0)
    assert str(info.value) == "smooth_dr must be > 0, got 0.0"


def test_jaccard_and_squared_dice_take_smooth_and_eps_where_documented():
    x, t = _inputs(seg.JaccardLoss)
    p, oh, loss = _overlap(x, t)
    inter = (p * oh).sum(dim=2)
    for smooth, eps in [(0.0, 0.5), (1.0, 0.5), (1.0, 0.0)]:
        jac = (inter + smooth) / (p.sum(dim=2) + oh.sum(dim=2) - inter + smooth + eps)
        torch.testing.assert_close(seg.jaccard_loss(x, t, smooth=smooth, eps=eps, reduction="none"), loss(jac))
        sq = (2 * inter + smooth) / ((p**2).sum(dim=2) + (oh**2).sum(dim=2) + smooth + eps)
        torch.testing.assert_close(seg.squared_dice_loss(x, t, smooth=smooth, eps=eps, reduction="none"), loss(sq))


@pytest.mark.parametrize("smooth, eps", [(1.0, 1e-8), (0.0, 0.5)])
def test_log_cosh_dice_passes_smooth_and_eps_to_the_dice_loss(smooth, eps):
    x, t = _inputs(seg.LogCoshDiceLoss)
    d = seg.dice_loss(x, t, smooth=smooth, eps=eps, reduction="none")
    assert not torch.allclose(d, seg.dice_loss(x, t, reduction="none"))
    torch.testing.assert_close(seg.log_cosh_dice_loss(x, t, smooth=smooth, eps=eps, reduction="none"),
                               torch.log(torch.cosh(d)))


def test_lovasz_losses_take_inputs_without_a_spatial_axis_and_two_classes():
    g = torch.Generator().manual_seed(3)
    # [N, 1]: one pixel per image, whose Jaccard step is 1: the loss is its hinge error
    z = torch.randn(4, 1, generator=g)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(seg.lovasz_hinge_loss(z, t, reduction="none"), torch.relu(1 - z[:, 0] * (2 * t - 1)))
    # [N, C]: one pixel per image, the present class's error |1 - p| (the only Jaccard step)
    x = torch.randn(4, 3, generator=g)
    c = torch.tensor([0, 2, 1, 2])
    p = F.softmax(x, dim=1)
    torch.testing.assert_close(seg.lovasz_softmax_loss(x, c, reduction="none"), 1 - p[torch.arange(4), c])
    # two classes are enough for the softmax form
    x2 = torch.randn(2, 2, 3, 3, generator=g)
    t2 = torch.randint(0, 2, (2, 3, 3), generator=g)
    assert seg.lovasz_softmax_loss(x2, t2).shape == ()
    assert seg.LovaszSoftmaxLoss()(x2, t2) == seg.lovasz_softmax_loss(x2, t2)


def test_the_class_count_comes_from_the_input_when_the_last_class_is_absent():
    x = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([[0, 1, 1, 0, 2], [2, 2, 0, 1, 0]])  # class 3 is never a target
    p, oh = seg.probabilities_and_targets(x, t)
    assert oh.shape == (2, 4, 5) and oh[:, 3].sum() == 0
    assert seg.dice_loss(x, t).isfinite()


def test_the_binary_maps_class_mask_is_on_the_targets_device():
    t = torch.empty(2, 1, 6, device="meta")
    mask = seg.present_classes(t)
    assert mask.device.type == "meta" and mask.shape == (2, 1) and mask.dtype == torch.bool
