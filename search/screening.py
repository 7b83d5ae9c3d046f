"""Screening of proposals, off the driver.

Before a proposal is trained, the strategy needs its expression (tree ->
sympy -> canonical form), the verdict of the search's rejection filters
(:class:`~lossforge.search.filters.CandidateFilter`: constant, non-finite,
wrong gradient, direct check) and, for the fingerprint dedup, its functional
fingerprint.  These are pure functions of the tree and the filter's settings
(a :class:`ScreenSpec`), so they can run anywhere -- on the evaluator's
workers, in parallel -- and give the same answer as in the driver.

:class:`Screener` is the driver's side: it screens a batch of trees through
``evaluator.screen(spec, tokens)`` when the evaluator has one (Ray: one task
per share of the batch; in-process otherwise), keeps an LRU of the results
by tree, and hands the verdicts and fingerprint keys to the driver's filter,
so scoring the chosen proposals later repeats none of that work.  A
screening task that fails for any reason (a lost worker, a node that died)
is redone in this process: the result is the same, so an infrastructure
fault never changes a search.

The strategies decide with the results in a fixed order (slot by slot, in
deterministic rounds of draws, :mod:`lossforge.search.strategies`), so a run
is the same with 1 or N workers, in-process or on Ray.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

from lossforge.primitives import Expr

from .filters import CandidateFilter, Verdict
from .trees import deserialise, make_pset, serialise, tree_to_sympy

_CACHE = 16384   # screened trees kept by the driver (bounded: memory must not grow with generations)


@dataclass(frozen=True)
class ScreenSpec:
    """Everything a screening worker needs besides the trees (plain data, small)."""

    kinds: tuple[str, ...]
    fingerprint_dedup: bool
    direct_check: bool
    direct_check_steps: int
    primitives: tuple[str, ...] | None
    constant_range: tuple[float, float]

    @classmethod
    def of(cls, cfilter: CandidateFilter, config) -> "ScreenSpec":
        return cls(tuple(sorted(cfilter.kinds)), cfilter.fingerprint_dedup, cfilter.direct_check,
                   cfilter.direct_check_steps, tuple(config.primitives) if config.primitives else None,
                   tuple(float(v) for v in config.constant_range))


@dataclass(frozen=True)
class Screened:
    """One tree, screened. ``text`` is None when the tree is not a valid expression."""

    text: str | None
    canonical: str | None = None
    complexity: int | None = None
    reject: tuple[str, str] | None = None     # (status, detail) of the rejection filters; None: passes
    fingerprint: str | None = None            # fingerprint key when it passes and the dedup is on

    @property
    def viable(self) -> bool:
        return self.text is not None and self.reject is None


def screen_expr(cfilter: CandidateFilter, expr: Expr | None) -> Screened:
    """Screen one expression with ``cfilter``'s rejection filters; never raises."""
    if expr is None:
        return Screened(None)
    try:
        verdict = cfilter._rejection(expr)
        key = cfilter.fingerprint_key(expr) if verdict is None and cfilter.fingerprint_dedup else None
        reject = None if verdict is None else (verdict.status, verdict.detail)
        return Screened(str(expr), expr.canonical, expr.complexity, reject, key)
    except Exception as exc:  # a candidate that breaks a filter is rejected, never the search
        try:
            canon, complexity = expr.canonical, expr.complexity
        except Exception:
            return Screened(None)
        return Screened(str(expr), canon, complexity, ("invalid", f"screening failed: {type(exc).__name__}: {exc}"))


def _expr_of_tree(tree) -> Expr | None:
    from .trees import tree_to_expr

    try:
        return tree_to_expr(tree)
    except Exception:   # tree_to_expr catches the grammar's errors; anything else is just as invalid
        return None


_WORKER: dict = {}   # per process: spec -> (pset, filter); the filter's caches are pure, so kept


