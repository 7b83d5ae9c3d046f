"""Losses of generative models: adversarial (GAN) losses, the VAE's KL term, cycle
consistency and the diffusion noise-prediction loss.

GAN losses take the discriminator's (critic's) raw scores ``[N]`` (or ``[N, *]``,
e.g. a PatchGAN map) and a target of the same shape saying how each score is
to be judged: 1 real, 0 fake, as pix2pix's ``GANLoss(prediction, target_is_real)``.
The discriminator step scores real samples with target 1 and generated ones
with target 0; the generator step scores generated samples with target 1.
The unreduced loss has one value per score; ``'mean'`` averages them.  All of
these need the outputs of one or two networks: no expression in the grammar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import LossInputError, LossParameterError
from .loss import CatalogueLoss, check_same_shape, positive, reduce, reference_loss, switch

_GAN_SHAPE = """
    Shape:
        - Input: :math:`(N)` or :math:`(N, *)` discriminator scores (logits for ``gan_bce``).
        - Target: the same shape, 1 (judge as real) or 0 (judge as fake).
        - Output: scalar; the input's shape with ``reduction='none'``.
"""
_RED = "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n"


def check_real_fake(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scores and 0/1 targets of the same shape; returns the target as a bool mask of 'real'."""
    check_same_shape(input, target)
    if input.dim() == 0:
        raise LossInputError("input must hold one score per sample, [N] or [N, *], got a scalar")
    if not bool(((target == 0) | (target == 1)).all()):
        raise LossInputError("target must hold 1 (real) and 0 (fake) labels, one per score")
    return target == 1


def per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1) if x.dim() > 1 else x


# ------------------------------------------------------------------ functional forms
def gan_bce_loss(input: torch.Tensor, target: torch.Tensor, saturating: float = 0.0,
                 reduction: str = "mean") -> torch.Tensor:
    """Vanilla GAN loss on discriminator logits; see :class:`GANBCELoss`."""
    switch("saturating", saturating)
    real = check_real_fake(input, target)
    # -log D = softplus(-z); -log(1 - D) = softplus(z); log(1 - D) = -softplus(z) (minimax generator)
    judged_real = -F.softplus(input) if saturating else F.softplus(-input)
    return reduce(torch.where(real, judged_real, F.softplus(input)), reduction)


def lsgan_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Least-squares GAN loss; see :class:`LSGANLoss`."""
    check_real_fake(input, target)
    return reduce((input - target.to(input.dtype)) ** 2, reduction)


def wgan_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Wasserstein GAN critic / generator loss; see :class:`WGANLoss`."""
    real = check_real_fake(input, target)
    return reduce(torch.where(real, -input, input), reduction)


def hinge_gan_loss(input: torch.Tensor, target: torch.Tensor, generator: float = 0.0,
                   reduction: str = "mean") -> torch.Tensor:
    """Hinge GAN loss; see :class:`HingeGANLoss`."""
    switch("generator", generator)
    real = check_real_fake(input, target)
    if generator:
        return reduce(torch.where(real, -input, input), reduction)
    return reduce(torch.where(real, F.relu(1 - input), F.relu(1 + input)), reduction)


def vae_kl_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """KL divergence of N(mu, exp(logvar)) from N(0, 1), summed over the latent dimensions; see :class:`VAEKLLoss`."""
    if input.dim() < 2:
        raise LossInputError(f"mu must be [N, D] latent means, got shape {tuple(input.shape)}")
    check_same_shape(input, target, what="logvar")
    return reduce(0.5 * (input**2 + target.exp() - 1 - target).flatten(1).sum(1), reduction)


def cycle_consistency_loss(input: torch.Tensor, target: torch.Tensor, lambda_cycle: float = 10.0,
                           reduction: str = "mean") -> torch.Tensor:
    """``lambda * mean |F(G(x)) - x|`` per sample; see :class:`CycleConsistencyLoss`."""
    if input.dim() < 2:
        raise LossInputError(f"input must be a batch of reconstructions [N, ...], got shape {tuple(input.shape)}")
    check_same_shape(input, target)
    return reduce(lambda_cycle * (input - target).abs().flatten(1).mean(1), reduction)


