"""The measured fast path for the built-in spec models: hand-stacked MLP and CNN populations.

Same interface as :class:`lossforge.tasks.population.PopulationModel`
(``params``, ``forward(x, train) -> [K, out, N]``, ``freeze``), same initial
weights (``models.initial_weights``), same results up to float rounding
(tested against the ``torch.func`` path).  It exists because it is faster
where the spec allows a better layout than ``vmap`` finds:
``experiments/bench_evaluation.py`` prints both.

MLP: activations are kept feature-major, ``[K, features, B]``; the first layer
of all K models is one matrix product ``W[K*h, d] @ X^T[d, B]`` (the input
batch is shared: common random numbers) where ``vmap`` runs K small batched
products, and later layers are batched products ``W[K] @ H[K]`` with no
transposes in between.  CNN: one convolution with ``K*c`` output channels
for the first layer and grouped convolutions (``groups=K``) after it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import ModelSpec, initial_weights


class StackedSpecPopulation:
    """K models of one spec with stacked parameters; ``forward(x) -> [K, outputs, N]``.

    MLP input is ``[B, *sample_shape]`` (flattened); CNN input ``[B, channels, H, W]``,
    output ``N = B*H*W`` (sample-major, pixels inner).
    """

    batched = True
    fallback_reason = None

    def __init__(self, spec: ModelSpec, inputs: int, outputs: int, kind: str, k: int, seed: int,
                 device: torch.device | str = "cpu"):
        self.spec, self.inputs, self.outputs, self.kind, self.k = spec, inputs, outputs, kind, k
        one = initial_weights(spec, inputs, outputs, seed)
        self.params: list[torch.Tensor] = []
        for w in one:
            if w.dim() == 1:  # biases as [K, out, 1] (MLP, broadcast over B) or [K, out] (CNN)
                w = w.unsqueeze(-1) if spec.arch == "mlp" else w
            stacked = w.unsqueeze(0).expand(k, *w.shape).contiguous().to(device)
            self.params.append(stacked.requires_grad_(True))

    def n_params_per_model(self) -> int:
        return sum(p[0].numel() for p in self.params)

    def forward(self, x: torch.Tensor, train: bool = True) -> torch.Tensor:
        if self.spec.arch == "cnn":
            return self._forward_cnn(x)
        return self._forward_mlp(x.reshape(x.shape[0], -1).t())

    __call__ = forward

    def freeze(self, rows: torch.Tensor) -> None:
        """No buffers to reset (the trainer zeroes the parameters)."""

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


def make_population(task, k: int, seed: int, device, probe=None, fast: bool | None = None):
    """The population model for ``task``: the stacked fast path for a spec model (unless
    ``fast=False`` or the task was built with ``fast_path=False``), else ``torch.func``."""
    from .population import PopulationModel

    source = task.model_source
    use_fast = task.fast_path if fast is None else fast
    if use_fast and source.spec is not None:
        return StackedSpecPopulation(source.spec, source.inputs, source.outputs, task.kind, k, seed, device)
    return PopulationModel(source, task.kind, k, seed, device, randomness=task.randomness, probe=probe)
