"""Image-quality losses on image batches ``[N, C, H, W]``, and losses on feature maps.

``ssim`` and ``psnr`` follow kornia's conventions (``window_size``, ``max_val``;
kornia's SSIM loss is ``(1 - SSIM) / 2``), ``ms_ssim`` torchmetrics' multi-scale
SSIM (Wang et al. 2003).  ``perceptual`` runs a feature extractor the user
passes (a frozen pretrained network such as a truncated VGG; nothing is
downloaded), ``style`` compares Gram matrices of given feature maps.  The
unreduced loss is one value per image, ``[N]``.  These are window or network
functions of whole images: no expression in the grammar.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LossInputError, LossParameterError
from .loss import CatalogueLoss, check_reduction, non_negative, positive, reduce, reference_loss

_SHAPE = """
    Shape:
        - Input: :math:`(N, C, H, W)` images.
        - Target: :math:`(N, C, H, W)`, same shape.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
_RED = "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n"
# Torchmetrics' MS-SSIM weights of the five scales (Wang et al. 2003).
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def check_images(input: torch.Tensor, target: torch.Tensor, what: str = "images") -> None:
    if input.dim() != 4:
        raise LossInputError(f"input must be {what} [N, C, H, W], got shape {tuple(input.shape)} "
                             f"(add a channel dimension with .unsqueeze(1))")
    if input.shape != target.shape:
        raise LossInputError(f"input shape {tuple(input.shape)} and target shape {tuple(target.shape)} differ; "
                             f"the {what} must have the same shape")


