"""Box losses against the papers' formulas.

torchvision cannot be installed next to this project's torch wheel (its wheels
are built against another torch), so these tests do not call torchvision.  The
checks are (1) worked examples whose values are computed by hand in the
comments from the papers' definitions, and (2) a scalar, box-by-box Python
transcription of each paper's formula (``_reference`` below, with torchvision's
eps placement: eps added to the union and to the enclosing diagonal, the CIoU
trade-off weight alpha not differentiated), compared on random float64 boxes.
Gradients are checked against finite differences (``torch.autograd.gradcheck``).
"""
from __future__ import annotations

import math

import pytest
import torch

from lossforge.losses import LossInputError, get

from .helpers import assert_reductions, generator, random_boxes

BOX_LOSSES = ["iou", "giou", "diou", "ciou", "eiou", "siou", "alpha_iou"]
EPS = 1e-7


def _reference(name: str, a, b, alpha: float = 3.0, theta: float = 4.0) -> float:
    """One box pair, plain floats, straight from the papers."""
    x1, y1, x2, y2 = a
    u1, v1, u2, v2 = b
    w, h, wt, ht = x2 - x1, y2 - y1, u2 - u1, v2 - v1
    inter = max(0.0, min(x2, u2) - max(x1, u1)) * max(0.0, min(y2, v2) - max(y1, v1))
    union = w * h + wt * ht - inter
    iou = inter / (union + EPS)
    cw, ch = max(x2, u2) - min(x1, u1), max(y2, v2) - min(y1, v1)
    dx, dy = (u1 + u2 - x1 - x2) / 2, (v1 + v2 - y1 - y2) / 2
    rho2, c2 = dx * dx + dy * dy, cw * cw + ch * ch + EPS
    if name == "iou":
        return 1 - iou
    if name == "alpha_iou":
        return 1 - iou**alpha
    if name == "giou":  # Rezatofighi et al., Alg. 1
        return 1 - iou + (cw * ch - union) / (cw * ch + EPS)
    if name == "diou":  # Zheng et al., eq. 6
        return 1 - iou + rho2 / c2
    if name == "ciou":  # Zheng et al., eqs. 9-11
        v = 4 / math.pi**2 * (math.atan(wt / ht) - math.atan(w / h)) ** 2
        return 1 - iou + rho2 / c2 + v / (1 - iou + v + EPS) * v
    if name == "eiou":  # Zhang et al., eq. 8
        return 1 - iou + rho2 / c2 + (w - wt) ** 2 / (cw * cw + EPS) + (h - ht) ** 2 / (ch * ch + EPS)
    if name == "siou":  # Gevorgyan: angle, distance and shape costs
        sigma = math.hypot(dx, dy)
        sin_alpha = abs(dy) / sigma if abs(dx) / sigma <= math.sqrt(0.5) else abs(dx) / sigma
        angle = 1 - 2 * math.sin(math.asin(sin_alpha) - math.pi / 4) ** 2
        gamma = 2 - angle
        distance = sum(1 - math.exp(-gamma * (d / (c + EPS)) ** 2) for d, c in ((dx, cw), (dy, ch)))
        shape = sum((1 - math.exp(-abs(p - q) / max(p, q))) ** theta for p, q in ((w, wt), (h, ht)))
        return 1 - iou + (distance + shape) / 2
    raise AssertionError(name)


