"""Tasks with structured targets: ``boxes`` (box regression) and ``embeddings`` (metric learning).

``boxes``: small generated images (numpy, seeded) holding one rectangle or
ellipse on a shaded, noisy background; a small CNN predicts its box.  The
network outputs Fast R-CNN deltas ``(dx, dy, dw, dh)`` relative to one fixed
anchor (the image's central box of half its size); the box losses see the
decoded boxes ``[B, 4]`` ``(x1, y1, x2, y2)`` in units of the image side, the
element-wise losses (``smooth_l1``, ``balanced_l1``, ``mse``, any expression in
``p, y``) the deltas against the target deltas.  Metric: mean IoU on the test
images.

``embeddings``: scikit-learn's 8x8 digits (bundled, no download) embedded by
an MLP into 16 dimensions, trained on digits 0-6; the metric is recall@1 on
the held-out digits 7-9 (each sample's nearest other sample by cosine
similarity has its label).  Pair losses see all pairs of a batch, the triplet
loss all valid triplets ("batch all"), the batch losses (NT-Xent, ArcFace,
CosFace, center) the embeddings and labels, the paired-view losses (InfoNCE,
text-image matching) the embeddings of two noisy views of the batch.  The
class parameters of ArcFace, CosFace and center loss train with the model.

The K losses of a call train K copies of the model at once through
``torch.func`` (``population.PopulationModel``), with the same initial weights,
minibatches and augmentation noise from the seed; a loss whose value or
gradient is not finite is reported as diverged, the others continue.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lossforge.losses import ExpressionLoss, Loss
from lossforge.losses.boxes import BoxGeometry
from lossforge.losses.embedding import pairs_from_labels, triplets_from_labels
from lossforge.primitives import Expr, as_expr, did_you_mean

from .data import data_fingerprint, positive_int, readonly
from .errors import TaskError
from .models import ModelSource
from .population import PopulationModel
from .task import Result
from .trainer import epoch_batches, resolve_device

KINDS = ("boxes", "embeddings")
ANCHOR = (0.5, 0.5, 0.5, 0.5)  # centre x, centre y, width, height, in units of the image side


# ------------------------------------------------------------------ data
def make_box_images(n: int, size: int = 24, seed: int = 0, noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``[n, 1, size, size]`` of one filled rectangle or ellipse, and its box
    ``[n, 4]`` ``(x1, y1, x2, y2)`` in units of the image side (pixel edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    images = np.empty((n, 1, size, size), dtype=np.float32)
    boxes = np.empty((n, 4), dtype=np.float32)
    for i in range(n):
        w, h = rng.uniform(0.2, 0.7, size=2) * size
        x1, y1 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        if rng.random() < 0.5:
            shape = (xx >= x1) & (xx <= x1 + w) & (yy >= y1) & (yy <= y1 + h)
        else:
            cx, cy = x1 + w / 2, y1 + h / 2
            shape = ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1
        gx, gy = rng.uniform(-0.03, 0.03, size=2)
        background = gx * (xx - size / 2) + gy * (yy - size / 2)
        images[i, 0] = shape * rng.uniform(0.6, 1.0) + background + noise * rng.standard_normal((size, size))
        boxes[i] = (x1 / size, y1 / size, (x1 + w) / size, (y1 + h) / size)
    return images, boxes


def boxes_to_deltas(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` -> Fast R-CNN deltas ``(dx, dy, log(w/aw), log(h/ah))`` against :data:`ANCHOR`."""
    ax, ay, aw, ah = ANCHOR
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return torch.stack([(cx - ax) / aw, (cy - ay) / ah, torch.log(w / aw), torch.log(h / ah)], dim=1)


def deltas_to_boxes(deltas: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`boxes_to_deltas`; log-sizes are clamped at 4 (a box 27 anchors wide)."""
    ax, ay, aw, ah = ANCHOR
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * deltas[:, 2].clamp(max=4).exp(), ah * deltas[:, 3].clamp(max=4).exp()
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def digits_by_class(train_classes=range(7)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits of ``train_classes`` for training; the other digits split in half for val and test."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    seen = np.isin(y, list(train_classes))
    held = np.flatnonzero(~seen)
    order = np.random.default_rng(0).permutation(held)
    half = len(order) // 2
    return {"train": (X[seen], y[seen]), "val": (X[order[:half]], y[order[:half]]),
            "test": (X[order[half:]], y[order[half:]])}


# ------------------------------------------------------------------ models
class BoxCNN(nn.Module):
    """Two strided conv layers and two linear layers: ``[B, 1, 24, 24]`` -> box deltas ``[B, 4]``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, 4))

    def forward(self, x):
        return self.head(self.features(x))


