"""Image losses against kornia and torchmetrics.

References: ``kornia.losses.ssim_loss`` (ssim), ``kornia.losses.psnr_loss`` per
image (psnr), torchmetrics' ``multiscale_structural_similarity_index_measure``
with ``normalize='relu'`` (ms_ssim), ``kornia.losses.total_variation`` (the
gradient difference against a constant target) and a loop over the pixels
(gradient_difference), the review's ``style_loss.py`` Gram matrices written
out with einsum (style), ``F.mse_loss`` on the features (perceptual).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lossforge.losses import LossInputError, LossParameterError, get

from .helpers import IMAGE_SHAPE, MS_SSIM_SIDE, assert_reductions, assert_same, build, feature_extractor, generator

kornia_losses = pytest.importorskip("kornia.losses")
tm_image = pytest.importorskip("torchmetrics.functional.image")

ALL = ["ssim", "ms_ssim", "psnr", "gradient_difference", "style", "perceptual"]


def images(n=4, shape=IMAGE_SHAPE, seed=0, dtype=torch.float64):
    g = generator(seed)
    x = torch.rand(n, *shape, generator=g, dtype=dtype)
    return x, (0.7 * x + 0.3 * torch.rand(n, *shape, generator=g, dtype=dtype))


@pytest.mark.parametrize("window_size, max_val", [(11, 1.0), (5, 1.0), (7, 2.0)])
def test_ssim_equals_kornia(window_size, max_val):
    x, y = images()
    ours = get("ssim").module(window_size=window_size, max_val=max_val, reduction="none")
    assert_same(ours, lambda a, b: kornia_losses.ssim_loss(a, b, window_size, max_val=max_val,
                                                           reduction="none").flatten(1).mean(1), x * max_val,
                y * max_val, wrt=1)
    torch.testing.assert_close(get("ssim").module(window_size=window_size)(x, y),
                               kornia_losses.ssim_loss(x, y, window_size))


@pytest.mark.parametrize("window_size, sigma", [(11, 1.5), (7, 1.0)])
def test_ms_ssim_equals_torchmetrics(window_size, sigma):
    x, y = images(n=2, shape=(1, MS_SSIM_SIDE, MS_SSIM_SIDE))
    ours = get("ms_ssim").module(window_size=window_size, sigma=sigma, reduction="none")
    # torchmetrics derives its Gaussian's taps from sigma: 2*int(3.5*sigma + 0.5) + 1 (11 for 1.5, 9 for 1.0)
    taps = 2 * int(3.5 * sigma + 0.5) + 1
    if taps != window_size:
        ours = get("ms_ssim").module(window_size=taps, sigma=sigma, reduction="none")

    def theirs(a, b):
        return 1 - tm_image.multiscale_structural_similarity_index_measure(
            a, b, sigma=sigma, kernel_size=window_size, data_range=1.0, normalize="relu", reduction="none")

    assert_same(ours, theirs, x, y, wrt=1)


def test_psnr_equals_kornia_per_image():
    x, y = images()
    ours = get("psnr").module(eps=0.0, reduction="none")
    per_image = torch.stack([kornia_losses.psnr_loss(a[None], b[None], 1.0) for a, b in zip(x, y)])
    assert_same(ours, lambda a, b: torch.stack([kornia_losses.psnr_loss(p[None], q[None], 1.0)
                                                for p, q in zip(a, b)]), x, y, wrt=1)
    torch.testing.assert_close(ours(x, y), per_image)
    assert get("psnr").module(max_val=255.0, eps=0.0)(x[:1] * 255, y[:1] * 255).item() == \
        pytest.approx(kornia_losses.psnr_loss(x[:1] * 255, y[:1] * 255, 255.0).item())


def _gdl_loop(x, y, alpha):
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    n, c, h, w = x.shape
    for i in range(h):
        for j in range(w):
            if i > 0:
                total = total + ((y[:, :, i, j] - y[:, :, i - 1, j]).abs()
                                 - (x[:, :, i, j] - x[:, :, i - 1, j]).abs()).abs().pow(alpha).sum(1)
            if j > 0:
                total = total + ((y[:, :, i, j - 1] - y[:, :, i, j]).abs()
                                 - (x[:, :, i, j - 1] - x[:, :, i, j]).abs()).abs().pow(alpha).sum(1)
    return total


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_gradient_difference_equals_the_paper_and_total_variation(alpha):
    x, y = images(n=3, shape=(2, 6, 7))
    assert_same(get("gradient_difference").module(alpha=alpha, reduction="none"), lambda a, b: _gdl_loop(a, b, alpha),
                x, y, wrt=1)
    flat = torch.full_like(x, 0.5)
    if alpha == 1.0:
        assert_same(get("gradient_difference").module(reduction="none"),
                    lambda a, b: kornia_losses.total_variation(a).sum(-1), x, flat, wrt=1)


def _gram(f):  # the review's style_loss.py: F F^T / (C H W)
    n, c, h, w = f.shape
    return torch.einsum("nchw,ndhw->ncd", f, f) / (c * h * w)


def test_style_equals_the_review_code_on_one_and_several_layers():
    f1, t1 = images(n=3, shape=(4, 5, 6), seed=1)
    f2, t2 = images(n=3, shape=(2, 3, 3), seed=2)
    ours = get("style").module(reduction="none")
    assert_same(ours, lambda a, b: ((_gram(a) - _gram(b)) ** 2).mean((1, 2)), f1, t1, wrt=1)
    expected = F.mse_loss(_gram(f1), _gram(t1)) + F.mse_loss(_gram(f2), _gram(t2))  # the repository's value
    torch.testing.assert_close(get("style").module()([f1, f2], [t1, t2]), expected)


def test_perceptual_equals_the_feature_mse():
    x, y = images()
    net = feature_extractor()
    ours = get("perceptual").module(feature_extractor=net, reduction="none")
    assert_same(ours, lambda a, b: ((net(a) - net(b)) ** 2).mean((1, 2, 3)), x, y, wrt=1)
    torch.testing.assert_close(get("perceptual").module(feature_extractor=net)(x, y), F.mse_loss(net(x), net(y)))

    def two_layers(img):  # an extractor returning several layers: they are summed
        return [net.layer1(img), net(img)]

    both = get("perceptual").module(feature_extractor=two_layers)(x, y)
    torch.testing.assert_close(both, F.mse_loss(net.layer1(x), net.layer1(y)) + F.mse_loss(net(x), net(y)))
    identity = get("perceptual").module(feature_extractor=lambda img: img, reduction="none")
    torch.testing.assert_close(identity(x, y), ((x - y) ** 2).mean((1, 2, 3)))


def _batch(name, n=4, dtype=torch.float64):
    shape = (1, MS_SSIM_SIDE, MS_SSIM_SIDE) if name == "ms_ssim" else IMAGE_SHAPE
    return images(n=2 if name == "ms_ssim" else n, shape=shape, dtype=dtype)


@pytest.mark.parametrize("name", ALL)
def test_reductions(name):
    x, y = _batch(name)
    assert_reductions(get(name), (x, y), x.shape[0])


@pytest.mark.parametrize("name", ALL)
def test_shape_mismatch_is_a_clear_error(name):
    x, y = _batch(name)
    module = build(get(name))
    with pytest.raises(LossInputError, match="differ"):
        module(x, y[:-1])
    with pytest.raises(LossInputError, match=r"\[N, C, H, W\]"):
        module(x[:, 0], y[:, 0])


def test_window_and_parameter_errors():
    x, y = images(shape=(1, 4, 4))
    with pytest.raises(LossInputError, match="too small for window_size=11"):
        get("ssim").module()(x, y)
    with pytest.raises(LossInputError, match="side larger than 160"):
        get("ms_ssim").module()(*images(shape=(1, 64, 64)))
    with pytest.raises(LossParameterError, match="odd"):
        get("ssim").module(window_size=4)
    with pytest.raises(LossParameterError, match="feature_extractor"):
        get("perceptual").module()


@pytest.mark.parametrize("name", ALL)
def test_float32_constant_identical_and_extreme_images_are_finite(name):
    x, _ = _batch(name, dtype=torch.float32)
    cases = [(torch.zeros_like(x), torch.zeros_like(x)),           # constant and identical
             (torch.full_like(x, 0.5), torch.full_like(x, 0.5)),
             (x, x.clone()),                                         # identical
             (torch.zeros_like(x), torch.ones_like(x)),             # opposite constants
             (x * 1e4, -x * 1e4)]                                     # far outside the pixel range
    for a, b in cases:
        a = a.clone().requires_grad_(True)
        out = build(get(name))(a, b)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(a.grad).all(), (name, out)
    same = build(get(name), reduction="none")(x, x.clone())
    if name != "psnr":
        torch.testing.assert_close(same, torch.zeros_like(same), atol=1e-5, rtol=0)
