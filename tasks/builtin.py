"""The built-in tasks: scikit-learn's bundled datasets and synthetic data, all offline.

Every split is fixed: data are drawn and split with fixed seeds, stratified
for classification (60 / 20 / 20 % train / validation / test unless stated).
Budgets are chosen so that the task's baseline loss reaches its usual quality
while one evaluation stays cheap on a CPU (see ``lossforge tasks``).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from lossforge.primitives import did_you_mean

from .errors import TaskError
from .task import Task

SPLIT_SEED = 0


def _split(X, y, stratify: bool, seed: int = SPLIT_SEED, fractions=(0.6, 0.2, 0.2)):
    """(X_train, y_train, X_val, y_val, X_test, y_test) with fixed seeds."""
    from sklearn.model_selection import train_test_split

    test = fractions[2]
    val = fractions[1] / (fractions[0] + fractions[1])
    X_rest, X_test, y_rest, y_test = train_test_split(X, y, test_size=test, random_state=seed,
                                                      stratify=y if stratify else None)
    X_train, X_val, y_train, y_val = train_test_split(X_rest, y_rest, test_size=val, random_state=seed + 1,
                                                      stratify=y_rest if stratify else None)
    return X_train, y_train, X_val, y_val, X_test, y_test


# ----------------------------------------------------------------------------- builders
def _digits() -> Task:
    from sklearn import datasets

    X, y = datasets.load_digits(return_X_y=True)
    return Task("digits", "multiclass", *_split(X, y, True), metric="accuracy", model="mlp:64", steps=500,
                batch_size=64, lr=1e-3, description="8x8 handwritten digits (load_digits), 10 classes")


def _digits_noisy() -> Task:
    from sklearn import datasets

    X, y = datasets.load_digits(return_X_y=True)
    X_tr, y_tr, X_va, y_va, X_te, y_te = _split(X, y, True)
    rng = np.random.default_rng(1)
    y_noisy = y_tr.copy()
    flip = rng.permutation(len(y_tr))[: round(0.4 * len(y_tr))]
    # Symmetric noise: a flipped label goes to one of the 9 other classes, uniformly.
    y_noisy[flip] = (y_tr[flip] + rng.integers(1, 10, size=len(flip))) % 10
    return Task("digits_noisy", "multiclass", X_tr, y_noisy, X_va, y_va, X_te, y_te, metric="accuracy",
                model="mlp:64", steps=500, batch_size=64, lr=1e-3,
                description="digits with 40% symmetric label noise in the training labels; clean val/test")


def _breast_cancer() -> Task:
    from sklearn import datasets

    X, y = datasets.load_breast_cancer(return_X_y=True)
    return Task("breast_cancer", "binary", *_split(X, y, True), metric="accuracy", model="mlp:32", steps=300,
                batch_size=32, lr=1e-3, description="Wisconsin breast cancer (load_breast_cancer), malignant vs benign")


def _wine() -> Task:
    from sklearn import datasets

    X, y = datasets.load_wine(return_X_y=True)
    return Task("wine", "multiclass", *_split(X, y, True), metric="accuracy", model="mlp:32", steps=300,
                batch_size=32, lr=1e-3, description="wine cultivars (load_wine), 3 classes, 178 samples")


def _imbalanced() -> Task:
    from sklearn import datasets

    X, y = datasets.make_classification(n_samples=4000, n_features=20, n_informative=6, n_redundant=4,
                                        weights=[0.95], flip_y=0.01, class_sep=0.8, random_state=0)
    return Task("imbalanced", "binary", *_split(X, y, True), metric="balanced_accuracy", model="mlp:64",
                steps=500, batch_size=64, lr=1e-3,
                description="synthetic binary classification (make_classification), 95/5 class balance")


def _diabetes() -> Task:
    from sklearn import datasets

    X, y = datasets.load_diabetes(return_X_y=True)
    return Task("diabetes", "regression", *_split(X, y, False), metric="mse", model="mlp:32", steps=500,
                batch_size=32, lr=1e-3, description="diabetes progression (load_diabetes), 442 patients")


def _friedman_outliers() -> Task:
    from sklearn import datasets

    X, y = datasets.make_friedman1(n_samples=2000, n_features=10, noise=0.5, random_state=0)
    X_tr, y_tr, X_va, y_va, X_te, y_te = _split(X, y, False)
    rng = np.random.default_rng(2)
    y_tr = y_tr.copy()
    bad = rng.permutation(len(y_tr))[: round(0.1 * len(y_tr))]
    # Gross outliers: shifted by 5 to 15 standard deviations, either way.
    y_tr[bad] += rng.choice([-1.0, 1.0], size=len(bad)) * rng.uniform(5, 15, size=len(bad)) * y.std()
    return Task("friedman_outliers", "regression", X_tr, y_tr, X_va, y_va, X_te, y_te, metric="mae",
                model="mlp:64", steps=500, batch_size=64, lr=1e-3,
                description="make_friedman1 with 10% gross outliers in the training targets; MAE on clean val/test")


def _quantile90() -> Task:
    rng = np.random.default_rng(3)
    n = 3000
    X = rng.uniform(-2, 2, size=(n, 3))
    scale = 0.1 + 0.6 * np.abs(X[:, 0])  # heteroscedastic: the noise grows with |x0|
    y = np.sin(1.5 * X[:, 0]) + 0.5 * X[:, 1] + scale * rng.standard_normal(n)
    return Task("quantile90", "regression", *_split(X, y, False), metric="pinball:0.9", model="mlp:64",
                steps=500, batch_size=64, lr=1e-3,
                description="heteroscedastic synthetic regression; the metric is the pinball loss at 0.9")


def _sine() -> Task:
    # ML3 (Bechtle et al. 2021) sine regression, meta-test setting of its public code:
    # y = A sin(x - phase), A ~ U[0.2, 5], phase ~ U[-pi, pi], x ~ U[-5, 5], 100 training
    # points, MLP 1-100-10-1 (ReLU), full-batch training.  One sinusoid is drawn from a
    # fixed seed; validation and test are fresh points of the same sinusoid.
    rng = np.random.default_rng(4)
    amplitude, phase = rng.uniform(0.2, 5.0), rng.uniform(-math.pi, math.pi)

    def draw(n):
        x = rng.uniform(-5, 5, size=(n, 1))
        return x, amplitude * np.sin(x[:, 0] - phase)

    (X_tr, y_tr), (X_va, y_va), (X_te, y_te) = draw(100), draw(200), draw(500)
    return Task("sine", "regression", X_tr, y_tr, X_va, y_va, X_te, y_te, metric="mse", model="mlp:100-10",
                steps=500, batch_size=100, lr=1e-2,
                description=f"ML3 sine regression: A sin(x - phi), A={amplitude:.2f}, phi={phase:.2f}, 100 points")


def make_shapes(n: int, size: int = 16, seed: int = 5, noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic segmentation: 1-3 filled rectangles or discs on a noisy, shaded background.

    Returns images ``[n, size, size]`` (float) and 0/1 masks of the shapes.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, size, size))
    masks = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        m = np.zeros((size, size), dtype=bool)
        for _ in range(rng.integers(1, 4)):
            if rng.random() < 0.5:
                h, w = rng.integers(3, 8, size=2)
                top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
                m[top:top + h, left:left + w] = True
            else:
                r = rng.uniform(1.8, 4.0)
                cy, cx = rng.uniform(r, size - r, size=2)
                m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        # A linear shading of the background makes a fixed threshold insufficient.
        gx, gy = rng.uniform(-0.06, 0.06, size=2)
        shading = gx * (xx - size / 2) + gy * (yy - size / 2)
        images[i] = m * 1.0 + shading + noise * rng.standard_normal((size, size))
        masks[i] = m
    return images, masks


def _shapes() -> Task:
    X, y = make_shapes(600)
    n_tr, n_va = 360, 120
    return Task("shapes", "segmentation", X[:n_tr], y[:n_tr], X[n_tr:n_tr + n_va], y[n_tr:n_tr + n_va],
                X[n_tr + n_va:], y[n_tr + n_va:], metric="iou", model="cnn:8-8", steps=300, batch_size=16,
                lr=3e-3, description="synthetic segmentation: noisy 16x16 images of rectangles and discs, per-pixel masks")


def _mnist1d(name: str, model, noise: float = 0.0, steps: int = 1000, lr: float = 1e-2, note: str = "") -> Task:
    from .mnist1d import mnist1d_splits

    return Task(name, "multiclass", *mnist1d_splits(noise), metric="accuracy", model=model, steps=steps,
                batch_size=100, lr=lr, description=f"MNIST-1D (Greydanus 2020, make_dataset): 40-step 1-D "
                                                   f"sequences, 10 classes{note}")


def _mnist1d_cnn() -> Task:
    from .mnist1d import MNIST1DCNN

    return _mnist1d("mnist1d", MNIST1DCNN, note="; the paper's 1-D CNN")


def _mnist1d_noisy() -> Task:
    from .mnist1d import MNIST1DCNN

    return _mnist1d("mnist1d_noisy", MNIST1DCNN, noise=0.4,
                    note="; 40% symmetric training-label noise, clean val/test; 1-D CNN")


def _mnist1d_mlp() -> Task:
    from .mnist1d import MNIST1DMLP

    return _mnist1d("mnist1d_mlp", MNIST1DMLP, steps=1500, lr=1e-3, note="; the paper's MLP 100-100")


BUILDERS: dict[str, Callable[[], Task]] = {
    "digits": _digits,
    "digits_noisy": _digits_noisy,
    "breast_cancer": _breast_cancer,
    "wine": _wine,
    "imbalanced": _imbalanced,
    "diabetes": _diabetes,
    "friedman_outliers": _friedman_outliers,
    "quantile90": _quantile90,
    "sine": _sine,
    "shapes": _shapes,
    "mnist1d": _mnist1d_cnn,
    "mnist1d_noisy": _mnist1d_noisy,
    "mnist1d_mlp": _mnist1d_mlp,
    "boxes": lambda: __import__("lossforge.tasks.vision", fromlist=["boxes_task"]).boxes_task(),
    "embeddings": lambda: __import__("lossforge.tasks.vision", fromlist=["embeddings_task"]).embeddings_task(),
}
_BUILT: dict[str, Task] = {}


def names() -> list[str]:
    """Names of the built-in tasks."""
    return list(BUILDERS)


def get(name: str) -> Task:
    """A built-in task by name (built once per process, then shared: tasks are read-only)."""
    if not isinstance(name, str) or name not in BUILDERS:
        raise TaskError(f"unknown task {name!r}{did_you_mean(str(name), BUILDERS)}; "
                        f"known tasks: {', '.join(BUILDERS)}")
    if name not in _BUILT:
        _BUILT[name] = BUILDERS[name]()
    return _BUILT[name]


def tasks_table(tasks: list[Task] | None = None) -> str:
    """The table ``lossforge tasks`` prints: one row per task with its data, model, metric and budget."""
    tasks = [get(n) for n in names()] if tasks is None else tasks
    header = ("name", "kind", "train/val/test", "model", "metric", "steps x batch", "optimizer")
    rows = [header]
    for t in tasks:
        arrow = "↑" if t.direction == "max" else "↓"
        rows.append((t.name, t.kind, f"{t.n_train}/{t.n_val}/{t.n_test}", t.describe_model(), f"{t.metric} {arrow}",
                     f"{t.steps} x {t.effective_batch_size}", f"{t.optimizer} lr={t.lr:g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