class EmbeddingMLP(nn.Module):
    """``[B, 64]`` digit pixels -> ``[B, 16]`` embeddings."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 16))

    def forward(self, x):
        return self.net(x)


# ------------------------------------------------------------------ metrics
def mean_iou(pred_boxes: torch.Tensor, true_boxes: torch.Tensor) -> float:
    """Mean IoU of paired boxes (an invalid predicted box counts as IoU 0)."""
    w = (pred_boxes[:, 2] - pred_boxes[:, 0]).clamp_min(0)
    h = (pred_boxes[:, 3] - pred_boxes[:, 1]).clamp_min(0)
    valid = torch.cat([pred_boxes[:, :2], pred_boxes[:, :2] + torch.stack([w, h], 1)], 1)
    return float(BoxGeometry(valid.double(), true_boxes.double(), eps=1e-12).iou.mean())


def recall_at_1(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose nearest other sample (cosine similarity) has the same label."""
    e = F.normalize(embeddings.double(), dim=1)
    s = e @ e.T
    s.fill_diagonal_(-math.inf)
    return float((labels[s.argmax(dim=1)] == labels).double().mean())


# ------------------------------------------------------------------ losses on the task's outputs
def _expression_module(loss) -> nn.Module:
    return ExpressionLoss(as_expr(loss), "regression", reduction="none")


class _Candidate:
    """One loss prepared for a structured task: its module and how to call it, or why it does not apply."""

    def __init__(self, label: str, module: nn.Module | None = None, call=None, error: str | None = None,
                 views: int = 1):
        self.label, self.module, self.call, self.error, self.views = label, module, call, error, views


def _per_sample(out: torch.Tensor) -> torch.Tensor:
    return out.reshape(out.shape[0], -1).mean(dim=1) if out.dim() > 1 else out


def _prepare(loss, task: "StructuredTask") -> _Candidate:
    label = loss.name if isinstance(loss, Loss) else str(loss)
    try:
        if isinstance(loss, (Expr, str)):
            if task.kind != "boxes":
                return _Candidate(label, error=f"an expression in (p, y) does not apply to the {task.kind} task "
                                               f"'{task.name}' (no per-sample target to compare with)")
            module = _expression_module(loss)
            return _Candidate(label, module, lambda m, z, z2, t: _per_sample(m(z, boxes_to_deltas(t))))
        if not isinstance(loss, Loss):
            return _Candidate(label, error=f"cannot train with a {type(loss).__name__}: pass a catalogue Loss "
                                           "(lossforge.losses.get(name)) or, for boxes, an expression")
        if task.kind not in loss.task_kinds:
            kinds = ", ".join(loss.task_kinds) or "no"
            return _Candidate(label, error=f"loss '{label}' trains {kinds} tasks, not the {task.kind} task "
                                           f"'{task.name}'")
        extra = {"num_classes": task.num_classes, "embedding_size": task.outputs} \
            if "num_classes" in loss.extra_args else {}
        module = loss.module(reduction="none", **extra)
        call, views = _caller(loss, task.kind)
        return _Candidate(label, module, call, views=views)
    except Exception as exc:  # a loss that cannot be built is reported, the others train
        return _Candidate(label, error=f"{type(exc).__name__}: {exc}")


def _caller(loss: Loss, kind: str):
    """``call(module, z [B, out], z2 (second view) or None, targets) -> [B or pairs]`` and the views it needs."""
    if kind == "boxes":
        if loss.input == "boxes":
            return (lambda m, z, z2, t: m(deltas_to_boxes(z), t)), 1
        return (lambda m, z, z2, t: _per_sample(m(z, boxes_to_deltas(t)))), 1  # element-wise, on the deltas
    if loss.input == "embedding_pairs":
        signed = loss.target == "signed"

        def pairs(m, z, z2, t):
            a, b, same = pairs_from_labels(z, t)
            return m(a, b, 2 * same - 1 if signed else same)

        return pairs, 1
    if loss.input == "embedding_triplets":
        return (lambda m, z, z2, t: m(*triplets_from_labels(z, t))), 1
    if loss.target == "embeddings":  # two views of each sample are its positive pair
        return (lambda m, z, z2, t: m(z, z2)), 2
    return (lambda m, z, z2, t: m(z, t)), 1


