import json
import random
import types

import pytest
from deap import gp

from lossforge.primitives import parse
from lossforge.search.strategies import GPStrategy, RandomStrategy
from lossforge.search.trees import (Individual, NotRepresentable, deserialise, make_pset, serialise, sympy_to_tree,
                                    tree_to_expr)


def _config(**kw):
    base = dict(population=12, generations=3, selection="tournament", tournament_size=3, crossover_prob=0.6,
                mutation_prob=0.35, elitism=2, init_min_depth=1, init_max_depth=3, max_height=6, max_size=25,
                constant_range=(-2.0, 2.0), seed_losses=[], primitives=None)
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_pset_is_built_from_the_table_and_trees_convert_without_eval():
    pset = make_pset()
    assert {"add", "log", "sigmoid", "max"} <= set(pset.mapping)
    random.seed(3)
    for _ in range(50):
        ind = Individual(gp.genHalfAndHalf(pset, 1, 4))
        tokens = serialise(ind)
        json.dumps(tokens)  # checkpoint-safe
        again = deserialise(tokens, pset)
        assert serialise(again) == tokens
        e = tree_to_expr(ind)
        if e is not None:
            assert tree_to_expr(again) == e


@pytest.mark.parametrize("text", ["-y*log(p)", "-y*(1-p)**2*log(p)", "(p-y)**2", "Max(0, 1-p*y)", "abs(p-y)",
                                  "sigmoid(p)*y + softplus(p-y)"])
def test_catalogue_style_expressions_encode_as_trees(text):
    e = parse(text)
    assert tree_to_expr(sympy_to_tree(e.sympy, make_pset())) == e


def test_powers_outside_the_set_are_reported():
    with pytest.raises(NotRepresentable, match="power"):
        sympy_to_tree(parse("abs(p-y)**1.5").sympy, make_pset())


def test_hostile_checkpoint_tokens_are_rejected():
    from lossforge.primitives import GrammarError

    pset = make_pset()
    with pytest.raises(GrammarError):
        deserialise(["__import__", "p"], pset)
    with pytest.raises(GrammarError, match="malformed"):
        deserialise(["add", "p"], pset)


def _run(strategy, gens, fitness=lambda e: -e.complexity if e is not None else -100):
    history = []
    for _ in range(gens):
        props = strategy.ask()
        history.append([serialise(p.tree) for p in props])
        strategy.tell([(fitness(p.expr), p.expr.complexity if p.expr is not None else 10**6) for p in props])
    return history


@pytest.mark.parametrize("selection", ["tournament", "nsga2"])
def test_gp_is_reproducible_and_its_state_resumes_exactly(selection):
    cfg = _config(selection=selection)
    full = _run(GPStrategy(cfg, 7), 5)
    assert full == _run(GPStrategy(cfg, 7), 5)
    assert full != _run(GPStrategy(cfg, 8), 5)
    a = GPStrategy(cfg, 7)
    first = _run(a, 2)
    state = json.loads(json.dumps(a.state()))
    b = GPStrategy(cfg, 7)
    b.load_state(state)
    assert first + _run(b, 3) == full


def test_gp_respects_size_limits_keeps_elites_and_uses_every_operator():
    cfg = _config(population=20, max_height=5, max_size=15)
    s = GPStrategy(cfg, 1)
    origins = set()
    for _ in range(6):
        props = s.ask()
        for p in props:
            assert p.tree.height <= 5 and len(p.tree) <= 15
            origins.add(p.origin.split(":")[0] if p.origin != "elite" else "elite")
            origins.add(p.origin)
        s.tell([(-(p.expr.complexity if p.expr else 100), p.expr.complexity if p.expr else 10**6) for p in props])
    assert {"elite", "crossover"} <= origins
    assert {"mutation:subtree", "mutation:point", "mutation:shrink", "mutation:hoist", "mutation:constant"} & origins


def test_gp_improves_a_simple_objective():
    # fitness: closeness of the expression's value at (p, y) = (0.3, 1) to 2.0 -- a quick symbolic-regression check
    import torch

    def fit(e):
        if e is None or e.constants:
            return -100.0
        v = float(e.compile()(torch.tensor([0.3]), torch.tensor([1.0])))
        return -abs(v - 2.0) if v == v else -100.0

    s = GPStrategy(_config(population=30), 0)
    best = []
    for _ in range(12):
        props = s.ask()
        fits = [fit(p.expr) for p in props]
        best.append(max(fits))
        s.tell([(f, p.expr.complexity if p.expr else 10**6) for f, p in zip(fits, props)])
    assert best[-1] >= best[0]
    assert best[-1] > -0.05


def test_seeded_population_starts_with_catalogue_losses(monkeypatch):
    import lossforge.losses as losses

    fake = types.SimpleNamespace(expr=parse("-y*log(p)"))
    monkeypatch.setattr(losses, "get", lambda name: fake, raising=False)
    s = GPStrategy(_config(seed_losses=["cross_entropy"]), 0)
    props = s.ask()
    assert props[0].origin == "seed" and props[0].expr == parse("-y*log(p)")


def test_random_strategy_draws_fresh_trees_each_generation():
    s = RandomStrategy(_config(), 0)
    a = s.ask()
    s.tell([(0.0, 1)] * len(a))
    b = s.ask()
    assert [serialise(p.tree) for p in a] != [serialise(p.tree) for p in b]
    assert all(p.origin == "random" for p in a + b)


