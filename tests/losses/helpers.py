"""Shared test helpers: random, valid inputs for any catalogue entry, in float64."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lossforge.losses import Loss, get

N, C = 12, 5
CLASS_COUNTS = [500, 120, 40, 9, 3]

# Regression entries whose domain is not the whole real line.
_POSITIVE_MEAN = {"poisson_deviance", "tweedie"}
_POSITIVE_TARGET = {"tweedie"}  # Tweedie powers >= 2 need y > 0; zero counts are tested on their own


@dataclass
class Batch:
    """Inputs of one entry: ``raw`` model outputs and ``space_target`` for the
    prediction space (what :func:`per_sample_loss` takes), and what the module's
    ``forward`` takes (``args``)."""

    kind: str            # multiclass | binary | regression | segmentation
    raw: torch.Tensor
    space_target: torch.Tensor
    args: tuple


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def module(name: str, reduction: str, **params):
    """The catalogue entry ``name`` as a module with this reduction."""
    return get(name).module(reduction=reduction, **params)


def close(actual, expected, **tol):
    """``assert_close`` of tensors or numbers, both as float64."""
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), **tol)


def kind_of(loss: Loss) -> str:
    return loss.task_kinds[0] if loss.task_kinds else "regression"


def module_input(loss: Loss, raw: torch.Tensor, kind: str) -> torch.Tensor:
    """Raw outputs -> what ``forward`` takes as its input."""
    if loss.input == "probabilities":
        return torch.sigmoid(raw) if kind == "binary" else F.softmax(raw, dim=1)
    if loss.input == "log_probabilities":
        return F.log_softmax(raw, dim=1)
    return raw


def module_target(loss: Loss, target: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Space targets (indices, 0/1, values) -> what ``forward`` takes as its target."""
    if loss.target == "signed":
        return 2 * target - 1
    if loss.target == "probabilities":
        return F.one_hot(target, num_classes).to(torch.float64)
    return target


def make_batch(loss: Loss, seed: int = 0, n: int = N, dtype=torch.float64) -> Batch:
    g = generator(seed)
    kind = kind_of(loss)
    if loss.convention != "p, y" or loss.input == "routing_logits":
        return convention_batch(loss, g, n, dtype)
    if kind == "segmentation":
        channels = 1 if loss.name == "lovasz_hinge" else 3
        raw = torch.randn(n, channels, 4, 5, generator=g, dtype=dtype) * 2
        if channels == 1:
            target = torch.randint(0, 2, (n, 4, 5), generator=g).to(dtype)
        else:
            target = torch.randint(0, channels, (n, 4, 5), generator=g)
        return Batch(kind, raw, target, (raw, target))
    if kind == "multiclass":
        raw = torch.randn(n, C, generator=g, dtype=dtype) * 2
        target = torch.randint(0, C, (n,), generator=g)
        return Batch(kind, raw, target, (module_input(loss, raw, kind), module_target(loss, target, C)))
    if kind == "binary":
        raw = torch.randn(n, generator=g, dtype=dtype) * 2
        target = torch.randint(0, 2, (n,), generator=g).to(dtype)
        return Batch(kind, raw, target, (module_input(loss, raw, kind), module_target(loss, target)))
    # regression
    if loss.name in _POSITIVE_MEAN:
        raw = torch.rand(n, generator=g, dtype=dtype) * 3 + 0.1
        target = torch.randint(0, 6, (n,), generator=g).to(dtype)
        if loss.name in _POSITIVE_TARGET:
            target = target + torch.rand(n, generator=g, dtype=dtype) + 0.05
    elif loss.name == "poisson_nll":
        raw = torch.randn(n, generator=g, dtype=dtype)
        target = torch.randint(0, 6, (n,), generator=g).to(dtype)
    elif loss.name == "msle":
        raw = torch.rand(n, generator=g, dtype=dtype) * 4
        target = torch.rand(n, generator=g, dtype=dtype) * 4
    elif loss.name == "mape":
        raw = torch.randn(n, generator=g, dtype=dtype) * 2
        target = (torch.rand(n, generator=g, dtype=dtype) + 0.5) * torch.sign(torch.randn(n, generator=g))
    else:
        raw = torch.randn(n, generator=g, dtype=dtype) * 3
        target = torch.randn(n, generator=g, dtype=dtype) * 3
    args: tuple = (raw, target)
    if loss.name == "gaussian_nll":
        args = (raw, target, torch.rand(n, generator=g, dtype=dtype) + 0.1)
    return Batch(kind, raw, target, args)


def build(loss: Loss, **params):
    """``loss.module(**params)``, passing the class counts, class parameters or feature
    extractor that entries need."""
    if "class_counts" in loss.extra_args:
        params.setdefault("class_counts", CLASS_COUNTS)
    if "num_classes" in loss.extra_args:
        params.setdefault("num_classes", EMB_CLASSES)
        params.setdefault("embedding_size", EMB_DIM)
    if "feature_extractor" in loss.extra_args:
        params.setdefault("feature_extractor", feature_extractor())
    if "num_classes" not in loss.extra_args:
        return loss.module(**params)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)  # learnable class parameters: the same initial values in every build
    try:
        return loss.module(**params)
    finally:
        torch.random.set_rng_state(state)


# ------------------------------------------------------------------ conventions beyond (p, y)
EMB_DIM, EMB_CLASSES = 8, 4
IMAGE_SHAPE = (2, 16, 16)   # channels, height, width of the image entries' test batches
MS_SSIM_SIDE = 176          # five scales of an 11-pixel window need a side > 160


