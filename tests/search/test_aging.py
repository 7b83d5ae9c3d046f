"""Aging (regularised) evolution: a real method with its own population dynamics,
and the invariants of every strategy (deterministic, resumable, worker-independent)."""
from __future__ import annotations

import json

import pytest

from lossforge.search import SearchConfig
from lossforge.search.aging import AgingStrategy
from lossforge.search.strategies import make_strategy
from lossforge.search.strategy import Strategy
from lossforge.search.trees import serialise

from .strategy_runs import check_sigkill, check_workers
from .test_determinism import ray_session  # noqa: F401  (fixture)


def _cfg(**kw):
    base = dict(tasks=["digits"], strategy="aging", population=8, generations=6, aging_population=20,
                tournament_size=4, max_height=6, max_size=25, evaluator="local", confirm_top=0, save_best=0)
    base.update(kw)
    return SearchConfig(**base)


def _fitness(expr):
    return (-float(len(str(expr))) if expr is not None else -100.0, expr.complexity if expr is not None else 10**6)


def _drive(strategy, gens):
    history = []
    for _ in range(gens):
        props = strategy.ask()
        history.append([(serialise(p.tree), p.origin) for p in props])
        strategy.tell([_fitness(p.expr) for p in props])
    return history


def test_aging_is_a_strategy_with_a_bounded_population_that_drops_the_oldest():
    s = make_strategy(_cfg(), 3)
    assert isinstance(s, AgingStrategy) and isinstance(s, Strategy)
    first = s.ask()
    assert {p.origin for p in first} <= {"init", "seed"}
    s.tell([_fitness(p.expr) for p in first])
    oldest = serialise(s.alive[0])
    for g in range(5):
        props = s.ask()
        assert len(props) == 8
        assert all(p.origin.startswith("mutation:") or p.origin == "immigrant" for p in props)
        s.tell([_fitness(p.expr) for p in props])
        assert len(s.alive) <= 20
    assert serialise(s.alive[0]) != oldest          # removed by age, though it may have been the fittest
    canon = [s.screen.expr(i).canonical for i in s.alive if s.screen.expr(i) is not None]
    assert len(canon) == len(set(canon))             # the novelty memory keeps the population distinct


def test_aging_is_deterministic_and_its_state_resumes_exactly():
    full = _drive(make_strategy(_cfg(), 7), 6)
    assert full == _drive(make_strategy(_cfg(), 7), 6)
    assert full != _drive(make_strategy(_cfg(), 8), 6)
    a = make_strategy(_cfg(), 7)
    head = _drive(a, 3)
    b = make_strategy(_cfg(), 7)
    b.load_state(json.loads(json.dumps(a.state())))
    assert head + _drive(b, 3) == full


def test_aging_improves_on_its_initial_population():
    s = make_strategy(_cfg(population=16, aging_population=48), 0)
    best = []
    for _ in range(10):
        props = s.ask()
        fits = [_fitness(p.expr) for p in props]
        best.append(max(f for f, _ in fits))
        s.tell(fits)
    assert max(best[1:]) > best[0]


def test_aging_search_is_the_same_for_local_and_1_or_2_ray_workers(tmp_path, ray_session):  # noqa: F811
    check_workers(tmp_path, strategy="aging", aging_population=12, tournament_size=3)


def test_aging_search_sigkilled_resumes_to_the_uninterrupted_result(tmp_path):
    check_sigkill(tmp_path, 'strategy = "aging"\naging_population = 12\n')


def test_bad_aging_population_is_one_clear_error():
    from lossforge.search.errors import ConfigError

    with pytest.raises(ConfigError, match="aging_population"):
        _cfg(aging_population=2)
