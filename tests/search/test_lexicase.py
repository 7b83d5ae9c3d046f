"""Epsilon-lexicase selection over cases (task, evaluation seed)."""
from __future__ import annotations

import json
import random

from deap import tools

from lossforge.search import lexicase
from lossforge.search.strategies import GPStrategy
from lossforge.search.trees import Individual, make_pset, serialise

from .strategy_runs import check_sigkill, check_workers
from .test_determinism import ray_session  # noqa: F401  (fixture)
from .test_trees_and_strategies import _config as strategy_config

# Ten candidates on two tasks: a specialist best on task a and poor on b (the worst
# mean of all), eight generalists, and a reject without scores.
SPECIALIST = {"a@1": 1.0, "b@1": -0.9}
GENERALISTS = [{"a@1": 0.1 + 0.01 * i, "b@1": 0.2 + 0.01 * i} for i in range(8)]
POPULATION = [SPECIALIST, *GENERALISTS, None]


def _mean(c):
    return sum(c.values()) / len(c) if c else -100.0


def test_lexicase_keeps_a_specialist_that_tournament_drops():
    picks = lexicase.select(POPULATION, 400, rng=random.Random(0))
    share = picks.count(0) / len(picks)
    assert 0.35 < share < 0.65                  # chosen whenever task a comes first
    assert 9 not in picks                       # the reject never
    assert picks.count(8) > picks.count(1)      # the best generalist wins when task b comes first
    # tournament on the mean: the specialist (the worst mean of the trained) wins only a
    # tournament of copies of itself (DEAP draws with replacement: (1/9)^3 of them)
    pset = make_pset()
    inds = []
    for c in POPULATION[:-1]:
        ind = Individual([pset.mapping["p"]])
        ind.fitness.values = (_mean(c), 1)
        inds.append(ind)
    random.seed(0)
    chosen = tools.selTournament(inds, 2000, 3)
    assert sum(ind is inds[0] for ind in chosen) / len(chosen) < 0.01


def test_epsilon_is_the_median_absolute_deviation_and_plain_lexicase_breaks_no_ties_by_epsilon():
    rows = lexicase.case_matrix([{"x": 0.0}, {"x": 1.0}, {"x": 3.0}, None])[1]
    assert lexicase.epsilons(rows) == [1.0]
    close = [{"x": 1.0}, {"x": 0.95}, {"x": 0.0}]   # MAD 0.05
    assert set(lexicase.select(close, 50, rng=random.Random(1))) == {0, 1}
    assert set(lexicase.select(close, 50, epsilon=False, rng=random.Random(1))) == {0}


def _config(**kw):
    return strategy_config(**{"selection": "lexicase", "elitism": 1, **kw})


def _drive(s, gens):
    out = []
    for g in range(gens):
        props = s.ask()
        out.append([serialise(p.tree) for p in props])
        cases = [{"t@1": -len(str(p.expr)), "t@2": float(str(p.expr).count("p"))} if p.expr is not None else None
                 for p in props]
        s.tell([(_mean(c) if c else -100.0, 1) for c in cases], cases)
    return out


def test_gp_with_lexicase_is_deterministic_and_its_state_with_cases_resumes_exactly():
    full = _drive(GPStrategy(_config(), 4), 5)
    assert full == _drive(GPStrategy(_config(), 4), 5)
    a = GPStrategy(_config(), 4)
    head = _drive(a, 2)
    state = json.loads(json.dumps(a.state()))
    assert any(item["cases"] for item in state["population"])
    b = GPStrategy(_config(), 4)
    b.load_state(state)
    assert head + _drive(b, 3) == full


def test_lexicase_search_is_the_same_for_local_and_1_or_2_ray_workers(tmp_path, ray_session):  # noqa: F811
    check_workers(tmp_path, selection="lexicase", eval_seeds=2)


def test_lexicase_search_sigkilled_resumes_to_the_uninterrupted_result(tmp_path):
    check_sigkill(tmp_path, 'selection = "lexicase"\neval_seeds = 2\n')
