"""Search configuration: a validated dataclass, loadable from TOML.

Every field is checked in ``__post_init__``; a TOML file may group keys in
sections (``[gp]``, ``[evaluation]``, ...) which are flattened, and an unknown
key is answered with the closest known one ("did you mean ...?").
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import tomllib
import contextlib
import contextvars
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from lossforge.primitives import did_you_mean
from lossforge.tasks import Task

from .errors import ConfigError

STRATEGIES = ("gp", "aging", "random", "family")
SELECTIONS = ("tournament", "nsga2", "lexicase")
CONFIRM_RULES = ("aggregate", "significant")
AGGREGATES = ("mean", "median", "min")
SAMPLERS = ("tpe", "cmaes", "random")
FAMILIES = ("taylor", "poly", "focal")
SECTIONS = ("search", "gp", "evaluation", "fidelity", "fitness", "filters", "optuna", "ray", "store", "aging",
            "confirmation")


@dataclass
class SearchConfig:
    """Everything a search needs; ``run(SearchConfig(...))`` or a TOML file.

    Budget: ``generations`` x ``population`` candidates, each trained on every
    task in ``tasks`` for ``steps`` (None: the task's default budget).
    """

    # -- what to search
    tasks: list[str | Task] = field(default_factory=lambda: ["digits"])  # names, "module:function" or Tasks
    strategy: str = "gp"
    name: str = "search"
    seed: int = 0
    generations: int = 10
    population: int = 32
    # -- GP (DEAP)
    selection: str = "tournament"
    tournament_size: int = 3
    crossover_prob: float = 0.6
    mutation_prob: float = 0.35
    elitism: int = 2
    init_min_depth: int = 1
    init_max_depth: int = 3
    max_height: int = 8
    max_size: int = 40
    constant_range: tuple[float, float] = (-2.0, 2.0)
    seed_losses: list[str] = field(default_factory=list)
    primitives: list[str] | None = None
    hall_of_fame: int = 10
    # -- aging evolution: the living population (None: 4 x population); tournaments of tournament_size
    aging_population: int | None = None
    # -- evaluation
    steps: int | None = None
    eval_seeds: int = 1
    split: str = "val"
    workers: int | None = None
    evaluator: str = "ray"
    address: str | None = None
    cpus_per_eval: float = 1.0
    gpus_per_eval: float = 0.0
    chunk_size: int = 16
    time_limit: float | None = 600.0
    max_retries: int = 3
    # -- multi-fidelity (successive halving inside a generation)
    short_steps: int | None = None
    promote_fraction: float = 0.25
    # -- constants tuned in the loop: per candidate with constants, CMA-ES for constant_rounds
    #    generations of constant_variants points, trained at short_steps (0: off)
    constant_variants: int = 0
    constant_rounds: int = 2
    # -- fitness
    aggregate: str = "mean"
    # -- filters
    fingerprint_dedup: bool = True
    screen: bool = True          # strategies redraw proposals that the filters would reject
    direct_check: bool = True
    direct_check_steps: int = 60
    # -- Optuna: constant tuning of the best candidates, and family search
    tune_top: int = 0
    tune_trials: int = 16
    sampler: str = "tpe"
    family: str = "taylor"
    family_params: int | None = None
    # -- confirmation: the top hall-of-fame entries re-trained on fresh seeds next to the baseline
    confirm_top: int = 5
    confirm_seeds: int = 5
    confirm_alpha: float = 0.05
    confirm_rule: str = "aggregate"   # or "significant": also better on one task at p < alpha
    # -- storage
    store: str | None = None
    save_best: int = 1
    loss_store: str | None = None

    def __post_init__(self) -> None:
        self._check_types()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", self.name):
            # it names the run directory and the run id: no path separators, bounded length
            raise ConfigError(f"name = {self.name!r} must be 1-40 letters, digits, '-', '_' or '.', "
                              "starting with a letter or digit")
        if not self.tasks:
            raise ConfigError("tasks is empty; name at least one task (see `lossforge tasks`)")
        from .taskref import is_factory_ref, resolve_task, task_name

        # Built-in names stay names; "module:function" factories are imported and called once, here
        # (unless read with tasks_unresolved(), to look at a finished run without running user code).
        unresolved = _UNRESOLVED.get()
        self.tasks = [resolve_task(t) if isinstance(t, str) and is_factory_ref(t) and not unresolved else t
                      for t in self.tasks]
        names = [task_name(t) for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"tasks lists a task name twice: {names}; give each task its own name")
        for t in self.tasks:
            if isinstance(t, str) and not unresolved:
                task = resolve_task(t)  # an unknown name: one ConfigError line with the known names
                from lossforge.tasks.task import KINDS as SEARCHABLE_KINDS

                if task.kind not in SEARCHABLE_KINDS:  # the structured tasks of tasks/vision.py
                    raise ConfigError(f"task '{t}' is a {task.kind} task: the grammar cannot search it yet (its "
                                      f"losses are reference-only); compare them with `lossforge compare --tasks {t}`")
        self._choice("strategy", STRATEGIES)
        self._choice("selection", SELECTIONS)
        self._choice("aggregate", AGGREGATES)
        self._choice("sampler", SAMPLERS)
        self._choice("confirm_rule", CONFIRM_RULES)
        self._choice("family", FAMILIES)
        self._choice("evaluator", ("ray", "local"))
        self._choice("split", ("val", "test"))
        for name in ("generations", "population", "tournament_size", "max_height", "max_size", "eval_seeds",
                     "chunk_size", "tune_trials", "hall_of_fame", "direct_check_steps"):
            self._positive(name)
        for name in ("elitism", "max_retries", "tune_top", "seed", "save_best", "confirm_top"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} = {getattr(self, name)} must not be negative")
        for name in ("steps", "short_steps", "workers", "family_params", "aging_population"):
            if getattr(self, name) is not None:
                self._positive(name)
        for name in ("crossover_prob", "mutation_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} = {v} must be a probability in [0, 1]")
        if self.crossover_prob + self.mutation_prob > 1.0 + 1e-9:
            raise ConfigError(f"crossover_prob + mutation_prob = {self.crossover_prob + self.mutation_prob:g} "
                              "exceeds 1; lower one of them")
        if self.constant_variants and self.short_steps is None:
            raise ConfigError(f"constant_variants = {self.constant_variants} tunes constants at the short budget; "
                              "set short_steps (e.g. a quarter of steps) or constant_variants = 0")
        if 0 < self.constant_variants < 4 or self.constant_variants < 0 or self.constant_rounds < 1:
            raise ConfigError(f"constant_variants = {self.constant_variants} must be 0 (off) or at least 4 (the "
                              "CMA-ES population per candidate), and "
                              f"constant_rounds = {self.constant_rounds} must be at least 1")
        if self.confirm_top and self.confirm_seeds < 2:
            raise ConfigError(f"confirm_seeds = {self.confirm_seeds}: a paired test needs at least 2 seeds; raise "
                              "it or set confirm_top = 0 (then nothing is confirmed, so nothing is saved)")
        if not 0.0 < self.confirm_alpha < 1.0:
            raise ConfigError(f"confirm_alpha = {self.confirm_alpha} must be in (0, 1), e.g. 0.05")
        if self.strategy == "aging" and self.selection != "tournament":
            raise ConfigError(f"selection = {self.selection!r} applies to strategy 'gp'; aging evolution picks parents "
                              "by tournament (tournament_size) among the living population: drop selection")
        if self.aging_population is not None and self.aging_population < self.tournament_size:
            raise ConfigError(f"aging_population = {self.aging_population} is below tournament_size = "
                              f"{self.tournament_size}; raise it")
        if not 0.0 < self.promote_fraction <= 1.0:
            raise ConfigError(f"promote_fraction = {self.promote_fraction} must be in (0, 1]")
        if self.elitism >= self.population:
            raise ConfigError(f"elitism = {self.elitism} must be smaller than population = {self.population}")
        if self.tournament_size > self.population:
            raise ConfigError(f"tournament_size = {self.tournament_size} exceeds population = {self.population}")
        if self.init_min_depth < 0 or self.init_max_depth < self.init_min_depth:
            raise ConfigError(f"init depths must satisfy 0 <= init_min_depth <= init_max_depth, got "
                              f"{self.init_min_depth}..{self.init_max_depth}")
        if self.init_max_depth > self.max_height:
            raise ConfigError(f"init_max_depth = {self.init_max_depth} exceeds max_height = {self.max_height}")
        lo, hi = self.constant_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"constant_range = {list(self.constant_range)} must be two finite numbers, low < high")
        self.constant_range = (float(lo), float(hi))
        if self.short_steps is not None and self.steps is not None and self.short_steps >= self.steps:
            raise ConfigError(f"short_steps = {self.short_steps} must be below steps = {self.steps}")
        if self.cpus_per_eval <= 0 or self.gpus_per_eval < 0:
            raise ConfigError("cpus_per_eval must be positive and gpus_per_eval not negative")
        if self.time_limit is not None and self.time_limit <= 0:
            raise ConfigError(f"time_limit = {self.time_limit} must be positive (seconds) or omitted")
        if self.store is not None:
            import sqlalchemy as sa

            try:
                sa.engine.make_url(self.store).get_dialect()
            except sa.exc.ArgumentError:
                raise ConfigError(f"store = {self.store!r} is not a database URL; use e.g. "
                                  "'sqlite:////abs/path/runs.db' or 'postgresql://user@host/db'") from None
        if self.primitives is not None:
            from lossforge.primitives import primitives as table

            rows = table()
            for name in self.primitives:
                if name not in rows:
                    raise ConfigError(f"unknown primitive '{name}'{did_you_mean(name, rows)}; "
                                      f"known: {', '.join(rows)}")
            if not any(rows[n].arity == 2 for n in self.primitives):
                raise ConfigError("primitives needs at least one binary operator (e.g. 'add' or 'mul')")
        if self.seed_losses:  # each a loss name or an expression
            from lossforge.losses import LossNotFound, names as loss_names
            from lossforge.losses.lookup import loss_or_expr
            from lossforge.primitives import GrammarError

            for n in self.seed_losses:
                try:
                    loss_or_expr(n)
                except LossNotFound:
                    raise ConfigError(f"unknown loss '{n}' in seed_losses{did_you_mean(str(n), loss_names())}; "
                                      "give a loss name or an expression such as '(p - y)**2'") from None
                except GrammarError as exc:
                    raise GrammarError(f"seed_losses: {n!r} is not a loss name and does not parse: {exc}") from None

    # -- helpers ---------------------------------------------------------
    def _choice(self, name: str, allowed: tuple[str, ...]) -> None:
        v = getattr(self, name)
        if v not in allowed:
            raise ConfigError(f"{name} = {v!r} is not one of {', '.join(allowed)}{did_you_mean(str(v), allowed)}")

    def _positive(self, name: str) -> None:
        v = getattr(self, name)
        if v <= 0:
            raise ConfigError(f"{name} = {v} must be positive")

    def _check_types(self) -> None:
        hints = _hints()
        for f in fields(self):
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                raise ConfigError(f"{f.name} = {value!r} has the wrong type; expected {_describe(hints[f.name])}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} = {value} must be finite")

    # -- I/O -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config", base_dir: str | Path | None = None,
                  tasks: dict[str, Task] | None = None) -> "SearchConfig":
        """A config from (sectioned) keys.  ``module:function`` tasks are imported from ``base_dir`` (the
        config file's folder), the current directory and installed packages; ``tasks`` maps task names or
        references to Task objects to use instead (a resumed run's tasks, rebuilt and checked)."""
        flat: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if isinstance(value, dict) and (key not in known or key in SECTIONS):
                if key not in SECTIONS:
                    raise ConfigError(f"{source}: unknown section [{key}]{did_you_mean(key, SECTIONS)}")
                for k, v in value.items():
                    if k in flat:
                        raise ConfigError(f"{source}: key '{k}' is given twice")
                    flat[k] = v
            else:
                if key in flat:
                    raise ConfigError(f"{source}: key '{key}' is given twice")
                flat[key] = value
        for key in flat:
            if key not in known:
                raise ConfigError(f"{source}: unknown key '{key}'{did_you_mean(key, known)}")
        if "constant_range" in flat and isinstance(flat["constant_range"], list):
            flat["constant_range"] = tuple(flat["constant_range"])
        if isinstance(flat.get("tasks"), list):
            from .taskref import is_factory_ref, resolve_task

            given = tasks or {}
            defer = _UNRESOLVED.get()
            flat["tasks"] = [given[t] if isinstance(t, str) and t in given else
                             resolve_task(t, base_dir) if isinstance(t, str) and is_factory_ref(t) and not defer
                             else t for t in flat["tasks"]]
        return cls(**flat)

    @classmethod
    def from_toml(cls, path: str | Path, tasks: dict[str, Task] | None = None) -> "SearchConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a search config (arrays or tables nested too deeply)") from None
        return cls.from_dict(data, source=str(path), base_dir=path.parent, tasks=tasks)

    def to_dict(self) -> dict[str, Any]:
        """Plain values; a task is written as its name or ``module:function`` reference."""
        from .taskref import reference_of

        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()}
        d["tasks"] = [reference_of(t) for t in self.tasks]
        return d

    def to_toml(self) -> str:
        return tomli_w.dumps({key: value for key, value in self.to_dict().items() if value is not None})

    def replace(self, **changes: Any) -> "SearchConfig":
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """Hash of the settings that determine results (not where they run)."""
        d = self.to_dict()
        for k in ("workers", "evaluator", "address", "store", "loss_store", "time_limit", "max_retries", "name"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


_UNRESOLVED = contextvars.ContextVar("lossforge_tasks_unresolved", default=False)


@contextlib.contextmanager
def tasks_unresolved():
    """Within this block, configs keep their task entries as text (names, ``module:function``): nothing
    is imported or built.  For reading a finished run's settings (reports)."""
    token = _UNRESOLVED.set(True)
    try:
        yield
    finally:
        _UNRESOLVED.reset(token)


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(SearchConfig)


def _matches(value: Any, tp) -> bool:
    """Whether ``value`` fits the dataclass field type ``tp`` (the types SearchConfig uses)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if origin is tuple:
        return (isinstance(value, (list, tuple)) and len(value) == len(args)
                and all(_matches(v, a) for v, a in zip(value, args)))
    if isinstance(tp, type):
        return isinstance(value, tp)
    raise TypeError(f"SearchConfig has a field of type {tp!r} that the validator does not know")  # a bug, not input


def _describe(tp) -> str:
    return str(tp).replace("typing.", "").replace("lossforge.tasks.task.", "").replace("<class '", "").replace("'>", "")


_FIELD_NAMES = tuple(f.name for f in fields(SearchConfig))
_dataclass_init = SearchConfig.__init__


@functools.wraps(_dataclass_init)
def _init(self, *args, **kwargs):
    for key in kwargs:
        if key not in _FIELD_NAMES:
            raise ConfigError(f"unknown key '{key}'{did_you_mean(key, _FIELD_NAMES)}")
    if len(args) > len(_FIELD_NAMES):
        raise ConfigError(f"SearchConfig takes keyword arguments; got {len(args)} positional ones")
    _dataclass_init(self, *args, **kwargs)


SearchConfig.__init__ = _init
