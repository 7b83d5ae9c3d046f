"""Screening off the driver: the same verdicts wherever it runs, and a search that
does not depend on how (or whether) the screening was shared out."""
from __future__ import annotations

import os
import pickle
import random

import pytest

from lossforge.primitives import Expr
from lossforge.search import SearchConfig
from lossforge.search.evaluators import LocalEvaluator, init_local_ray
from lossforge.search.filters import CandidateFilter
from lossforge.search.screening import Screened, ScreenedExpr, Screener, ScreenSpec, screen_expr, screen_tokens
from lossforge.search.drawing import _draw_places, _Place, _Screen, _Stream
from lossforge.search.strategies import GPStrategy, RandomStrategy
from lossforge.search.trees import serialise, tree_to_expr


def _config(**kw) -> SearchConfig:
    base = dict(tasks=["digits"], name="screen", seed=3, population=24, generations=3, steps=20, save_best=0,
                confirm_top=0, evaluator="local", seed_losses=["cross_entropy"])
    return SearchConfig(**{**base, **kw})


def _trees(n: int, seed: int = 0):
    s = RandomStrategy(_config(), seed)
    from deap import gp

    from lossforge.search.trees import Individual

    rng = random.Random(seed)
    state = random.getstate()
    random.setstate(rng.getstate())
    try:
        return [Individual(gp.genHalfAndHalf(s.pset, 1, 4)) for _ in range(n)]
    finally:
        random.setstate(state)


def test_worker_screening_equals_the_driver_filters():
    config = _config()
    trees = _trees(80)
    driver = CandidateFilter({"multiclass"})
    spec = ScreenSpec.of(driver, config)
    remote = screen_tokens(spec, [serialise(t) for t in trees])
    assert len(remote) == len(trees)
    kinds = set()
    for tree, got in zip(trees, remote):
        e = tree_to_expr(tree)
        assert got == screen_expr(CandidateFilter({"multiclass"}), e)
        if e is None:
            assert got.text is None
            continue
        assert (got.text, got.canonical, got.complexity) == (str(e), e.canonical, e.complexity)
        verdict = driver.check(e)
        kinds.add(verdict.status)
        if got.reject is None:
            assert verdict.status in ("ok", "fingerprint_duplicate")
            assert got.fingerprint == driver.fingerprint_key(e)
        else:
            assert (verdict.status, verdict.detail) == got.reject
    assert "ok" in kinds and len(kinds) > 2  # the sample exercises passing and several rejections


def test_screened_expr_is_the_expression_of_its_tree():
    config = _config()
    screener = Screener(CandidateFilter({"multiclass"}), config)
    trees = [t for t in _trees(60, seed=1) if tree_to_expr(t) is not None][:25]
    screener.screen(trees)
    for tree in trees:
        lazy, real = screener.expr(tree), tree_to_expr(tree)
        assert isinstance(lazy, ScreenedExpr) and isinstance(lazy, Expr)
        assert (str(lazy), lazy.canonical, lazy.complexity, hash(lazy)) == (str(real), real.canonical,
                                                                            real.complexity, hash(real))
        assert lazy == real and lazy.sympy == real.sympy and lazy.terminals == real.terminals
        assert lazy.constants == real.constants
        back = pickle.loads(pickle.dumps(lazy))
        assert back == real and str(back) == str(real)
    import torch

    p, y = torch.rand(8), torch.randint(0, 2, (8,)).float()
    lazy, real = screener.expr(trees[0]), tree_to_expr(trees[0])
    assert torch.equal(lazy.compile()(p, y), real.compile()(p, y))


def test_screener_hands_verdicts_to_the_filter_and_caches_by_tree():
    config = _config()
    cfilter = CandidateFilter({"multiclass"})
    calls = []

    class Spy(LocalEvaluator):
        def screen(self, spec, batch):
            calls.append(len(batch))
            return super().screen(spec, batch)

    screener = Screener(cfilter, config, Spy({}))
    trees = _trees(30, seed=2)
    first = screener.screen(trees + trees[:5])
    assert calls == [len({tuple(serialise(t)) for t in trees})]  # one batch, each distinct tree once
    assert screener.screen(trees) == first[:30] and len(calls) == 1  # then from the cache
    for tree, got in zip(trees, first):
        if got.text is not None:  # the driver's filter now knows the verdict: nothing is recomputed there
            assert got.canonical in cfilter._verdicts