def noise_prediction_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``mean (eps_hat - eps)**2`` per sample; see :class:`NoisePredictionLoss`."""
    if input.dim() < 2:
        raise LossInputError(f"input must be a batch of noise predictions [N, ...], got shape {tuple(input.shape)}")
    check_same_shape(input, target, what="noise")
    return reduce(((input - target) ** 2).flatten(1).mean(1), reduction)


# ------------------------------------------------------------------ modules
class GANBCELoss(CatalogueLoss):
    __doc__ = r"""Vanilla GAN loss (Goodfellow et al. 2014) on discriminator logits :math:`z`, :math:`D = \sigma(z)`.

    The unreduced loss is :math:`-\log D` for target 1 and :math:`-\log(1 - D)` for
    target 0, i.e. ``F.binary_cross_entropy_with_logits(z, target, reduction='none')``.
    The discriminator loss is real scores with 1 plus fake scores with 0; the
    non-saturating generator loss is the fake scores with target 1.  With
    ``saturating=1`` target 1 gives :math:`\log(1 - D)` instead: the original
    minimax generator loss, which saturates when the discriminator wins.

    Args:
        saturating: 1 for the minimax generator loss, 0 otherwise. Default: 0.
""" + _RED + _GAN_SHAPE
    defaults = {"saturating": 0.0}
    functional = staticmethod(gan_bce_loss)

    @classmethod
    def check_params(cls, saturating: float) -> None:
        switch("saturating", saturating)


class LSGANLoss(CatalogueLoss):
    __doc__ = r"""Least-squares GAN loss (Mao et al. 2017), labels :math:`a = 0`, :math:`b = c = 1`.

    The unreduced loss is :math:`(D - t)^2`, equal to ``F.mse_loss(D, target, reduction='none')``
    (the review's adversarial loss in LSGAN mode; the paper has a factor 1/2).

    Args:
""" + _RED + _GAN_SHAPE
    functional = staticmethod(lsgan_loss)


class WGANLoss(CatalogueLoss):
    __doc__ = r"""Wasserstein GAN loss (Arjovsky et al. 2017) on critic scores :math:`D`.

    The unreduced loss is :math:`-D` for target 1 and :math:`D` for target 0: the
    critic minimises :math:`-D(x) + D(G(z))`, the generator :math:`-D(G(z))`.  The
    Lipschitz constraint (clipping or a gradient penalty) is not part of it.

    Args:
""" + _RED + _GAN_SHAPE
    functional = staticmethod(wgan_loss)


class HingeGANLoss(CatalogueLoss):
    __doc__ = r"""Hinge GAN loss (Lim & Ye 2017; Miyato et al. 2018, SN-GAN).

    Discriminator (``generator=0``): :math:`\max(0, 1 - D)` for target 1 and
    :math:`\max(0, 1 + D)` for target 0.  Generator (``generator=1``): :math:`-D`
    for target 1 (the fake scores).

    Args:
        generator: 1 for the generator's loss, 0 for the discriminator's. Default: 0.
""" + _RED + _GAN_SHAPE
    defaults = {"generator": 0.0}
    functional = staticmethod(hinge_gan_loss)

    @classmethod
    def check_params(cls, generator: float) -> None:
        switch("generator", generator)


class VAEKLLoss(CatalogueLoss):
    __doc__ = r"""KL term of the VAE (Kingma & Welling 2014), in closed form.

    For the encoder's :math:`\mu` and :math:`\log\sigma^2`, the unreduced loss is
    :math:`\mathrm{KL}(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, 1))
    = \frac12 \sum_d (\mu_d^2 + \sigma_d^2 - 1 - \log\sigma_d^2)`
    per sample, summed over the latent dimensions.  ``forward(mu, logvar)``.

    Args:
""" + _RED + r"""
    Shape:
        - Input: :math:`(N, D)` (or :math:`(N, *)`) means :math:`\mu`.
        - Target: the same shape, log-variances :math:`\log\sigma^2`.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
    functional = staticmethod(vae_kl_loss)


class CycleConsistencyLoss(CatalogueLoss):
    __doc__ = r"""Cycle-consistency loss (Zhu et al. 2017, CycleGAN).

    For a reconstruction :math:`F(G(x))` of :math:`x`, the unreduced loss is
    :math:`\lambda \cdot \mathrm{mean} |F(G(x)) - x|` per sample (L1, as the review's
    code).  CycleGAN adds the two cycles, ``loss(F(G(x)), x) + loss(G(F(y)), y)``.

    Args:
        lambda_cycle: :math:`\lambda`, > 0. Default: 10 (CycleGAN's).
""" + _RED + """
    Shape:
        - Input: :math:`(N, *)` reconstructions.
        - Target: the same shape, the originals.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
    defaults = {"lambda_cycle": 10.0}
    functional = staticmethod(cycle_consistency_loss)

    @classmethod
    def check_params(cls, lambda_cycle: float) -> None:
        positive("lambda_cycle", lambda_cycle)


class NoisePredictionLoss(CatalogueLoss):
    __doc__ = r"""Diffusion noise-prediction loss (Ho et al. 2020, DDPM, :math:`L_{simple}`).

    The unreduced loss is :math:`\mathrm{mean} (\hat\epsilon - \epsilon)^2` per sample
    for the network's :math:`\hat\epsilon = \epsilon_\theta(x_t, t)`.  The module holds
    the linear schedule :math:`\beta_t` from ``beta_start`` to ``beta_end`` over
    ``num_train_timesteps`` steps (diffusers' names) and makes the network's input:
    ``add_noise(x0, noise, timesteps)`` is
    :math:`x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1 - \bar\alpha_t} \epsilon`,
    :math:`\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)`.

    Args:
        beta_start: :math:`\beta_0`. Default: 1e-4.
        beta_end: :math:`\beta_{T-1}`. Default: 0.02.
        num_train_timesteps: :math:`T`. Default: 1000.
""" + _RED + """
    Shape:
        - Input: :math:`(N, *)` predicted noise.
        - Target: the same shape, the noise that was added.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
    defaults = {"beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000.0}
    functional = staticmethod(noise_prediction_loss)

    def __init__(self, *, reduction: str = "mean", **params: float):
        super().__init__(reduction=reduction, **params)
        p = self.params
        betas = torch.linspace(p["beta_start"], p["beta_end"], int(p["num_train_timesteps"]), dtype=torch.float64)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, dim=0))

    @classmethod
    def check_params(cls, beta_start: float, beta_end: float, num_train_timesteps: float) -> None:
        if not 0 < beta_start <= beta_end < 1:
            raise LossParameterError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        if num_train_timesteps < 1 or num_train_timesteps != int(num_train_timesteps):
            raise LossParameterError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps}")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return noise_prediction_loss(input, target, reduction=self.reduction)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The forward process :math:`x_t` of clean samples ``x0 [N, *]`` at integer ``timesteps [N]``."""
        check_same_shape(x0, noise, what="noise")
        t = torch.as_tensor(timesteps, device=x0.device)
        if t.shape != x0.shape[:1] or t.dtype.is_floating_point:
            raise LossInputError(f"timesteps must be [N] = [{x0.shape[0]}] integers, got {tuple(t.shape)} {t.dtype}")
        if bool(((t < 0) | (t >= len(self.alphas_cumprod))).any()):
            raise LossInputError(f"timesteps must be in [0, {len(self.alphas_cumprod)})")
        a = self.alphas_cumprod.to(device=x0.device)[t].to(x0.dtype).view(-1, *[1] * (x0.dim() - 1))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