def screen_tokens(spec: ScreenSpec, batch: Sequence[Sequence]) -> list[Screened]:
    """Screen serialised trees (token lists): the job a screening worker runs."""
    if spec not in _WORKER:
        if len(_WORKER) > 4:
            _WORKER.clear()
        pset = make_pset(spec.primitives, spec.constant_range)
        _WORKER[spec] = (pset, CandidateFilter(set(spec.kinds), fingerprint_dedup=spec.fingerprint_dedup,
                                               direct_check=spec.direct_check,
                                               direct_check_steps=spec.direct_check_steps))
    pset, cfilter = _WORKER[spec]
    out = []
    for tokens in batch:
        try:
            tree = deserialise(tokens, pset)
        except Exception:
            out.append(Screened(None))
            continue
        out.append(screen_expr(cfilter, _expr_of_tree(tree)))
    return out


class ScreenedExpr(Expr):
    """An Expr whose text, canonical form and complexity came from screening; the
    sympy expression is rebuilt from the tree only when something needs it (tuning,
    compiling, LaTeX), so the driver does no sympy work for a proposal it only
    schedules, records and ranks."""

    __slots__ = ("_lazy", "_tokens", "_pset")

    @property
    def _sympy(self):   # shadows Expr's slot: every method that reads it gets the rebuilt expression
        if self._lazy is None:
            object.__setattr__(self, "_lazy", Expr(tree_to_sympy(deserialise(self._tokens, self._pset))).sympy)
        return self._lazy


def _screened_expr(result: Screened, tokens, pset) -> ScreenedExpr:
    e = object.__new__(ScreenedExpr)
    for name, value in (("_text", result.text), ("_canonical", result.canonical), ("_complexity", result.complexity),
                        ("_program", None), ("_lazy", None), ("_tokens", list(tokens)), ("_pset", pset)):
        object.__setattr__(e, name, value)
    return e


class Screener:
    """The driver's screening: batched, cached, on the evaluator's workers when it can.

    Callable as the viability predicate the strategies were given before
    (``screener(expr) -> bool``).  ``screen(trees)`` returns a
    :class:`Screened` per tree, in order; ``expr(tree)`` the tree's Expr (a
    :class:`ScreenedExpr` for a screened tree) or None.
    """

    def __init__(self, cfilter: CandidateFilter, config, evaluator=None):
        self.filter = cfilter
        self.spec = ScreenSpec.of(cfilter, config)
        self.pset = make_pset(config.primitives, config.constant_range)
        self._remote: Callable | None = getattr(evaluator, "screen", None)
        self.parallelism = int(getattr(evaluator, "parallelism", 1) or 1) if self._remote is not None else 1
        # bounded (driver memory must not grow with generations), but holding a generation's draws
        self._size = max(_CACHE, 16 * int(config.population))
        self._cache: OrderedDict[tuple, tuple[Screened, ScreenedExpr | None]] = OrderedDict()
        self.screened = 0        # trees screened (cache misses), for benchmarks
        self.remote_batches = 0

    def __call__(self, expr: Expr) -> bool:
        return self.filter.viable(expr)

    def _get(self, key):
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
        return hit

    def _put(self, key, result: Screened) -> None:
        e = _screened_expr(result, key, self.pset) if result.text is not None else None
        self._cache[key] = (result, e)
        if result.text is not None:
            self.filter.learn(result.canonical, None if result.reject is None else Verdict(*result.reject),
                              result.fingerprint)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)

    def screen(self, trees: Sequence, remote: bool = True) -> list[Screened]:
        keys = [tuple(serialise(t)) for t in trees]
        known = {k: hit[0] for k in keys if (hit := self._get(k)) is not None}
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:
            results = None
            if remote and self._remote is not None and len(missing) > 1:
                try:
                    results = list(self._remote(self.spec, [list(k) for k in missing]))
                    self.remote_batches += 1
                except Exception:   # lost workers, a dead node: the same pure work, done here
                    results = None
                if results is not None and len(results) != len(missing):
                    results = None
            if results is None:
                results = screen_tokens(self.spec, [list(k) for k in missing])
            self.screened += len(missing)
            for k, r in zip(missing, results):
                self._put(k, r)
                known[k] = r
        return [known[k] for k in keys]

    def expr(self, tree) -> Expr | None:
        key = tuple(serialise(tree))
        hit = self._get(key)
        if hit is None:
            self.screen([tree], remote=False)
            hit = self._get(key)
        return hit[1]