def _window(window_size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(window_size, dtype=like.dtype, device=like.device) - window_size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel, reflect-padded to the same size."""
    c, k = x.shape[1], window.numel()
    x = F.pad(x, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def local_moments(x: torch.Tensor, y: torch.Tensor, window_size: int, sigma: float = 1.5,
                  clamp_variance: bool = False) -> tuple[torch.Tensor, ...]:
    """Windowed means, variances and covariance ``(mu_x, mu_y, var_x, var_y, cov)`` of two image batches."""
    w = _window(window_size, sigma, x)
    mu_x, mu_y = _blur(x, w), _blur(y, w)
    var_x, var_y = _blur(x * x, w) - mu_x**2, _blur(y * y, w) - mu_y**2
    if clamp_variance:  # torchmetrics: roundoff must not make a variance negative
        var_x, var_y = var_x.clamp_min(0), var_y.clamp_min(0)
    return mu_x, mu_y, var_x, var_y, _blur(x * y, w) - mu_x * mu_y


def _check_window(window_size: float, height: int, width: int) -> int:
    size = int(window_size)
    if size != window_size or size < 1 or size % 2 == 0:
        raise LossParameterError(f"window_size must be an odd positive integer, got {window_size}")
    if min(height, width) <= size // 2:
        raise LossInputError(f"images of {height} x {width} pixels are too small for window_size={size}; "
                             f"use a smaller window")
    return size


# ------------------------------------------------------------------ functional forms
def ssim_loss(input: torch.Tensor, target: torch.Tensor, window_size: float = 11, max_val: float = 1.0,
              eps: float = 1e-12, reduction: str = "mean") -> torch.Tensor:
    """SSIM loss ``(1 - SSIM) / 2`` per image; see :class:`SSIMLoss`."""
    check_images(input, target)
    size = _check_window(window_size, *input.shape[-2:])
    mu_x, mu_y, var_x, var_y, cov = local_moments(input, target, size)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    # kornia: num / (den + eps), num and den the products of the luminance and contrast-structure factors
    ssim = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2) + eps)
    return reduce(((1 - ssim) / 2).clamp(0, 1).flatten(1).mean(1), reduction)


def ms_ssim_loss(input: torch.Tensor, target: torch.Tensor, window_size: float = 11, sigma: float = 1.5,
                 max_val: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """``1 - MS-SSIM`` per image; see :class:`MSSSIMLoss`."""
    check_images(input, target)
    size = _check_window(window_size, *input.shape[-2:])
    scales = len(MS_SSIM_BETAS)
    side = min(input.shape[-2:])
    if side // (scales - 1) ** 2 <= size - 1:
        raise LossInputError(f"ms_ssim uses {scales} scales: with window_size={size} the images need a side "
                             f"larger than {(size - 1) * (scales - 1) ** 2} pixels, got {tuple(input.shape[-2:])}; "
                             f"use ssim for small images")
    pad = size // 2
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    factors = []
    x, y = input, target
    for scale in range(scales):
        mu_x, mu_y, var_x, var_y, cov = local_moments(x, y, size, sigma, clamp_variance=True)
        cs = (2 * cov + c2) / (var_x + var_y + c2)
        if scale < scales - 1:  # torchmetrics: the contrast term without the padded border
            factors.append(F.relu(cs[..., pad:-pad, pad:-pad].flatten(1).mean(1)))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        else:
            luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
            factors.append(F.relu((luminance * cs).flatten(1).mean(1)))
    value = torch.ones_like(factors[0])
    for f, beta in zip(factors, MS_SSIM_BETAS):
        # f**beta with a finite gradient where f = 0 (beta < 1 makes the derivative infinite there)
        value = value * torch.where(f > 0, f.clamp_min(1e-12) ** beta, torch.zeros_like(f))
    return reduce(1 - value, reduction)


def psnr_loss(input: torch.Tensor, target: torch.Tensor, max_val: float = 1.0, eps: float = 1e-10,
              reduction: str = "mean") -> torch.Tensor:
    """Negative PSNR per image; see :class:`PSNRLoss`."""
    check_images(input, target)
    PSNRLoss.check_params(max_val=max_val, eps=eps)
    mse = ((input - target) ** 2).flatten(1).mean(1)
    return reduce(10 * torch.log10(mse + eps) - 20 * math.log10(max_val), reduction)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along the height and the width."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def gradient_difference_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 1.0,
                             reduction: str = "mean") -> torch.Tensor:
    """Gradient difference loss; see :class:`GradientDifferenceLoss`."""
    check_images(input, target)
    positive("alpha", alpha)
    total = 0
    for gx, gy in zip(image_gradients(input), image_gradients(target)):
        d = (gy.abs() - gx.abs()).abs()
        total = total + (d**alpha if alpha != 1 else d).flatten(1).sum(1)
    return reduce(total, reduction)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``F F^T / (C H W)`` per sample, ``[N, C, C]`` (the review's normalisation)."""
    n, c = features.shape[:2]
    flat = features.reshape(n, c, -1)
    return flat @ flat.transpose(1, 2) / flat[0].numel()


def _feature_list(features) -> list[torch.Tensor]:
    if isinstance(features, torch.Tensor):
        return [features]
    if isinstance(features, dict):
        return list(features.values())
    if isinstance(features, (list, tuple)):
        return list(features)
    raise LossInputError(f"features must be a tensor [N, C, H, W] or a list of them, got {type(features).__name__}")


def style_loss(input, target, reduction: str = "mean") -> torch.Tensor:
    """Gram-matrix style loss of feature maps; see :class:`StyleLoss`."""
    inputs, targets = _feature_list(input), _feature_list(target)
    if len(inputs) != len(targets):
        raise LossInputError(f"{len(inputs)} input feature maps and {len(targets)} target feature maps; "
                             f"give one target per layer")
    total = 0
    for f, t in zip(inputs, targets):
        check_images(f, t, what="feature maps")
        total = total + ((gram_matrix(f) - gram_matrix(t)) ** 2).flatten(1).mean(1)
    return reduce(total, reduction)


def feature_loss(input, target, reduction: str = "mean") -> torch.Tensor:
    """Sum over layers of the per-sample mean squared feature difference."""
    inputs, targets = _feature_list(input), _feature_list(target)
    total = 0
    if len(inputs) != len(targets):
        raise LossInputError(f"the feature extractor returned {len(inputs)} and {len(targets)} feature maps")
    for f, t in zip(inputs, targets):
        if f.shape != t.shape or f.dim() < 2:
            raise LossInputError(f"feature maps {tuple(f.shape)} and {tuple(t.shape)}: they must be [N, ...] "
                                 f"and of the same shape")
        total = total + ((f - t) ** 2).flatten(1).mean(1)
    return reduce(total, reduction)


def perceptual_loss(input: torch.Tensor, target: torch.Tensor, feature_extractor: Callable,
                    reduction: str = "mean") -> torch.Tensor:
    """Perceptual (feature reconstruction) loss; see :class:`PerceptualLoss`."""
    check_images(input, target)
    return feature_loss(feature_extractor(input), feature_extractor(target), reduction)


# ------------------------------------------------------------------ modules
class SSIMLoss(CatalogueLoss):
    __doc__ = r"""SSIM loss (Wang et al. 2004), as ``kornia.losses.ssim_loss``.

    With the SSIM map of a Gaussian window (:math:`\sigma = 1.5`, ``window_size``
    taps, reflect padding), :math:`c_1 = (0.01 L)^2`, :math:`c_2 = (0.03 L)^2`,
    the unreduced loss of an image is the mean over its pixels and channels of
    :math:`\mathrm{clamp}((1 - \mathrm{SSIM}) / 2, 0, 1)` (kornia's halved DSSIM;
    twice it is the common :math:`1 - \mathrm{SSIM}`).

    Args:
        window_size: odd number of taps of the window. Default: 11.
        max_val: the dynamic range :math:`L` of the pixel values. Default: 1.
        eps: added to the denominator. Default: 1e-12.
""" + _RED + _SHAPE
    defaults = {"window_size": 11.0, "max_val": 1.0, "eps": 1e-12}
    functional = staticmethod(ssim_loss)

    @classmethod
    def check_params(cls, window_size: float, max_val: float, eps: float) -> None:
        _check_window(window_size, 10**9, 10**9)
        positive("max_val", max_val)
        non_negative("eps", eps)


class MSSSIMLoss(CatalogueLoss):
    __doc__ = r"""Multi-scale SSIM loss (Wang, Simoncelli & Bovik 2003), :math:`1 - \mathrm{MS\text{-}SSIM}`.

    Five scales (average pooling by 2 between them): the contrast-structure
    means :math:`cs_j` of the first four and the SSIM of the last, each clipped at
    0, weighted by the exponents :math:`\beta = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)`:
    :math:`1 - \mathrm{SSIM}_5^{\beta_5} \prod_{j<5} cs_j^{\beta_j}`.  Equal to
    ``1 - torchmetrics.functional.multiscale_structural_similarity_index_measure(
    ..., data_range=max_val, normalize='relu', reduction='none')``
    (torchmetrics' ``kernel_size``, ``sigma``, ``data_range`` are ``window_size``, ``sigma``, ``max_val``).
    The images need a side larger than :math:`16 (w - 1)` pixels (176 for ``window_size=11``).

    Args:
        window_size: odd number of taps. Default: 11.
        sigma: the Gaussian's standard deviation. Default: 1.5.
        max_val: the dynamic range of the pixel values. Default: 1.
""" + _RED + _SHAPE
    defaults = {"window_size": 11.0, "sigma": 1.5, "max_val": 1.0}
    functional = staticmethod(ms_ssim_loss)

    @classmethod
    def check_params(cls, window_size: float, sigma: float, max_val: float) -> None:
        _check_window(window_size, 10**9, 10**9)
        positive("sigma", sigma)
        positive("max_val", max_val)


class PSNRLoss(CatalogueLoss):
    __doc__ = r"""Negative peak signal-to-noise ratio, as ``kornia.losses.psnr_loss`` per image.

    The unreduced loss is :math:`-10 \log_{10}(L^2 / (\mathrm{MSE} + \epsilon))` with the
    mean squared error of each image; :math:`\epsilon` keeps identical images finite
    (kornia has none, so it is infinite there).

    Args:
        max_val: the dynamic range :math:`L`. Default: 1.
        eps: added to the MSE, >= 0. Default: 1e-10.
""" + _RED + _SHAPE
    defaults = {"max_val": 1.0, "eps": 1e-10}
    functional = staticmethod(psnr_loss)

    @classmethod
    def check_params(cls, max_val: float, eps: float) -> None:
        positive("max_val", max_val)
        non_negative("eps", eps)


class GradientDifferenceLoss(CatalogueLoss):
    __doc__ = r"""Gradient difference loss (Mathieu, Couprie & LeCun 2016).

    With forward differences along the height and the width, the unreduced loss
    of an image is
    :math:`\sum \big| |\nabla_h Y| - |\nabla_h X| \big|^\alpha + \big| |\nabla_w Y| - |\nabla_w X| \big|^\alpha`
    summed over the pixels and channels.  Against a constant target with
    :math:`\alpha = 1` it is the anisotropic total variation of the input
    (``kornia.losses.total_variation``).

    Args:
        alpha: the exponent, > 0. Default: 1.
""" + _RED + _SHAPE
    defaults = {"alpha": 1.0}
    functional = staticmethod(gradient_difference_loss)

    @classmethod
    def check_params(cls, alpha: float) -> None:
        positive("alpha", alpha)


class StyleLoss(CatalogueLoss):
    __doc__ = r"""Style (Gram-matrix) loss of feature maps (Gatys, Ecker & Bethge 2016).

    With the Gram matrix :math:`G = F F^\top / (C H W)` of each sample's features
    :math:`F` (:math:`C \times HW`), the unreduced loss is the mean over the
    :math:`C \times C` entries of :math:`(G_{input} - G_{target})^2`, summed over the
    layers when lists of feature maps are given (the review's ``style_loss.py``;
    Gatys et al.'s :math:`E_l = \sum (G - A)^2 / (4 N^2 M^2)` on unnormalised Grams is
    :math:`C^2 / 4` times it).  Compute the feature maps with your own network.

    Args:
""" + _RED + """
    Shape:
        - Input: :math:`(N, C, H, W)` feature maps, or a list of them (one per layer).
        - Target: the same shapes.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
    functional = staticmethod(style_loss)


class PerceptualLoss(nn.Module):
    __doc__ = r"""Perceptual (feature reconstruction) loss (Johnson, Alahi & Fei-Fei 2016).

    With :math:`\phi` the user's ``feature_extractor`` (a module or function of an
    image batch returning a feature tensor :math:`[N, \dots]`, or a list/tuple/dict
    of them, one per layer), the unreduced loss is
    :math:`\sum_l \frac{1}{C_l H_l W_l} \|\phi_l(x) - \phi_l(y)\|^2` per image.
    Nothing is downloaded: pass a pretrained network you have, e.g.
    ``torchvision.models.vgg16(weights=...).features[:16].eval().requires_grad_(False)``
    (relu3_3, as Johnson et al.); the extractor is used as given, so freeze it
    and move it to the images' device yourself.

    Args:
        feature_extractor: the network :math:`\phi` (required).