def boxes(n=40, seed=0, dtype=torch.float64):
    g = generator(seed)
    target = random_boxes(n, g, dtype)
    moved = target + torch.randn(n, 4, generator=g, dtype=dtype) * 0.8
    return torch.cat([moved[:, :2], torch.maximum(moved[:, 2:], moved[:, :2] + 0.1)], 1), target


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_values_equal_the_papers_formulas_on_random_boxes(name):
    a, b = boxes()
    out = get(name).module(reduction="none")(a, b)
    expected = torch.tensor([_reference(name, p.tolist(), q.tolist()) for p, q in zip(a, b)], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    assert (out > 0).all()


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_gradients_match_finite_differences(name):
    a, b = boxes(n=6, seed=1)
    a.requires_grad_(True)
    module = get(name).module(reduction="sum")
    if name == "ciou":  # alpha is a constant in the gradient: check against the formula with alpha frozen
        from lossforge.losses.boxes import BoxGeometry, aspect_term
        g = BoxGeometry(a.detach(), b, EPS)
        v = 4 / math.pi**2 * (aspect_term(g.wg, g.hg, EPS) - aspect_term(g.w, g.h, EPS)) ** 2
        alpha = v / (1 - g.iou + v + EPS)

        def frozen(x):
            gx = BoxGeometry(x, b, EPS)
            vx = 4 / math.pi**2 * (aspect_term(gx.wg, gx.hg, EPS) - aspect_term(gx.w, gx.h, EPS)) ** 2
            return (1 - gx.iou + gx.centre_distance2() / gx.diagonal2() + alpha * vx).sum()

        (grad,) = torch.autograd.grad(module(a, b), a)
        (expected,) = torch.autograd.grad(frozen(a), a)
        torch.testing.assert_close(grad, expected)
        assert torch.autograd.gradcheck(frozen, (a,))
    else:
        assert torch.autograd.gradcheck(lambda x: module(x, b), (a,))


def test_worked_examples():
    # A = (0,0,2,2), B = (1,1,3,3): overlap 1, union 7, IoU 1/7; enclosing box (0,0,3,3), area 9,
    # diagonal^2 18; centres (1,1) and (2,2), rho^2 = 2; same aspect ratio, so v = 0.
    a, b = torch.tensor([[0.0, 0, 2, 2]], dtype=torch.float64), torch.tensor([[1.0, 1, 3, 3]], dtype=torch.float64)
    value = {n: get(n).module()(a, b).item() for n in BOX_LOSSES}
    assert value["iou"] == pytest.approx(6 / 7)
    assert value["giou"] == pytest.approx(6 / 7 + 2 / 9)
    assert value["diou"] == pytest.approx(6 / 7 + 2 / 18)
    assert value["ciou"] == pytest.approx(value["diou"])
    assert value["eiou"] == pytest.approx(value["diou"])  # equal widths and heights
    assert value["alpha_iou"] == pytest.approx(1 - (1 / 7) ** 3)
    # SIoU: the offset is at 45 degrees, so the angle cost is 1 and gamma = 1: each axis
    # contributes 1 - exp(-(1/3)^2); equal shapes cost nothing.
    assert value["siou"] == pytest.approx(6 / 7 + (2 - 2 * math.exp(-1 / 9)) / 2)
    # Non-overlapping: A = (0,0,1,1), B = (2,0,3,1): IoU 0, enclosing (0,0,3,1) of area 3, union 2.
    a, b = torch.tensor([[0.0, 0, 1, 1]], dtype=torch.float64), torch.tensor([[2.0, 0, 3, 1]], dtype=torch.float64)
    assert get("iou").module()(a, b).item() == pytest.approx(1)
    assert get("giou").module()(a, b).item() == pytest.approx(1 + 1 / 3)
    assert get("diou").module()(a, b).item() == pytest.approx(1 + 4 / 10)
    # CIoU with different aspect ratios: A = (0,0,1,2) inside B = (0,0,2,2): IoU 1/2, centres (0.5,1), (1,1),
    # rho^2 = 1/4, c^2 = 8; v = 4/pi^2 (atan(1) - atan(1/2))^2, alpha = v/(1/2 + v).
    a, b = torch.tensor([[0.0, 0, 1, 2]], dtype=torch.float64), torch.tensor([[0.0, 0, 2, 2]], dtype=torch.float64)
    v = 4 / math.pi**2 * (math.atan(1) - math.atan(0.5)) ** 2
    assert get("ciou").module()(a, b).item() == pytest.approx(0.5 + 0.25 / 8 + v * v / (0.5 + v))
    # EIoU of the same: (w - w_t)^2 / C_w^2 = 1/4, heights equal.
    assert get("eiou").module()(a, b).item() == pytest.approx(0.5 + 0.25 / 8 + 1 / 4)


def test_identical_boxes_lose_nothing():
    _, b = boxes()
    for name in BOX_LOSSES:
        out = get(name).module(reduction="none")(b.clone(), b)
        torch.testing.assert_close(out, torch.zeros_like(out), atol=1e-5, rtol=0)  # eps/union


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_reductions(name):
    assert_reductions(get(name), boxes(seed=2), 40)


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_shape_and_box_errors(name):
    a, b = boxes(n=5)
    module = get(name).module()
    with pytest.raises(LossInputError, match="differ"):
        module(a, b[:4])
    with pytest.raises(LossInputError, match=r"\[N, 4\]"):
        module(a[:, :3], b[:, :3])
    with pytest.raises(LossInputError, match=r"\[N, 4\]"):
        module(a[0], b[0])
    bad = b.clone()
    bad[2] = torch.tensor([3.0, 0, 1, 1], dtype=torch.float64)
    with pytest.raises(LossInputError, match="target box 2"):
        module(a, bad)


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_float32_degenerate_and_far_apart_boxes_are_finite(name):
    b = torch.tensor([[0.0, 0, 1, 1], [0, 0, 0, 0], [5, 5, 5, 8], [1e4, 1e4, 1e4 + 1, 1e4 + 1], [0, 0, 1e-6, 1e-6]])
    a = torch.tensor([[0.0, 0, 1, 1], [0, 0, 0, 0], [5, 5, 5, 8], [0, 0, 1, 1], [0, 0, 1e-6, 1e-6]],
                     requires_grad=True)
    out = get(name).module(reduction="none")(a, b)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(a.grad).all(), (out, a.grad)
    assert 0 <= out.min() and out.max() <= 3
    assert out[3] >= 1  # far apart: at least the IoU term


def test_parameters_are_checked():
    from lossforge.losses import LossParameterError

    with pytest.raises(LossParameterError, match="alpha"):
        get("alpha_iou").module(alpha=0)
    with pytest.raises(LossParameterError, match="eps"):
        get("giou").module(eps=0)
    a, b = boxes(n=8)
    base = get("alpha_iou").module(alpha=1.0)(a, b)
    torch.testing.assert_close(base, get("iou").module()(a, b))
