"""Model specifications and population models: K independent models in stacked weights.

A spec is written ``"mlp:64"`` (one hidden layer of 64 ReLU units),
``"mlp:100-10"``, ``"linear"`` (no hidden layer) or ``"cnn:8-8"`` (a fully
convolutional net: 3x3 convolutions with 8 and 8 channels, ReLU, then a 1x1
convolution to the outputs, for segmentation).

Population layout.  Activations are kept feature-major, ``[K, features, B]``:
the first layer of all K MLPs is then one matrix product
``W[K*h, d] @ X^T[d, B]`` (the input batch is shared: common random
numbers), and later layers are batched products ``W[K] @ H[K]``, with no
transposes in between.  CNNs use one convolution with ``K*c`` output channels
for the first layer and grouped convolutions (``groups=K``) after it.
Every parameter tensor has the population as its first dimension, so
``param.view(K, -1)`` is one row per model.  Initialisation follows
``nn.Linear``/``nn.Conv2d`` (uniform in +-1/sqrt(fan_in)), drawn once from the
seed and copied to all K models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import TaskError

ARCHS = ("mlp", "cnn")


@dataclass(frozen=True)
class ModelSpec:
    arch: str  # "mlp" | "cnn"
    widths: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.arch == "mlp" and not self.widths:
            return "linear"
        return f"{self.arch}:{'-'.join(str(w) for w in self.widths)}"

    def describe(self, inputs: int, outputs: int) -> str:
        """E.g. ``mlp 64-64-10`` (input, hidden and output widths)."""
        if self.arch == "cnn":
            return f"cnn {inputs}-{'-'.join(str(w) for w in self.widths)}-{outputs} (3x3)"
        return f"mlp {'-'.join(str(w) for w in (inputs, *self.widths, outputs))}"

    def n_params(self, inputs: int, outputs: int) -> int:
        sizes = (inputs, *self.widths, outputs)
        if self.arch == "cnn":
            ks = [9] * len(self.widths) + [1]
            return sum(a * b * k + b for a, b, k in zip(sizes[:-1], sizes[1:], ks))
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

    def flops_per_sample(self, inputs: int, outputs: int, pixels: int = 1) -> int:
        """Multiply-adds x 2 of one forward pass for one sample (one pixel grid for a CNN)."""
        weights = self.n_params(inputs, outputs) - sum((*self.widths, outputs))
        return 2 * weights * pixels


def parse_model(spec) -> ModelSpec:
    """``"mlp:64"``, ``"mlp:100-10"``, ``"linear"``, ``"cnn:8-8"``, a ModelSpec or a tuple of widths."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, (tuple, list)) and all(isinstance(w, int) for w in spec):
        spec = "mlp:" + "-".join(str(w) for w in spec) if spec else "linear"
    if not isinstance(spec, str):
        raise TaskError(f"model must be a spec such as 'mlp:64' or 'cnn:8-8', got {spec!r}")
    text = spec.strip().lower()
    if text == "linear":
        return ModelSpec("mlp", ())
    arch, _, rest = text.partition(":")
    if arch not in ARCHS:
        from lossforge.primitives import did_you_mean

        raise TaskError(f"unknown model '{spec}'{did_you_mean(arch, ARCHS + ('linear',))}; "
                        "write 'mlp:64', 'mlp:100-10', 'linear' or 'cnn:8-8'")
    try:
        widths = tuple(int(w) for w in rest.replace(",", "-").split("-") if w.strip()) if rest else ()
    except ValueError:
        raise TaskError(f"model '{spec}': widths must be integers separated by '-', e.g. 'mlp:64-64'") from None
    if any(w <= 0 for w in widths):
        raise TaskError(f"model '{spec}': every width must be positive")
    if arch == "cnn" and not widths:
        raise TaskError(f"model '{spec}': a cnn needs at least one hidden channel count, e.g. 'cnn:8-8'")
    return ModelSpec(arch, widths)