_GAN = dict(family="generative", input="critic_scores", target="real_fake", task_kinds=("generative",),
            notes="reference-only: needs a discriminator's scores of real and generated samples")
_GEN = dict(family="generative", task_kinds=("generative",),
            notes="reference-only: a term of a generative model's objective, computed on its networks' outputs")

ENTRIES = [
    reference_loss("gan_bce", formula="-log D if real else -log(1 - D), D = sigmoid(z); saturating: log(1 - D)",
                   module=GANBCELoss, reference="Goodfellow et al., Generative Adversarial Nets, NeurIPS 2014", **_GAN),
    reference_loss("lsgan", formula="(D - t)**2, t = 1 real, 0 fake", module=LSGANLoss,
                   reference="Mao et al., Least Squares Generative Adversarial Networks, ICCV 2017", **_GAN),
    reference_loss("wgan", formula="-D if real else D", module=WGANLoss,
                   reference="Arjovsky, Chintala & Bottou, Wasserstein GAN, ICML 2017", **_GAN),
    reference_loss("hinge_gan", formula="D: max(0, 1 - D) real, max(0, 1 + D) fake; G: -D", module=HingeGANLoss,
                   reference="Lim & Ye, Geometric GAN, arXiv 1705.02894; Miyato et al., Spectral Normalization for "
                   "GANs, ICLR 2018", **_GAN),
    reference_loss("vae_kl", formula="sum_d (mu**2 + exp(logvar) - 1 - logvar)/2", module=VAEKLLoss,
                   input="gaussian_mean", target="log_variance",
                   reference="Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014", **_GEN),
    reference_loss("cycle_consistency", formula="lambda_cycle*mean |F(G(x)) - x|", module=CycleConsistencyLoss,
                   input="reconstructions", target="images",
                   reference="Zhu et al., Unpaired Image-to-Image Translation "
                   "using Cycle-Consistent Adversarial Networks, ICCV 2017", **_GEN),
    reference_loss("noise_prediction", formula="mean (eps_hat - eps)**2, x_t = sqrt(abar_t)*x0 + sqrt(1 - abar_t)*eps",
                   module=NoisePredictionLoss, input="noise_prediction", target="noise",
                   reference="Ho, Jain & Abbeel, Denoising Diffusion Probabilistic Models, NeurIPS 2020", **_GEN),
]