# ----------------------------------------------------------------- the Strategy protocol
def test_every_strategy_implements_the_protocol_and_the_engine_needs_no_hasattr():
    import ast
    from pathlib import Path

    from lossforge.search import SearchConfig, engine
    from lossforge.search.strategies import make_strategy
    from lossforge.search.strategy import Strategy

    for kw in (dict(strategy="gp"), dict(strategy="gp", selection="lexicase"), dict(strategy="aging"),
               dict(strategy="random"), dict(strategy="family", family="poly")):
        s = make_strategy(SearchConfig(evaluator="local", **kw), 0, storage_url="sqlite:///:memory:")
        assert isinstance(s, Strategy), kw
        for hook in ("ask", "tell", "state", "load_state", "set_viability", "adopt"):
            assert callable(getattr(s, hook))
        assert isinstance(s.tunable, bool)
    tree = ast.parse(Path(engine.__file__).read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "hasattr"]


# ----------------------------------------------------------------- constants tuned in the loop
def _tuned_config(**kw):
    from .search_checks import small_config

    return small_config(generations=2, population=6, steps=40, short_steps=10, constant_variants=4,
                        constant_rounds=2, seed=3, seed_losses=["gce"], **kw)


def test_constants_are_tuned_in_the_loop_and_written_back_into_the_tree(tmp_path):
    from .search_checks import open_store
    from lossforge.search import run

    result = run(_tuned_config(), tmp_path / "run", quiet=True)
    store, run_id = open_store(result.run_dir)
    cands = store.candidates(run_id)
    evals = store.evaluations(run_id)
    store.close()
    # the variants of the seeded GCE (constants 10/7 and 0.7) were trained at the short budget, in the
    # run store like any other training; a better variant replaced its candidate
    variants = {r["canonical"] for r in evals if r["steps"] == 10 and r["generation"] == 0
                and r["canonical"] not in {c["canonical"] for c in cands} and not r["canonical"].startswith("loss:")}
    assert len(variants) >= 3
    for c in cands:
        if c["origin"].endswith("+constants"):
            assert c["status"] != "ok" or c["fitness"] is not None


class _QuadraticScorer:
    """A stand-in scorer whose short-budget fitness of ``a*|p - y| + b*y`` peaks at a = 0.9, b = -0.2:
    what CMA-ES has to find (the real scorer's batch interface: one ``_stage`` call per round)."""

    short_steps = 10

    def __init__(self):
        self.filter = types.SimpleNamespace(viable=lambda e: True)
        self.stages = []

    def _stage(self, items, steps, generation):
        from lossforge.search.tuning import parametrise

        self.stages.append(len(items))
        out = {}
        for canonical, text in items:
            values = parametrise(parse(text))[1]
            a = next(v for v in values.values() if v > 0)
            b = next(v for v in values.values() if v < 0)
            out[canonical] = (-(a - 0.9) ** 2 - (b + 0.2) ** 2,)
        return out


def test_in_loop_constant_tuning_is_cma_es_and_finds_the_best_constants():
    from lossforge.search.strategy import Proposal
    from lossforge.search.tuning import parametrise, tune_in_loop

    config = types.SimpleNamespace(constant_variants=8, constant_rounds=12)
    scorer = _QuadraticScorer()
    strategy = types.SimpleNamespace(adopt=lambda i, expr: True)
    start = parse("0.3*abs(p - y) - 0.6*y")
    out = tune_in_loop(config=config, scorer=scorer, strategy=strategy, generation=0, seed=5,
                       proposals=[Proposal(object(), start, "mutation")])
    values = sorted(parametrise(out[0].expr)[1].values())
    assert values[0] == pytest.approx(-0.2, abs=0.03) and values[1] == pytest.approx(0.9, abs=0.03)
    assert out[0].origin == "mutation+constants"
    assert scorer.stages == [1] + [8] * 12   # the start, then one batched stage of 8 variants per round
    again = tune_in_loop(config=config, scorer=_QuadraticScorer(), strategy=strategy, generation=0, seed=5,
                         proposals=[Proposal(object(), start, "mutation")])
    assert again[0].expr == out[0].expr      # seeded from the run's seed, the generation and the slot


def test_a_tuned_expression_is_written_back_into_the_strategys_own_tree():
    from lossforge.search.strategies import GPStrategy

    s = GPStrategy(_config(), 0)
    props = s.ask()
    target = parse("(p - y)**2 + 0.37*y")
    assert s.adopt(0, target)
    assert tree_to_expr(s.offspring[0]) == target and s.offspring[0] is props[0].tree
    assert not s.adopt(1, parse("abs(p - y)**1.5"))   # not representable: left alone


@pytest.mark.slow
def test_a_run_with_constants_tuned_in_the_loop_resumes_to_the_uninterrupted_result(tmp_path):
    from lossforge.search import resume, run

    from .test_determinism import Counting, _local, _same_results

    config = _tuned_config(chunk_size=2)
    ref_ev = Counting(_local(config))
    ref = run(config, tmp_path / "ref", quiet=True, evaluator=ref_ev)
    first = Counting(_local(config), stop_after=ref_ev.reports // 2)
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "run", quiet=True, evaluator=first)
    second = Counting(_local(config))
    _same_results(ref, resume(tmp_path / "run", quiet=True, evaluator=second))
    assert first.trained + second.trained == ref_ev.trained


def test_constant_tuning_needs_a_short_budget():
    from lossforge.search import SearchConfig
    from lossforge.search.errors import ConfigError

    with pytest.raises(ConfigError, match="short_steps"):
        SearchConfig(constant_variants=4)
    with pytest.raises(ConfigError, match="at least 4"):
        SearchConfig(constant_variants=2, short_steps=10, steps=40)