""" + _RED + _SHAPE

    def __init__(self, feature_extractor: Callable | None = None, *, reduction: str = "mean"):
        super().__init__()
        if feature_extractor is None or not callable(feature_extractor):
            raise LossParameterError("perceptual needs feature_extractor=, a module or function mapping an image "
                                     "batch to feature maps (e.g. a truncated pretrained VGG); none is downloaded")
        self.feature_extractor = feature_extractor
        self.reduction = check_reduction(reduction)
        self.params: dict = {}

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return perceptual_loss(input, target, self.feature_extractor, self.reduction)


_IMG = dict(family="image", input="images", target="images", task_kinds=("image",),
            notes="reference-only: windows or networks over whole images, not element-wise in (p, y)")

ENTRIES = [
    reference_loss("ssim", formula="mean over pixels of (1 - SSIM)/2, Gaussian window", module=SSIMLoss,
                   reference="Wang et al., Image Quality Assessment: From Error Visibility to Structural "
                   "Similarity, IEEE TIP 2004; kornia.losses.ssim_loss", **_IMG),
    reference_loss("ms_ssim", formula="1 - SSIM_5**b5 * prod_j cs_j**b_j over 5 scales", module=MSSSIMLoss,
                   reference="Wang, Simoncelli & Bovik, Multiscale structural similarity for image quality "
                   "assessment, Asilomar 2003; torchmetrics multiscale_structural_similarity_index_measure",
                   **_IMG),
    reference_loss("psnr", formula="-10*log10(max_val**2/(MSE + eps)) per image", module=PSNRLoss,
                   reference="kornia.losses.psnr_loss; Hore & Ziou, Image Quality Metrics: PSNR vs. SSIM, "
                   "ICPR 2010", **_IMG),
    reference_loss("gradient_difference", formula="sum ||grad Y| - |grad X||**alpha over both axes",
                   module=GradientDifferenceLoss, reference="Mathieu, Couprie & LeCun, Deep multi-scale video "
                   "prediction beyond mean square error, ICLR 2016", **_IMG),
    reference_loss("style", formula="mean_(C x C) (G(F_in) - G(F_target))**2, G = F F^T/(C H W), per layer",
                   module=StyleLoss, reference="Gatys, Ecker & Bethge, Image Style Transfer Using Convolutional "
                   "Neural Networks, CVPR 2016", **{**_IMG, "input": "feature_maps", "target": "feature_maps"}),
    reference_loss("perceptual", formula="sum_l mean (phi_l(x) - phi_l(y))**2, phi = user's feature extractor",
                   module=PerceptualLoss, params={}, extra_args=("feature_extractor",),
                   reference="Johnson, Alahi & Fei-Fei, Perceptual Losses for Real-Time Style Transfer and "
                   "Super-Resolution, ECCV 2016", **_IMG),
]