def random_boxes(n: int, g: torch.Generator, dtype=torch.float64, scale: float = 4.0) -> torch.Tensor:
    """Valid (x1, y1, x2, y2) boxes: corners in [0, scale), sides in [0.2, 0.2 + scale/2)."""
    corner = torch.rand(n, 2, generator=g, dtype=dtype) * scale
    size = torch.rand(n, 2, generator=g, dtype=dtype) * scale / 2 + 0.2
    return torch.cat([corner, corner + size], dim=1)


def balanced_labels(n: int, classes: int = EMB_CLASSES) -> torch.Tensor:
    """``0, 1, ..., classes-1, 0, 1, ...``: every class the same number of times when n is a multiple."""
    return torch.arange(n) % classes


class SmallFeatures(torch.nn.Module):
    """A fixed small conv net (seeded) standing in for a user's pretrained one; runs in the input's dtype."""

    def __init__(self, channels: int):
        super().__init__()
        g = generator(0)
        self.w1 = torch.nn.Parameter(torch.randn(4, channels, 3, 3, generator=g, dtype=torch.float64) / 3,
                                     requires_grad=False)
        self.w2 = torch.nn.Parameter(torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64) / 6,
                                     requires_grad=False)

    def layer1(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.conv2d(x, self.w1.to(x.dtype), padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.layer1(x), self.w2.to(x.dtype), padding=1)


def feature_extractor(channels: int = IMAGE_SHAPE[0]) -> torch.nn.Module:
    return SmallFeatures(channels)


def convention_batch(loss: Loss, g: torch.Generator, n: int, dtype) -> Batch:
    """Inputs of an entry whose module takes boxes, embeddings, images or generative-model outputs."""
    kind = kind_of(loss)
    inp, tgt = loss.input, loss.target

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=dtype) * scale

    if inp == "boxes":
        target = random_boxes(n, g, dtype)
        raw = target + randn(n, 4, scale=0.6)
        raw = torch.cat([raw[:, :2], torch.maximum(raw[:, 2:], raw[:, :2] + 0.05)], dim=1)
        args: tuple = (raw, target)
    elif inp == "routing_logits":
        raw, target = randn(n, 3, scale=2.0), torch.randint(0, C, (n,), generator=g)
        args = (raw, target)
    elif inp == "embeddings" and tgt == "index":
        raw, target = randn(n, EMB_DIM), balanced_labels(n)
        args = (raw, target)
    elif inp == "embeddings":  # paired views: row i of both is a positive pair
        raw = randn(n, EMB_DIM)
        args = (raw, raw + randn(n, EMB_DIM, scale=0.5))
    elif inp == "embedding_pairs":
        raw = randn(n, EMB_DIM)
        same = torch.randint(0, 2, (n,), generator=g).to(dtype)
        args = (raw, randn(n, EMB_DIM), same if tgt == "binary" else 2 * same - 1)
    elif inp == "embedding_triplets":
        raw = randn(n, EMB_DIM)
        args = (raw, raw + randn(n, EMB_DIM, scale=0.5), randn(n, EMB_DIM))
    elif inp in ("images", "feature_maps", "reconstructions"):
        shape = (min(n, 3), 1, MS_SSIM_SIDE, MS_SSIM_SIDE) if loss.name == "ms_ssim" else (n, *IMAGE_SHAPE)
        raw = torch.rand(*shape, generator=g, dtype=dtype)
        args = (raw, (raw + 0.2 * torch.rand(*shape, generator=g, dtype=dtype)).clamp(0, 1))
    elif inp == "critic_scores":
        raw = randn(n, scale=2.0)
        args = (raw, torch.randint(0, 2, (n,), generator=g).to(dtype))
    elif inp == "gaussian_mean":
        raw = randn(n, EMB_DIM)
        args = (raw, randn(n, EMB_DIM))
    elif inp == "noise_prediction":
        raw = randn(n, *IMAGE_SHAPE)
        args = (raw, randn(n, *IMAGE_SHAPE))
    else:
        raise AssertionError(f"no test batch for input convention {inp!r} of {loss.name}")
    return Batch(kind, raw, args[1], args)


# ------------------------------------------------------------------ checks shared by the loss families' tests
def assert_same(ours, theirs, *inputs, wrt: int | None = None, **tol) -> None:
    """Two loss functions of the same inputs agree in value and in the gradient of their sum
    with respect to the first ``wrt`` inputs (default: every input)."""
    count = len(inputs) if wrt is None else wrt
    results = []
    for fn in (ours, theirs):
        leaves = [x.detach().clone().requires_grad_(True) for x in inputs[:count]]
        out = fn(*leaves, *inputs[count:])
        grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
        results.append((out, grads))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, **tol)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None), "one of the two passes no gradient to an input"
        if x is not None:
            torch.testing.assert_close(x, y, **tol)


def assert_reductions(loss: Loss, args: tuple, n: int) -> None:
    """``'none'`` gives ``n`` values; ``'sum'`` and ``'mean'`` (the default) reduce them."""
    none = build(loss, reduction="none")(*args)
    assert none.shape == (n,)
    torch.testing.assert_close(build(loss, reduction="sum")(*args), none.sum())
    torch.testing.assert_close(build(loss)(*args), none.mean())