def _uniform(gen: torch.Generator, shape, fan_in: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound


def initial_weights(spec: ModelSpec, inputs: int, outputs: int, seed: int) -> list[torch.Tensor]:
    """One model's initial parameters (CPU, float32), drawn from ``seed``.

    MLP: per layer ``W [out, in]``, ``b [out]``; CNN: ``W [out, in, k, k]``, ``b [out]``.
    """
    gen = torch.Generator().manual_seed(int(seed) % (2**63))
    sizes = (inputs, *spec.widths, outputs)
    out = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if spec.arch == "cnn":
            k = 3 if i < len(spec.widths) else 1
            fan_in = a * k * k
            out += [_uniform(gen, (b, a, k, k), fan_in), _uniform(gen, (b,), fan_in)]
        else:
            out += [_uniform(gen, (b, a), a), _uniform(gen, (b,), a)]
    return out


def reference_model(spec: ModelSpec, inputs: int, outputs: int, seed: int | None = None) -> nn.Module:
    """The same architecture as one plain ``nn.Sequential`` (for baselines and tests).

    With ``seed``, its weights are the population's initial weights for that seed.
    """
    sizes = (inputs, *spec.widths, outputs)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        if spec.arch == "cnn":
            layers.append(nn.Conv2d(a, b, 1 if last else 3, padding=0 if last else 1))
        else:
            layers.append(nn.Linear(a, b))
        if not last:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    if seed is not None:
        weights = initial_weights(spec, inputs, outputs, seed)
        with torch.no_grad():
            for p, w in zip(model.parameters(), weights):
                p.copy_(w)
    return model


class PopulationModel:
    """K models of one spec with stacked parameters; ``forward(x) -> [K, outputs, N]``.

    MLP input ``x`` is ``X^T``: ``[inputs, B]`` (feature-major), output ``N = B``.
    CNN input is ``[B, channels, H, W]``; output ``N = B*H*W`` (sample-major, pixels inner).
    """

    def __init__(self, spec: ModelSpec, inputs: int, outputs: int, k: int, seed: int,
                 device: torch.device | str = "cpu"):
        self.spec, self.inputs, self.outputs, self.k = spec, inputs, outputs, k
        one = initial_weights(spec, inputs, outputs, seed)
        self.params: list[torch.Tensor] = []
        for w in one:
            if w.dim() == 1:  # biases as [K, out, 1] (MLP, broadcast over B) or [K, out] (CNN)
                w = w.unsqueeze(-1) if spec.arch == "mlp" else w
            stacked = w.unsqueeze(0).expand(k, *w.shape).contiguous().to(device)
            self.params.append(stacked.requires_grad_(True))

    def n_params_per_model(self) -> int:
        return sum(p[0].numel() for p in self.params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.arch == "cnn":
            return self._forward_cnn(x)
        return self._forward_mlp(x)

    __call__ = forward

    def _forward_mlp(self, xt: torch.Tensor) -> torch.Tensor:
        k = self.k
        w0, b0 = self.params[0], self.params[1]
        width = w0.shape[1]
        h = torch.addmm(b0.view(k * width, 1), w0.view(k * width, -1), xt)
        h = h.view(k, width, -1)
        for i in range(2, len(self.params), 2):
            h = torch.relu(h)
            h = torch.baddbmm(self.params[i + 1], self.params[i], h)
        return h

    def _forward_cnn(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        n_layers = len(self.params) // 2
        h = x
        for i in range(n_layers):
            w, b = self.params[2 * i], self.params[2 * i + 1]
            kernel = w.shape[-1]
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), padding=kernel // 2,
                         groups=1 if i == 0 else k)
            if i < n_layers - 1:
                h = torch.relu(h)
        bsz, _, height, width = h.shape
        # [B, K*out, H, W] -> [K, out, B*H*W]
        return h.view(bsz, k, self.outputs, height * width).permute(1, 2, 0, 3).reshape(k, self.outputs, -1)