class _Shuffled(LocalEvaluator):
    """Screens each batch in reverse order, in pieces of 3, as several workers finishing out of
    order would (results returned in the batch's order)."""

    def screen(self, spec, batch):
        out = {}
        idx = list(range(len(batch)))[::-1]
        for k in range(0, len(idx), 3):
            part = idx[k:k + 3]
            for i, r in zip(part, super().screen(spec, [batch[i] for i in part])):
                out[i] = r
        return [out[i] for i in range(len(batch))]


class _Failing(LocalEvaluator):
    """Every screening task is lost (as to a dead worker): the driver screens itself."""

    def screen(self, spec, batch):
        raise RuntimeError("worker died")


def _proposals(strategy_cls, evaluator, generations=3, selection="tournament"):
    config = _config(selection=selection)
    cfilter = CandidateFilter({"multiclass"})
    s = strategy_cls(config, 11)
    s.set_viability(Screener(cfilter, config, evaluator))
    out = []
    for g in range(generations):
        props = s.ask()
        out.append([(p.origin, None if p.expr is None else (str(p.expr), p.expr.canonical)) for p in props])
        s.tell([(float(len(p.expr.canonical) % 7) if p.expr else -100.0, 1) for p in props])
    return out, s.state()


class _Wide(_Shuffled):
    parallelism = 64     # a wide cluster: more candidates screened per round, fewer rounds


@pytest.mark.parametrize("strategy_cls", [GPStrategy, RandomStrategy])
def test_proposals_do_not_depend_on_how_the_screening_is_shared(strategy_cls):
    reference = _proposals(strategy_cls, None)             # screened in this process
    assert _proposals(strategy_cls, LocalEvaluator({})) == reference
    assert _proposals(strategy_cls, _Shuffled({})) == reference
    assert _proposals(strategy_cls, _Wide({})) == reference
    assert _proposals(strategy_cls, _Failing({})) == reference  # lost screening tasks change nothing
    gens, _ = reference
    for props in gens:
        canon = [c for _, c in props if c is not None]
        if strategy_cls is RandomStrategy:
            assert len(set(canon)) == len(canon)   # no form twice in a generation


def test_gp_children_are_viable_and_new():
    config = _config(population=32)
    cfilter = CandidateFilter({"multiclass"})
    s = GPStrategy(config, 5)
    s.set_viability(Screener(cfilter, config, LocalEvaluator({})))
    seen: set[str] = set()
    for g in range(3):
        props = s.ask()
        for p in props:
            if p.origin in ("elite", "reproduction", "seed"):
                continue
            assert p.expr is not None and cfilter.viable(p.expr)
            assert p.expr.canonical not in seen
        fresh = [p.expr.canonical for p in props if p.origin not in ("elite", "reproduction", "seed")]
        assert len(set(fresh)) == len(fresh)   # distinct within the generation too
        seen |= {p.expr.canonical for p in props if p.expr is not None}
        s.tell([(float(len(p.expr.canonical) % 5), 1) for p in props])


def test_screened_result_of_an_invalid_tree():
    assert Screened(None).viable is False
    assert screen_expr(CandidateFilter({"multiclass"}), None) == Screened(None)


def test_ray_workers_screen_as_the_driver_does():
    ray = pytest.importorskip("ray")
    from lossforge.search.evaluators import RayEvaluator

    started = not ray.is_initialized()
    if started:
        init_local_ray(2)
    try:
        ev = RayEvaluator({}, workers=2, warm=False)
        spec = ScreenSpec.of(CandidateFilter({"multiclass"}), _config())
        batch = [serialise(t) for t in _trees(40, seed=4)]
        assert ev.screen(spec, batch) == screen_tokens(spec, batch)
        assert _proposals(GPStrategy, ev) == _proposals(GPStrategy, None)
    finally:
        if started:
            ray.shutdown()



def test_a_local_ray_instance_runs_its_workers_at_the_drivers_priority():
    """Ray's default puts workers 15 nice levels below the driver, which on a shared machine gives
    the cores to any other work; the instance the evaluator starts keeps the driver's priority."""
    ray = pytest.importorskip("ray")
    from lossforge.search.evaluators import RayEvaluator

    if ray.is_initialized():   # left by an earlier test: this one needs the evaluator to start its own
        ray.shutdown()
    ev = RayEvaluator({}, workers=1, warm=False)
    try:
        assert ev._owns
        niceness = ray.remote(_niceness).options(num_cpus=1)
        assert ray.get(niceness.remote()) == os.nice(0)
    finally:
        ev.close()
    assert not ray.is_initialized()


def _niceness() -> int:
    return os.nice(0)