# ------------------------------------------------------------------ the task
class StructuredTask:
    """A ``boxes`` or ``embeddings`` task, scored like :class:`~lossforge.tasks.Task` (``evaluate``,
    ``baseline``, ``metric``, ``direction``), for catalogue losses of its kind."""

    optimizer, weight_decay, momentum, grad_clip, randomness, reference = "adam", 0.0, 0.0, None, "same", None

    def __init__(self, name: str, kind: str, splits: dict, model: type[nn.Module], *, metric: str, baseline: str,
                 steps: int, batch_size: int, lr: float, description: str, augment: float = 0.3):
        if kind not in KINDS:
            raise TaskError(f"unknown structured task kind {kind!r}{did_you_mean(str(kind), KINDS)}")
        self.name, self.kind, self.metric, self.baseline, self.description = name, kind, metric, baseline, description
        self.direction = "max"
        self.steps, self.batch_size, self.lr, self.augment = steps, batch_size, lr, augment
        self.X_train, self.y_train = (readonly(a) for a in splits["train"])
        self.X_val, self.y_val = (readonly(a) for a in splits["val"])
        self.X_test, self.y_test = (readonly(a) for a in splits["test"])
        self.num_classes = int(self.y_train.max()) + 1 if kind == "embeddings" else 1
        self.model_source = ModelSource(model, int(np.prod(self.X_train.shape[1:])), 0)
        self.outputs = int(self.model_source.make(0)(torch.tensor(self.X_train[:2])).shape[1])
        self.model_source.outputs = self.outputs
        self._fingerprint: str | None = None

    # views used by compare, the tasks table and the search
    n_train = property(lambda self: len(self.X_train))
    n_val = property(lambda self: len(self.X_val))
    n_test = property(lambda self: len(self.X_test))
    effective_batch_size = property(lambda self: min(self.batch_size, self.n_train))
    model = property(lambda self: self.model_source.name)
    expression_space = property(lambda self: "real" if self.kind == "boxes" else None)

    def describe_model(self) -> str:
        return f"{self.model_source.name} -> {self.outputs}"

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            settings = repr((self.kind, self.metric, self.steps, self.batch_size, self.lr, self.augment,
                             self.model_source.fingerprint()))
            data = data_fingerprint(self.X_train, self.y_train, self.X_val, self.y_val, self.X_test, self.y_test)
            self._fingerprint = data_fingerprint(np.frombuffer((settings + data).encode(), dtype=np.uint8))
        return self._fingerprint

    def __repr__(self) -> str:
        return (f"StructuredTask({self.name!r}, kind={self.kind!r}, metric={self.metric!r}, steps={self.steps}, "
                f"n_train={self.n_train}, n_val={self.n_val}, n_test={self.n_test})")

    def _score(self, out: torch.Tensor, split: str) -> float:
        y = torch.tensor(getattr(self, f"y_{split}"), device=out.device)
        return mean_iou(deltas_to_boxes(out), y) if self.kind == "boxes" else recall_at_1(out, y)

    def evaluate(self, losses, seed: int = 0, steps: int | None = None, split: str = "val", device=None,
                 time_limit: float | None = None, max_population: int | None = None) -> list[Result]:
        """Train one model per loss (all at once) and score it on ``split``; one Result per loss."""
        if isinstance(losses, (str, Expr, Loss)):
            losses = [losses]
        losses = list(losses)
        steps = self.steps if steps is None else positive_int("steps", steps)
        if split not in ("train", "val", "test"):
            raise TaskError(f"unknown split {split!r}; use train, val or test")
        dev = resolve_device(device)
        cands = [_prepare(loss, self) for loss in losses]
        live = [c for c in cands if c.error is None]
        outcome = {id(c): ("error", math.nan, c.error, 0) for c in cands if c.error is not None}
        start = time.perf_counter()
        if live:
            outcome.update(self._train(live, seed, steps, split, dev, time_limit))
        share = (time.perf_counter() - start) / max(len(live), 1)
        return [Result(loss=c.label, metric=outcome[id(c)][1], status=outcome[id(c)][0], error=outcome[id(c)][2],
                       train_time=share if c.error is None else 0.0, steps=outcome[id(c)][3], seed=seed)
                for c in cands]

    def _train(self, cands: list[_Candidate], seed: int, steps: int, split: str, dev, time_limit) -> dict:
        k = len(cands)
        X = torch.tensor(self.X_train, device=dev)
        Y = torch.tensor(self.y_train, device=dev)
        pop = PopulationModel(self.model_source, "multiclass", k, seed, dev)  # layout [K, out, B]
        for c in cands:
            c.module.to(dev)
        extra = [p for c in cands for p in c.module.parameters() if p.requires_grad]
        opt = torch.optim.Adam(pop.params + extra, lr=self.lr)
        noise = torch.Generator(device=dev).manual_seed(int(seed) ^ 0x76696577)
        two_views = any(c.views == 2 for c in cands)
        alive = [True] * k
        result: dict = {}
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        batches = (torch.from_numpy(idx).to(dev) for rows in epoch_batches(self.n_train, self.effective_batch_size,
                                                                           steps, seed) for idx in rows)
        done = 0
        for step in range(steps):
            if deadline is not None and time.perf_counter() > deadline:
                break
            idx = next(batches)
            xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
            if self.kind == "embeddings":  # two noisy views, drawn every step whoever needs them (common noise)
                views = [xb + self.augment * torch.randn(xb.shape, generator=noise, device=dev) for _ in range(2)]
                z, z2 = pop(views[0]), (pop(views[1]) if two_views else None)
            else:
                z, z2 = pop(xb), None
            terms = []
            for i, c in enumerate(cands):
                if not alive[i]:
                    continue
                try:
                    value = c.call(c.module, z[i].T, None if z2 is None else z2[i].T, yb).mean()
                except Exception as exc:
                    alive[i] = False
                    result[id(c)] = ("error", math.nan, f"loss module failed at step {step}: "
                                                         f"{type(exc).__name__}: {exc}", step)
                    continue
                if not bool(torch.isfinite(value)):
                    alive[i] = False
                    result[id(c)] = ("diverged", math.nan, f"non-finite loss at step {step}", step)
                    continue
                terms.append(value)
            if not terms:
                break
            opt.zero_grad(set_to_none=False)
            sum(terms).backward()
            with torch.no_grad():  # a model whose gradient is not finite stops; the others continue
                for p in pop.params:
                    if p.grad is None:
                        continue
                    bad = ~torch.isfinite(p.grad.view(k, -1)).all(dim=1)
                    for i in bad.nonzero().flatten().tolist():
                        if alive[i]:
                            alive[i] = False
                            result[id(cands[i])] = ("diverged", math.nan, f"non-finite gradient at step {step}", step)
                    p.grad[~torch.tensor(alive, device=dev)] = 0
            opt.step()
            done = step + 1
        with torch.no_grad():
            out = pop(torch.tensor(getattr(self, f"X_{split}"), device=dev), train=False)  # [K, out, N]
        for i, c in enumerate(cands):
            if id(c) in result:
                continue
            if done < steps:
                result[id(c)] = ("error", math.nan, f"time limit reached after {done} of {steps} steps", done)
                continue
            value = self._score(out[i].T, split) if bool(torch.isfinite(out[i]).all()) else math.nan
            result[id(c)] = ("ok", value, None, done) if math.isfinite(value) else \
                ("diverged", math.nan, f"non-finite outputs on the {split} split", done)
        return result


def boxes_task() -> StructuredTask:
    images, boxes = make_box_images(1200, seed=0)
    splits = {"train": (images[:800], boxes[:800]), "val": (images[800:1000], boxes[800:1000]),
              "test": (images[1000:], boxes[1000:])}
    return StructuredTask("boxes", "boxes", splits, BoxCNN, metric="mean_iou", baseline="smooth_l1", steps=400,
                          batch_size=32, lr=3e-3, description="synthetic box regression: 24x24 noisy images of one "
                          "rectangle or ellipse, a small CNN predicts its box (anchor deltas)")


def embeddings_task() -> StructuredTask:
    return StructuredTask("embeddings", "embeddings", digits_by_class(), EmbeddingMLP, metric="recall@1",
                          baseline="contrastive", steps=400, batch_size=64, lr=1e-3,
                          description="metric learning: sklearn digits 0-6 embedded by an MLP (16-d); recall@1 "
                          "on the held-out digits 7-9")
