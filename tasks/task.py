"""The Task: data splits, model, budget and metric, and ``evaluate`` for candidate losses.

A Task holds only numpy arrays and plain values, so it pickles small and
cheap (a search ships it to its workers once); torch tensors are made on
first use on a device and are not pickled.  Features are standardised with
statistics of the training split only (per feature; per channel for
images); regression targets are standardised the same way for training and
metrics are reported in the original units.  Arrays are read-only.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass

import numpy as np
import torch

from lossforge.primitives import Expr, did_you_mean

from .candidates import prepare
from .errors import TaskError
from .metrics import get_metric
from .models import ModelSpec, parse_model
from .trainer import Outcome, _EVAL_SAMPLES, default_max_population, resolve_device, train_population

KINDS = ("multiclass", "binary", "regression", "segmentation")
OPTIMIZERS = ("adam", "adamw", "sgd")
SPLITS = ("train", "val", "test")
EXPRESSION_SPACE = {"multiclass": "probability", "binary": "probability", "segmentation": "probability",
                    "regression": "real"}
BASELINE = {"multiclass": "cross_entropy", "binary": "bce_with_logits", "segmentation": "bce_with_logits",
            "regression": "mse"}
DEFAULT_METRIC = {"multiclass": "accuracy", "binary": "accuracy", "segmentation": "iou", "regression": "mse"}


@dataclass(frozen=True)
class Result:
    """The outcome of training with one loss.

    ``metric`` is the task metric on the evaluated split (nan unless ``status``
    is ``"ok"``); ``error`` says why a loss diverged or failed; ``train_time``
    is this loss's share of the wall-clock time of its population (seconds);
    ``steps`` the training steps it completed.
    """

    loss: str
    metric: float
    status: str
    error: str | None
    train_time: float
    steps: int
    seed: int

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ----------------------------------------------------------------------------- validation helpers
def _array(name: str, value, *, dtype=None) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{name} is not a numeric array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TaskError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise TaskError(f"{name} contains {bad} NaN or infinite values; drop or impute them before building the task")
    return arr


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise TaskError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise TaskError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a.setflags(write=False)
    return a


class Task:
    """A training task for scoring losses; build one with :meth:`from_arrays` or ``get(name)``."""

    def __init__(self, name: str, kind: str, X_train, y_train, X_val, y_val, X_test=None, y_test=None, *,
                 metric: str | None = None, model=None, steps: int = 500, batch_size: int = 64, lr: float = 1e-3,
                 optimizer: str = "adam", weight_decay: float = 0.0, momentum: float = 0.0,
                 grad_clip: float | None = None, num_classes: int | None = None, description: str = ""):
        if not isinstance(name, str) or not name.strip():
            raise TaskError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        if kind not in KINDS:
            raise TaskError(f"unknown task kind {kind!r}{did_you_mean(str(kind), KINDS)}; use one of {', '.join(KINDS)}")
        self.kind = kind
        self.description = description
        # ---------------------------------------------------------------- budget and model
        self.steps = _positive_int("steps", steps)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.lr = _positive_float("lr", lr)
        if optimizer not in OPTIMIZERS:
            raise TaskError(f"unknown optimizer {optimizer!r}{did_you_mean(str(optimizer), OPTIMIZERS)}; "
                            f"use one of {', '.join(OPTIMIZERS)}")
        self.optimizer = optimizer
        for label, v in (("weight_decay", weight_decay), ("momentum", momentum)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise TaskError(f"{label} must be a non-negative number, got {v!r}")
        if momentum and optimizer != "sgd":
            raise TaskError(f"momentum applies to optimizer 'sgd' only (got optimizer {optimizer!r})")
        self.weight_decay, self.momentum = float(weight_decay), float(momentum)
        self.grad_clip = None if grad_clip is None else _positive_float("grad_clip", grad_clip)
        self.model_spec: ModelSpec = parse_model(model if model is not None else
                                                 ("cnn:8-8" if kind == "segmentation" else "mlp:64"))
        if (kind == "segmentation") != (self.model_spec.arch == "cnn"):
            raise TaskError(f"model '{self.model_spec}' does not fit a {kind} task: segmentation tasks need a "
                            "fully convolutional 'cnn:...' model, other tasks an 'mlp:...' or 'linear' model")
        self._metric = get_metric(metric if metric is not None else DEFAULT_METRIC[kind], kind)

        # ---------------------------------------------------------------- data
        splits = {"train": (X_train, y_train), "val": (X_val, y_val)}
        if (X_test is None) != (y_test is None):
            raise TaskError("give both X_test and y_test, or neither")
        if X_test is not None:
            splits["test"] = (X_test, y_test)
        arrays = {}
        for split, (X, y) in splits.items():
            X = _array(f"X_{split}", X, dtype=np.float64)
            y = _array(f"y_{split}", y)
            if X.ndim == 0 or X.shape[0] == 0:
                raise TaskError(f"X_{split} is empty")
            if y.ndim == 0 or X.shape[0] != y.shape[0]:
                raise TaskError(f"X_{split} has {X.shape[0]} samples but y_{split} has "
                                f"{y.shape[0] if y.ndim else 0}; they must match")
            arrays[split] = (X, y)
        self._check_shapes(arrays)
        self._set_targets(arrays, num_classes)
        self._standardise(arrays)
        if self.kind in ("multiclass", "binary", "segmentation") and len(np.unique(self.y_train)) < 2:
            raise TaskError(f"y_train has a single class ({np.unique(self.y_train)[0]}); a classifier needs two or more")
        self._tensor_cache: dict = {}

    # ------------------------------------------------------------------ construction steps
    def _check_shapes(self, arrays) -> None:
        X0 = arrays["train"][0]
        if self.kind == "segmentation":
            if X0.ndim not in (3, 4):
                raise TaskError(f"segmentation X_train must be images [N, H, W] or [N, C, H, W], got shape {X0.shape}")
        elif X0.ndim != 2:
            raise TaskError(f"X_train must be a 2-D array [samples, features], got shape {X0.shape}; "
                            "reshape it (images: use kind='segmentation' or flatten)")
        for split, (X, y) in arrays.items():
            if X.shape[1:] != X0.shape[1:]:
                raise TaskError(f"X_{split} has sample shape {X.shape[1:]} but X_train has {X0.shape[1:]}")
            if self.kind == "segmentation":
                image = X.shape[-2:]
                if y.shape[1:] != image and y.shape[1:] != (1, *image):
                    raise TaskError(f"y_{split} must hold one mask per image of shape {image}, got {y.shape[1:]}")
            elif y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
                raise TaskError(f"y_{split} must be one target per sample (shape [N]), got shape {y.shape}")

    def _set_targets(self, arrays, num_classes) -> None:
        kind = self.kind
        out = {}
        for split, (X, y) in arrays.items():
            if kind == "segmentation":
                y = y.reshape(y.shape[0], -1)
            else:
                y = y.reshape(-1)
            if kind == "regression":
                out[split] = y.astype(np.float64)
                continue
            if not np.all(np.equal(np.mod(y, 1), 0)):
                raise TaskError(f"y_{split} must hold integer class labels for a {kind} task; "
                                "use kind='regression' for real-valued targets")
            y = y.astype(np.int64)
            if kind in ("binary", "segmentation") and not np.isin(y, (0, 1)).all():
                raise TaskError(f"y_{split} of a {kind} task must be 0/1, found labels {np.unique(y)[:6].tolist()}")
            if y.min() < 0:
                raise TaskError(f"y_{split} has negative class labels; labels must be 0..C-1")
            out[split] = y
        if kind == "multiclass":
            seen = max(int(v.max()) for v in out.values()) + 1
            if num_classes is None:
                num_classes = seen
            elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < seen:
                raise TaskError(f"num_classes={num_classes!r} but the labels go up to {seen - 1}")
            if num_classes < 2:
                raise TaskError("a multiclass task needs at least 2 classes")
            self.num_classes = int(num_classes)
        else:
            self.num_classes = 2 if kind != "regression" else 1
        self.y_train = _readonly(out["train"])
        self.y_val = _readonly(out["val"])
        self.y_test = _readonly(out.get("test"))
        if kind == "regression":
            self.target_mean = float(self.y_train.mean())
            std = float(self.y_train.std())
            self.target_std = std if std > 0 else 1.0
        else:
            self.target_mean, self.target_std = 0.0, 1.0

    def _standardise(self, arrays) -> None:
        X0 = arrays["train"][0]
        if self.kind == "segmentation":
            if X0.ndim == 3:
                arrays = {s: (X[:, None], y) for s, (X, y) in arrays.items()}
                X0 = arrays["train"][0]
            axes = (0, 2, 3)  # per channel
            mean = X0.mean(axis=axes, keepdims=True)
            std = X0.std(axis=axes, keepdims=True)
        else:
            mean = X0.mean(axis=0, keepdims=True)
            std = X0.std(axis=0, keepdims=True)
        std = np.where(std > 0, std, 1.0)  # constant features (digits' blank pixels) stay 0
        self.feature_mean = _readonly(mean.astype(np.float64))
        self.feature_std = _readonly(std.astype(np.float64))
        scaled = {s: _readonly(((X - mean) / std).astype(np.float32)) for s, (X, _) in arrays.items()}
        self.X_train, self.X_val = scaled["train"], scaled["val"]
        self.X_test = scaled.get("test")

    @classmethod
    def from_arrays(cls, X_train, y_train, X_val, y_val, X_test=None, y_test=None, *, kind: str = "regression",
                    metric: str | None = None, model=None, steps: int = 500, batch_size: int = 64,
                    lr: float = 1e-3, name: str = "custom", **options) -> "Task":
        """A task from your own arrays (features ``[N, F]``, or images ``[N, (C,) H, W]`` for segmentation).

        ``kind``: "multiclass" (integer labels), "binary" (0/1), "regression" or
        "segmentation" (0/1 masks).  ``metric`` defaults to accuracy, IoU or MSE;
        ``model`` to ``"mlp:64"`` (``"cnn:8-8"`` for segmentation).  Further
        options: ``optimizer`` ("adam", "adamw", "sgd"), ``weight_decay``,
        ``momentum``, ``grad_clip`` (per model), ``num_classes``, ``description``.
        """
        return cls(name, kind, X_train, y_train, X_val, y_val, X_test, y_test, metric=metric, model=model,
                   steps=steps, batch_size=batch_size, lr=lr, **options)

    # ------------------------------------------------------------------ views
    @property
    def metric(self) -> str:
        return self._metric.name

    @property
    def direction(self) -> str:
        return self._metric.direction

    @property
    def metric_fn(self):
        return self._metric

    @property
    def model(self) -> str:
        return str(self.model_spec)

    @property
    def expression_space(self) -> str:
        return EXPRESSION_SPACE[self.kind]

    @property
    def baseline(self) -> str:
        return BASELINE[self.kind]

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return tuple(self.X_train.shape[1:]) if self.kind == "segmentation" else None

    @property
    def pixels(self) -> int:
        return int(np.prod(self.X_train.shape[2:])) if self.kind == "segmentation" else 1

    @property
    def input_dim(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.kind == "multiclass" else 1

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.X_val.shape[0])

    @property
    def n_test(self) -> int:
        return 0 if self.X_test is None else int(self.X_test.shape[0])

    @property
    def n_eval_max(self) -> int:
        return max(self.n_train, self.n_val, self.n_test)

    @property
    def effective_batch_size(self) -> int:
        return min(self.batch_size, self.n_train)

    def describe_model(self) -> str:
        return self.model_spec.describe(self.input_dim, self.output_dim)

    def __repr__(self) -> str:
        return (f"Task({self.name!r}, kind={self.kind!r}, metric={self.metric!r}, model={self.model!r}, "
                f"steps={self.steps}, batch_size={self.batch_size}, lr={self.lr:g}, "
                f"n_train={self.n_train}, n_val={self.n_val}, n_test={self.n_test})")

    # ------------------------------------------------------------------ pickling: arrays only
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tensor_cache"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for key in ("X_train", "X_val", "X_test", "y_train", "y_val", "y_test", "feature_mean", "feature_std"):
            _readonly(getattr(self, key, None))

    # ------------------------------------------------------------------ evaluation
    def _tensors(self, device: torch.device) -> "_TaskTensors":
        key = str(device)
        if key not in self._tensor_cache:
            self._tensor_cache = {key: _TaskTensors(self, device)}  # keep one device's copy
        return self._tensor_cache[key]

    def evaluate(self, losses, seed: int = 0, steps: int | None = None, split: str = "val", device=None,
                 time_limit: float | None = None, max_population: int | None = None) -> list[Result]:
        """Train one model per loss and score it on ``split``; one :class:`Result` per loss, in order.

        ``losses``: Expr objects, expression text (``"-y*log(p)"``) or catalogue
        ``Loss`` objects, mixed freely.  All models share the initial weights and
        minibatch order drawn from ``seed``.  ``steps`` overrides the task's
        budget; ``device`` defaults to ``cuda`` when available, else ``cpu``;
        ``time_limit`` (seconds, for the whole call) marks the losses still
        training when it runs out as errors; ``max_population`` caps how many
        models train at once (default: from a memory estimate).
        """
        if isinstance(losses, (str, Expr)) or hasattr(losses, "module"):
            losses = [losses]
        try:
            losses = list(losses)
        except TypeError:
            raise TaskError(f"losses must be a list of expressions or catalogue losses, got {type(losses).__name__}") from None
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TaskError(f"seed must be a non-negative integer, got {seed!r}")
        seed = int(seed)
        steps = self.steps if steps is None else _positive_int("steps", steps)
        if split not in SPLITS:
            raise TaskError(f"unknown split {split!r}{did_you_mean(str(split), SPLITS)}; use one of {', '.join(SPLITS)}")
        if split == "test" and self.X_test is None:
            raise TaskError(f"task '{self.name}' has no test split; evaluate on 'val' or build it with X_test/y_test")
        if time_limit is not None:
            time_limit = _positive_float("time_limit", time_limit)
        dev = resolve_device(device)
        if max_population is None:
            max_population = default_max_population(self, dev)
        else:
            max_population = _positive_int("max_population", max_population)

        start = time.perf_counter()
        deadline = None if time_limit is None else start + time_limit
        candidates = [prepare(loss, self) for loss in losses]
        outcomes: list[Outcome | None] = [None] * len(candidates)
        times = [0.0] * len(candidates)
        for i, c in enumerate(candidates):
            if c.error is not None:
                outcomes[i] = Outcome("error", error=c.error)
        trainable = [i for i, c in enumerate(candidates) if c.error is None]
        if trainable:
            data = self._tensors(dev)
            for lo in range(0, len(trainable), max_population):
                chunk = trainable[lo:lo + max_population]
                self._run_chunk(chunk, candidates, outcomes, times, data, seed, steps, split, dev, deadline, time_limit)
        return [Result(loss=c.label, metric=o.metric if o.status == "ok" else math.nan, status=o.status,
                       error=o.error, train_time=t, steps=o.steps, seed=seed)
                for c, o, t in zip(candidates, outcomes, times)]

    def _run_chunk(self, chunk, candidates, outcomes, times, data, seed, steps, split, dev, deadline, time_limit):
        if deadline is not None and time.perf_counter() > deadline:
            for i in chunk:
                outcomes[i] = Outcome("error", error=f"time limit of {time_limit:g} s reached before training started")
            return
        t0 = time.perf_counter()
        try:
            got = train_population(self, data, [candidates[i] for i in chunk], seed=seed, steps=steps,
                                   split=split, device=dev, deadline=deadline)
        except Exception as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            if len(chunk) == 1:
                outcomes[chunk[0]] = Outcome("error", error=f"training failed: {type(exc).__name__}: {exc}")
                times[chunk[0]] = time.perf_counter() - t0
                return
            # Find the candidate that breaks the batched step; the others still train.
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                self._run_chunk(part, candidates, outcomes, times, data, seed, steps, split, dev, deadline, time_limit)
            return
        share = (time.perf_counter() - t0) / len(chunk)
        for i, o in zip(chunk, got):
            if o.status == "error" and deadline is not None and o.error and o.error.startswith("time limit"):
                o.error = f"time limit of {time_limit:g} s " + o.error[len("time limit "):]
            outcomes[i] = o
            times[i] = share


class _TaskTensors:
    """A task's arrays as tensors on one device, in the layouts the trainer uses."""

    def __init__(self, task: Task, device: torch.device):
        self.device = device
        self.kind = task.kind
        self.cnn = task.model_spec.arch == "cnn"
        self.n_train = task.n_train
        self.batch = task.effective_batch_size
        self.pixels = task.pixels

        def x(a):
            t = torch.tensor(a, device=device)
            return t if self.cnn else t.t().contiguous()  # MLPs take X^T [features, N]

        self.X = {"train": x(task.X_train), "val": x(task.X_val)}
        raw = {"train": task.y_train, "val": task.y_val}
        if task.X_test is not None:
            self.X["test"] = x(task.X_test)
            raw["test"] = task.y_test
        if task.kind == "regression":
            y_train = (task.y_train - task.target_mean) / task.target_std
            self.y_train = torch.tensor(y_train, dtype=torch.float32, device=device)
            self.y_eval = {s: torch.tensor(v, dtype=torch.float64, device=device) for s, v in raw.items()}
        else:
            self.y_train = torch.tensor(task.y_train, device=device)
            self.y_eval = {s: torch.tensor(v.reshape(-1), device=device) for s, v in raw.items()}
        # Targets as the expressions see them, for all training samples: [columns, n, pixels].
        t = self.y_train.view(task.n_train, -1)
        if task.kind == "multiclass":
            cols = torch.nn.functional.one_hot(t[:, 0], task.num_classes).t().unsqueeze(-1)
        elif task.kind in ("binary", "segmentation"):
            cols = torch.stack([1 - t, t])
        else:
            cols = t.unsqueeze(0)
        self._y_columns = cols.to(torch.float32).contiguous()

    def expression_targets(self, idx: torch.Tensor) -> torch.Tensor:
        """The expressions' ``y`` for a batch: ``[columns, N]`` (classes or the two binary columns first)."""
        cols = self._y_columns.index_select(1, idx)
        return cols.view(cols.shape[0], -1)

    def train_batch(self, idx: torch.Tensor):
        xb = self.X["train"].index_select(0 if self.cnn else 1, idx)
        return xb, self.y_train.index_select(0, idx)

    def eval_chunks(self, split: str):
        X = self.X[split]
        if self.cnn:
            step = max(1, _EVAL_SAMPLES // max(self.pixels, 1) * 4)
            return [X[i:i + step] for i in range(0, X.shape[0], step)]
        return [X[:, i:i + _EVAL_SAMPLES] for i in range(0, X.shape[1], _EVAL_SAMPLES)]

    def eval_targets(self, split: str) -> torch.Tensor:
        return self.y_eval[split]