def test_a_batch_larger_than_the_cache_still_gets_every_result():
    config = _config()
    screener = Screener(CandidateFilter({"multiclass"}), config)
    screener._size = 4   # hits of this batch are evicted by its own misses
    trees = _trees(20, seed=6)
    screener.screen(trees[:3])
    got = screener.screen(trees[:3] + trees[3:])
    assert got == screen_tokens(screener.spec, [serialise(t) for t in trees])



class _Tree:
    def __init__(self, canonical: str, cheap_ok: bool, viable: bool):
        self.canonical, self.cheap_ok, self.viable = canonical, cheap_ok, viable


class _FakeScreen:
    """The screen's contract for _draw_places: ``many`` screens a batch, ``passes`` as _Screen's."""

    def __init__(self, seen):
        self.seen, self.viable, self.screened = set(seen), True, []

    def many(self, trees):
        self.screened += [id(t) for t in trees]
        return [Screened(t.canonical, t.canonical, 1, None if t.viable else ("rejected", "")) for t in trees]

    passes = _Screen.passes


def _sequential(places, seen):
    """The definition: each place takes its first candidate that passes the cheap checks, is viable
    and is new against earlier generations and the places before it; else its fallback."""
    taken, out = set(), []
    for place in places:
        for k in range(place.total):
            tree, origin, _ = place.candidate(k)
            if tree.cheap_ok and tree.viable and tree.canonical not in seen and tree.canonical not in taken:
                taken.add(tree.canonical)
                out.append((tree, origin))
                break
        else:
            out.append(place.fallback())
    return out


def _fake_places(rng, cheap):
    places = []
    for i in range(rng.randint(1, 12)):
        options = [(_Tree(f"c{rng.randrange(8)}", rng.random() < 0.7, rng.random() < 0.6), f"o{i}.{k}")
                   for k in range(rng.randint(0, 9))]
        it = iter(options)
        stream = _Stream(rng.getrandbits(32), lambda it=it: [next(it)], len(options))
        fallback = _Tree(f"fallback{i}", True, True)
        places.append(_Place([(stream, 0, len(options), None)], cheap, lambda f=fallback: (f, "fallback")))
    return places


@pytest.mark.parametrize("parallelism", [1, 3, 64])
def test_drawing_in_rounds_equals_the_sequential_definition_and_checks_each_candidate_once(parallelism):
    """Rounds of batched screening give what the sequential definition gives -- also where a place
    gives up a form that a later place then takes -- and look at each candidate's cheap checks
    (tree height and size, p and y) once and screen each tree once, however many rounds it takes."""
    rng = random.Random(parallelism)
    seen = {"c0", "c1"}
    for _ in range(40):
        checks: dict[int, int] = {}

        def cheap(tree, _source):
            checks[id(tree)] = checks.get(id(tree), 0) + 1
            return tree.cheap_ok

        state = rng.getstate()
        want = _sequential(_fake_places(rng, lambda tree, _s: tree.cheap_ok), seen)
        rng.setstate(state)
        places = _fake_places(rng, cheap)
        screen = _FakeScreen(seen)
        got = _draw_places(screen, places, parallelism)
        assert [(t.canonical, o) for t, o in got] == [(t.canonical, o) for t, o in want]
        assert all(n == 1 for n in checks.values())
        assert len(screen.screened) == len(set(screen.screened))


def test_a_stream_draws_ahead_in_few_state_swaps_and_its_options_do_not_depend_on_it(monkeypatch):
    """Option k is a function of the stream's seed and k alone -- drawn one at a time, in any
    order, or ahead -- and a place that needs many options swaps the random module's state a
    few times, never once an option; a stream never draws past its limit."""
    def draw():
        return random.random()

    reference = _Stream(99, draw)
    reference.AHEAD = 0   # one option a swap: the reference
    expected = [reference.get(k) for k in range(200)]
    assert len(reference.items) == 200

    swaps = []
    real = random.setstate
    monkeypatch.setattr(random, "setstate", lambda state: (swaps.append(1), real(state))[1])
    ahead = _Stream(99, draw)
    assert [ahead.get(k) for k in range(200)] == expected
    assert len(swaps) <= 2 * 20            # two setstate calls a swap; 200 one at a time would be 400
    shuffled = _Stream(99, draw)
    for k in random.Random(5).sample(range(200), 200):
        assert shuffled.get(k) == expected[k]
    limited = _Stream(99, draw, limit=7)
    assert limited.get(0) == expected[0] and [limited.get(k) for k in range(7)] == expected[:7]
    assert len(limited.items) == 7
    outer = random.getstate()
    _Stream(3, draw).get(50)
    assert random.getstate() == outer     # the caller's random state is left as it was
