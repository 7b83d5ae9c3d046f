"""Optuna plumbing: constant tuning templates, loss families, seeded samplers
and studies that resume exactly after an interruption."""
from __future__ import annotations

import types

import optuna
import pytest

from lossforge.primitives import GrammarError, parse
from lossforge.search.families import FamilyStrategy, family
from lossforge.search.fitness import REJECTED_FITNESS
from lossforge.search.optuna_util import completed, make_sampler, open_study, take_running, tell_fitness
from lossforge.search.tuning import parametrise


@pytest.mark.parametrize("text,n", [("4*p*(1 - y) - y*log(p)/10", 2), ("-y*(1 - p)**2*log(p)", 0),
                                    ("(p - y)**2 + 0.37*Abs(p - y)", 1), ("-y*log(p) + 2.5*y*(1-p)**3", 1)])
def test_parametrise_makes_a_template_that_binds_back_to_the_expression(text, n):
    e = parse(text)
    template, values = parametrise(e)
    assert len(values) == n and list(values) == [f"c{i}" for i in range(n)]
    if n:
        assert template.constants and template.bind(values).canonical == e.canonical
    else:
        assert template == e  # integer exponents, 0 and +-1 are structure, not constants


def test_parametrise_respects_the_constant_budget():
    e = parse("0.3*p + 0.4*y + 0.7*p*y + 1.3*Abs(p - y)")
    _, values = parametrise(e, max_constants=2)
    assert len(values) == 2


@pytest.mark.parametrize("name,n_params,size",
                         [("taylor", None, 8), ("poly", 3, 3), ("poly", 1, 1), ("focal", None, 1)])
def test_families_bind_to_valid_losses(name, n_params, size):
    fam = family(name, n_params)
    assert len(fam.ranges) == size and set(fam.distributions()) == set(fam.ranges)
    template = fam.expression()
    assert set(template.constants) == set(fam.ranges)
    mid = {k: lo + 0.3 * (hi - lo) for k, (lo, hi) in fam.ranges.items()}
    bound = template.bind(mid)
    assert not bound.constants and {"p", "y"} <= set(bound.terminals)


def test_family_errors_name_the_fix():
    with pytest.raises(GrammarError, match="1..6"):
        family("poly", 7)
    with pytest.raises(GrammarError, match="taylor, poly or focal"):
        family("polynomial")


def test_focal_family_contains_focal_loss():
    assert family("focal").expression().bind({"c0": 2.0}).canonical == parse("-y*(1 - p)**2*log(p)").canonical


def test_samplers_are_reproducible_from_their_seed():
    dists = {"a": optuna.distributions.FloatDistribution(-1, 1), "b": optuna.distributions.FloatDistribution(0, 5)}
    for kind in ("tpe", "cmaes", "random"):
        runs = []
        for _ in range(2):
            study = optuna.create_study(direction="maximize", sampler=make_sampler(kind, 7))
            params = []
            for _ in range(10):
                t = study.ask(dists)
                params.append(t.params)
                study.tell(t, -(t.params["a"] - 0.3) ** 2)
            runs.append(params)
        assert runs[0] == runs[1], kind
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("grid", 0)


def test_an_interrupted_batch_is_handed_out_again_and_enqueued_trials_wait(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = open_study("s", url, make_sampler("random", 0))
    dist = {"c0": optuna.distributions.FloatDistribution(0, 1)}
    tell_fitness(study, study.ask(dist), 0.5)
    batch = [study.ask(dist) for _ in range(3)]   # asked, then the process dies
    again = open_study("s", url, make_sampler("random", 0))
    taken = take_running(again, 3)
    assert [t.number for t in taken] == [t.number for t in batch]
    assert [t.params for t in taken] == [t.params for t in batch]
    for t in taken:
        tell_fitness(again, t, 0.1)
    assert len(completed(again)) == 4
    # a partial batch (the process died while asking) is failed, not reused
    study.ask(dist)
    assert take_running(again, 3) == []
    assert again.trials[-1].state == optuna.trial.TrialState.FAIL
    # an enqueued, never asked trial is left for the next ask
    again.enqueue_trial({"c0": 0.25})
    assert take_running(again, 1) == []
    assert again.ask(dist).params == {"c0": 0.25}


def test_tell_fitness_clamps_rejections():
    study = optuna.create_study(direction="maximize")
    t = study.ask({"c0": optuna.distributions.FloatDistribution(0, 1)})
    tell_fitness(study, t, float("-inf"))
    assert study.trials[0].value == REJECTED_FITNESS


def _family_config(**kw):
    base = dict(family="poly", family_params=2, sampler="tpe", population=4)
    base.update(kw)
    return types.SimpleNamespace(**base)


def _generation(strategy, fitness=lambda e: -len(str(e)) if e is not None else REJECTED_FITNESS):
    proposals = strategy.ask()
    strategy.tell([(fitness(p.expr), 0) for p in proposals])
    return [str(p.expr) for p in proposals]


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "random"])
def test_family_strategy_resumes_from_its_stored_study(tmp_path, sampler):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    config = _family_config(sampler=sampler)
    reference = FamilyStrategy(config, seed=3, run_id="ref", storage_url=url)
    expected = [_generation(reference) for _ in range(3)]
    assert all(p.origin == "family:poly" for p in reference.ask())

    first = FamilyStrategy(config, seed=3, run_id="run", storage_url=url)
    got = [_generation(first) for _ in range(2)]
    state = first.state()
    first.ask()                                   # a generation asked, then the process dies
    second = FamilyStrategy(config, seed=3, run_id="run", storage_url=url)
    second.load_state(state)
    got.append(_generation(second))
    assert got == expected
    assert len(completed(second.study)) == 3 * config.population
