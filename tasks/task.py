"""The Task: data splits, model, budget and metric, and ``evaluate`` for candidate losses.

A Task holds numpy arrays, plain values and its model source (a spec, or the
user's ``nn.Module`` class, factory or template), so it pickles small and
cheap (a search ships it to its workers once through the object store);
torch tensors are made on first use on a device and are not pickled.  See
``data.py`` for the accepted data and ``models.py`` for the accepted models.
Arrays are read-only.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass

import numpy as np
import torch

from lossforge.primitives import Expr, did_you_mean, parse

from .candidates import prepare
from .data import (TaskTensors, as_array, check_shapes, data_fingerprint, encode_targets, materialise, positive_float,
                   positive_int, readonly, standardise)
from .errors import TaskError
from .metrics import Metric, get_metric, user_metric
from .models import ModelSource, ModelSpec
from .population import RANDOMNESS, output_layout
from .trainer import Outcome, default_max_population, resolve_device, train_population

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


def _is_dataset(value) -> bool:
    return isinstance(value, torch.utils.data.Dataset) and not isinstance(value, torch.Tensor)


class Task:
    """A training task for scoring losses; build one with :meth:`from_arrays` or ``get(name)``.

    ``model``: a spec string (``"mlp:64"``, ``"linear"``, ``"cnn:8-8"``), an
    ``nn.Module`` subclass, a zero-argument factory, or an ``nn.Module``
    instance used as a template (see ``lossforge.tasks.models``).  It maps
    inputs ``[B, *sample_shape]`` to ``[B, C]`` (multiclass), ``[B]`` or
    ``[B, 1]`` (binary, regression), ``[B, 1, H, W]`` or ``[B, H, W]``
    (segmentation).  ``metric``: a metric name, or a function
    ``metric(decisions, targets) -> float`` with ``metric_direction`` "max"
    or "min".  ``standardize=False`` keeps inputs as given.
    ``randomness``: "same" (default: all models of a population see the same
    dropout masks, so a loss's result does not depend on its neighbours) or
    "different" (see ``lossforge.tasks.population``).  On the hand-stacked
    layout of spec models that holds bit for bit.  Through ``torch.func`` the
    batched kernels may round differently for a different population size
    (measured on the MNIST-1D CNN: model 0's logits differ by 3e-8 between
    populations of 1 and 3, and after 300 steps its accuracy by 0.02), so there
    a result is reproducible for the same losses in the same order -- as every
    search's populations are -- and equal only up to that rounding otherwise.  ``fast_path=False``
    trains a spec model through ``torch.func`` like a user's module (the
    default hand-stacked layout is faster; same results).
    """

    def __init__(self, name: str, kind: str, X_train, y_train, X_val, y_val, X_test=None, y_test=None, *,
                 metric=None, model=None, steps: int = 500, batch_size: int = 64, lr: float = 1e-3,
                 optimizer: str = "adam", weight_decay: float = 0.0, momentum: float = 0.0,
                 grad_clip: float | None = None, num_classes: int | None = None, description: str = "",
                 standardize: bool = True, metric_direction: str | None = None, randomness: str = "same",
                 fast_path: bool = True):
        if not isinstance(name, str) or not name.strip():
            raise TaskError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        if kind not in KINDS:
            raise TaskError(f"unknown task kind {kind!r}{did_you_mean(str(kind), KINDS)}; use one of {', '.join(KINDS)}")
        self.kind = kind
        self.description = description
        self.reference: str | None = None  # how to rebuild this task in another process ("module:function")
        # ---------------------------------------------------------------- budget
        self.steps = positive_int("steps", steps)
        self.batch_size = positive_int("batch_size", batch_size)
        self.lr = positive_float("lr", lr)
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
        self.grad_clip = None if grad_clip is None else positive_float("grad_clip", grad_clip)
        if randomness not in RANDOMNESS:
            raise TaskError(f"randomness={randomness!r}; use 'same' (common dropout masks) or 'different'")
        self.randomness = randomness
        self.fast_path = bool(fast_path)  # spec models: the hand-stacked layout (tasks/stacked.py)
        if not isinstance(standardize, bool):
            raise TaskError(f"standardize must be True or False, got {standardize!r}")
        if callable(metric) and not isinstance(metric, Metric):
            self._metric = user_metric(metric, metric_direction, kind)
        else:
            self._metric = get_metric(metric if metric is not None else DEFAULT_METRIC[kind], kind)

        # ---------------------------------------------------------------- data
        splits = {"train": (X_train, y_train), "val": (X_val, y_val)}
        if (X_test is None) != (y_test is None) and not _is_dataset(X_test):
            raise TaskError("give both X_test and y_test, or neither")
        if X_test is not None:
            splits["test"] = (X_test, y_test)
        arrays = {}
        for split, (X, y) in splits.items():
            if _is_dataset(X):
                if y is not None:
                    raise TaskError(f"X_{split} is a Dataset of (input, target) pairs: pass y_{split}=None")
                X, y = materialise(f"X_{split}", X)
            X = as_array(f"X_{split}", X, dtype=np.float64)
            y = as_array(f"y_{split}", y)
            if X.ndim == 0 or X.shape[0] == 0:
                raise TaskError(f"X_{split} is empty")
            if y.ndim == 0 or X.shape[0] != y.shape[0]:
                raise TaskError(f"X_{split} has {X.shape[0]} samples but y_{split} has "
                                f"{y.shape[0] if y.ndim else 0}; they must match")
            arrays[split] = (X, y)
        check_shapes(kind, arrays)
        encoded, self.num_classes = encode_targets(kind, arrays, num_classes)
        self.y_train, self.y_val = readonly(encoded["train"]), readonly(encoded["val"])
        self.y_test = readonly(encoded.get("test"))
        if kind == "regression":
            self.target_mean = float(self.y_train.mean())
            std = float(self.y_train.std())
            self.target_std = std if std > 0 else 1.0
        else:
            self.target_mean, self.target_std = 0.0, 1.0
        scaled, self.feature_mean, self.feature_std = standardise(kind, arrays, standardize)
        self.X_train, self.X_val, self.X_test = scaled["train"], scaled["val"], scaled.get("test")
        if kind in ("multiclass", "binary", "segmentation") and len(np.unique(self.y_train)) < 2:
            raise TaskError(f"y_train has a single class ({np.unique(self.y_train)[0]}); a classifier needs two or more")
        self._tensor_cache: dict = {}
        self._fingerprint: str | None = None

        # ---------------------------------------------------------------- model
        if model is None:
            model = "cnn:8-8" if kind == "segmentation" else "mlp:64"
        inputs = int(self.X_train.shape[1]) if kind == "segmentation" else int(np.prod(self.X_train.shape[1:]))
        self.model_source = ModelSource(model, inputs, self.output_dim)
        spec = self.model_source.spec
        if spec is not None and (kind == "segmentation") != (spec.arch == "cnn"):
            raise TaskError(f"model '{spec}' does not fit a {kind} task: segmentation tasks need a fully "
                            "convolutional 'cnn:...' model (or your own nn.Module), other tasks an 'mlp:...' or "
                            "'linear' model (or your own nn.Module)")
        self.model_stats = self._probe_model()

    def _probe_model(self) -> tuple[int, int]:
        """Build the model once and run it on a few training samples: the output must fit the task.

        Returns (parameters per model, activation values per sample) for the memory estimate.
        """
        model = self.model_source.make(0)
        n = min(self.n_train, max(2, min(self.batch_size, 8)))
        x = torch.tensor(self.X_train[:n])
        acts = [0]

        def count(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                acts[0] += output.numel()

        hooks = [m.register_forward_hook(count) for m in model.modules()]
        try:
            with torch.random.fork_rng(devices=[]):
                out = model(x)
        except Exception as exc:
            raise TaskError(f"model {self.model_source.name} raised {type(exc).__name__} on a batch of shape "
                            f"{list(x.shape)}: {exc}") from None
        finally:
            for h in hooks:
                h.remove()
        if not isinstance(out, torch.Tensor):
            raise TaskError(f"model {self.model_source.name} returned a {type(out).__name__}, not a tensor")
        output_layout(out, self.kind, self.output_dim, n)  # a TaskError naming the expected and the got shape
        n_params = sum(p.numel() for p in model.parameters())
        return int(n_params), int(max(acts[0], out.numel()) // n + 1)

    @classmethod
    def from_arrays(cls, X_train, y_train, X_val, y_val, X_test=None, y_test=None, *, kind: str = "regression",
                    metric=None, model=None, steps: int = 500, batch_size: int = 64,
                    lr: float = 1e-3, name: str = "custom", **options) -> "Task":
        """A task from your own data: numpy arrays, torch tensors, or map-style Datasets.

        Inputs of any sample shape (``[N, F]``, ``[N, L]``, ``[N, C, L]``,
        ``[N, C, H, W]``; segmentation ``[N, (C,) H, W]`` with 0/1 masks).  A
        Dataset of ``(x, y)`` pairs is passed as ``X_*`` with ``y_*=None``.
        ``kind``: "multiclass" (integer labels), "binary" (0/1), "regression"
        or "segmentation".  ``metric`` defaults to accuracy, IoU or MSE, or is
        your function with ``metric_direction``; ``model`` defaults to
        ``"mlp:64"`` (``"cnn:8-8"`` for segmentation) or is your ``nn.Module``
        (class, factory or instance).  Further options: ``optimizer`` ("adam",
        "adamw", "sgd"), ``weight_decay``, ``momentum``, ``grad_clip`` (per
        model), ``num_classes``, ``standardize``, ``randomness``, ``description``.
        """
        return cls(name, kind, X_train, y_train, X_val, y_val, X_test, y_test, metric=metric, model=model,
                   steps=steps, batch_size=batch_size, lr=lr, **options)

    @classmethod
    def from_datasets(cls, train, val, test=None, **kwargs) -> "Task":
        """A task from map-style ``torch.utils.data.Dataset`` objects of ``(input, target)`` pairs."""
        return cls.from_arrays(train, None, val, None, test, None, **kwargs)

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
    def model_spec(self) -> ModelSpec | None:
        """The built-in spec of the model, or None for a user's nn.Module."""
        return self.model_source.spec

    @property
    def model(self) -> str:
        return self.model_source.name

    @property
    def expression_space(self) -> str:
        return EXPRESSION_SPACE[self.kind]

    @property
    def baseline(self) -> str:
        return BASELINE[self.kind]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.X_train.shape[1:])

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return self.sample_shape if self.kind == "segmentation" else None

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
        return self.model_source.describe()

    def fingerprint(self) -> str:
        """SHA-256 of what determines this task's results: data, kind, metric, budget and model architecture."""
        if self._fingerprint is None:
            settings = repr((self.kind, self.metric, self.direction, self.steps, self.batch_size, self.lr,
                             self.optimizer, self.weight_decay, self.momentum, self.grad_clip, self.num_classes,
                             self.randomness, self.model_source.fingerprint()))
            data = data_fingerprint(self.X_train, self.y_train, self.X_val, self.y_val, self.X_test, self.y_test)
            self._fingerprint = data_fingerprint(np.frombuffer((settings + data).encode(), dtype=np.uint8))
        return self._fingerprint

    def __repr__(self) -> str:
        return (f"Task({self.name!r}, kind={self.kind!r}, metric={self.metric!r}, model={self.model!r}, "
                f"steps={self.steps}, batch_size={self.batch_size}, lr={self.lr:g}, "
                f"n_train={self.n_train}, n_val={self.n_val}, n_test={self.n_test})")

    # ------------------------------------------------------------------ pickling: arrays and the model source
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tensor_cache"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for key in ("X_train", "X_val", "X_test", "y_train", "y_val", "y_test", "feature_mean", "feature_std"):
            readonly(getattr(self, key, None))

    # ------------------------------------------------------------------ evaluation
    def _tensors(self, device: torch.device) -> TaskTensors:
        key = str(device)
        if key not in self._tensor_cache:
            self._tensor_cache = {key: TaskTensors(self, device)}  # keep one device's copy
        return self._tensor_cache[key]

    def evaluate(self, losses, seed: int = 0, steps: int | None = None, split: str = "val", device=None,
                 time_limit: float | None = None, max_population: int | None = None) -> list[Result]:
        """Train one model per loss and score it on ``split``; one :class:`Result` per loss, in order.

        ``losses``: Expr objects, expression text (``"-y*log(p)"``) or catalogue
        ``Loss`` objects, mixed freely; text that does not parse raises
        :class:`~lossforge.primitives.GrammarError` at once (a result with
        ``status="error"`` is for a loss that fails while training).  All models
        share the initial weights, minibatch order and dropout masks drawn from
        ``seed``.  ``steps`` overrides the task's
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
        # Text is parsed once, here: a typo is the caller's mistake (GrammarError with the parser's message).
        texts = [loss if isinstance(loss, str) else None for loss in losses]
        losses = [parse(loss) if isinstance(loss, str) else loss for loss in losses]
        steps = self.steps if steps is None else positive_int("steps", steps)
        if split not in SPLITS:
            raise TaskError(f"unknown split {split!r}{did_you_mean(str(split), SPLITS)}; use one of {', '.join(SPLITS)}")
        if split == "test" and self.X_test is None:
            raise TaskError(f"task '{self.name}' has no test split; evaluate on 'val' or build it with X_test/y_test")
        if time_limit is not None:
            time_limit = positive_float("time_limit", time_limit)
        dev = resolve_device(device)
        if max_population is None:
            max_population = default_max_population(self, dev)
        else:
            max_population = positive_int("max_population", max_population)

        start = time.perf_counter()
        deadline = None if time_limit is None else start + time_limit
        candidates = [prepare(loss, self) for loss in losses]
        for c, text in zip(candidates, texts):
            if text is not None:
                c.label = text  # results are labelled with the text as given
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
        except TaskError:
            raise  # the task's fault (e.g. the model's output shape), not a failed candidate
        except Exception as exc:
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
