"""Optuna constant tuning of the hall of fame's best candidates.

Each numeric constant of a candidate (not integer exponents, not 0 or +-1)
becomes a tunable constant c0..ck with a range around its value; an Optuna
study (TPE or CMA-ES, stored in the run's database) proposes values in
batches, the usual scorer trains and scores them on the same tasks and
budget, and the tuned expressions join the hall of fame.  Completed trials
are replayed from the store on resume, so nothing is trained twice.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import optuna
import sympy

from lossforge.primitives import Expr, GrammarError
from lossforge.primitives.symbols import TUNABLE

from .halloffame import Entry
from .optuna_util import completed, make_sampler, open_study, take_running, tell_fitness
from .strategy import Proposal


def parametrise(expr: Expr, max_constants: int = len(TUNABLE)) -> tuple[Expr, dict[str, float]]:
    """Replace the tunable numbers of ``expr`` by c0, c1, ...; return the
    template and the original values."""
    values: dict[str, float] = {}
    mapping: dict[sympy.Expr, sympy.Symbol] = {}

    def walk(e: sympy.Expr, in_exponent: bool = False) -> sympy.Expr:
        if e.is_Number:
            if in_exponent and e.is_Integer or e in (0, 1, -1) or len(values) >= max_constants:
                return e
            if e not in mapping:
                name = f"c{len(values)}"
                values[name] = float(e)
                mapping[e] = TUNABLE[name]
            return mapping[e]
        if not e.args:
            return e
        if e.is_Pow:
            return e.func(walk(e.base), walk(e.exp, in_exponent=True), evaluate=False)
        return e.func(*[walk(a) for a in e.args], evaluate=False)

    template = walk(expr.sympy)
    return Expr(template) if values else expr, values  # template is a sympy object, never text


def _distributions(values: dict[str, float]) -> dict:
    return {k: optuna.distributions.FloatDistribution(v - max(1.0, 2 * abs(v)), v + max(1.0, 2 * abs(v)))
            for k, v in values.items()}


def tune_hall_of_fame(*, config, scorer, hof, store, run_id: str, study_url: str, progress=None) -> None:
    # The best entries that have constants to tune (one without any has nothing to tune).
    targets = [e for e in hof.entries if parametrise(e.expression)[1]][: config.tune_top]
    per_batch = config.population
    batches = math.ceil(config.tune_trials / per_batch)
    for i, entry in enumerate(targets):
        template, values = parametrise(entry.expression)
        if not values:
            continue
        dists = _distributions(values)
        study = open_study(f"{run_id}-tune-{i}", study_url, make_sampler(config.sampler, config.seed))
        done = completed(study)
        # Replay finished trials batch by batch from the store (their results are
        # cached), so the hall of fame sees them as an uninterrupted run did.
        for b in range(len(done) // per_batch + (len(done) % per_batch > 0)):
            _score(scorer, hof, template, [t.params for t in done[b * per_batch:(b + 1) * per_batch]],
                   config.generations + i * batches + b, None, None)
        for b in range(len(done) // per_batch, batches):
            generation = config.generations + i * batches + b
            n = min(per_batch, config.tune_trials - b * per_batch)
            study.sampler = make_sampler(config.sampler, config.seed + 104729 * (generation + 1),
                                         n_startup=min(8, config.tune_trials))
            trials = take_running(study, n)  # asked before an interruption: the same asks
            if not trials:
                if b == 0 and not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
                    study.enqueue_trial(values)  # the first trial is the candidate as found
                trials = [study.ask(dists) for _ in range(n)]
            scored = _score(scorer, hof, template, [t.params for t in trials], generation, store, run_id)
            for t, s in zip(trials, scored):
                tell_fitness(study, t, s.fitness)
            if progress is not None:
                best = max(scored, key=lambda s: s.fitness)
                progress.note(f"tuning {i + 1}/{len(targets)} batch {b + 1}/{batches}: best {best.fitness:+.4f} "
                              f"{best.expr}")


def _score(scorer, hof, template: Expr, params_list, generation: int, store, run_id):
    proposals = []
    for params in params_list:
        try:
            expr = template.bind({k: float(f"{v:.4g}") for k, v in params.items()})
        except GrammarError:
            expr = None
        proposals.append(Proposal(None, expr, "tuned"))
    scored, stats = scorer.score(proposals, generation)
    hof.update([Entry(str(s.expr), s.expr.canonical, s.expr.complexity, s.fitness, dict(s.metrics), generation,
                      "tuned") for s in scored if s.fidelity == 2 and s.expr is not None and s.status == "ok"])
    if store is not None:
        trained = [s.fitness for s in scored if s.fidelity > 0]
        rows = [s.candidate_row(k, origin="tuned") for k, s in enumerate(scored)]
        store.record_generation(run_id, generation, rows, {
            "best": max(trained) if trained else None, "median": statistics.median(trained) if trained else None,
            "n_candidates": len(scored), "n_evaluations": stats["evaluated"], "filters": stats, "wall_time": 0.0})
    return scored


# ----------------------------------------------------------------------------- in the loop
def tune_in_loop(*, config, scorer, strategy, proposals: list[Proposal], generation: int, seed: int) -> list[Proposal]:
    """Tune the constants of every proposal that has some, before it is scored.

    CMA-ES (Hansen's covariance matrix adaptation, the ``cmaes`` package) on
    each candidate's tunable constants (:func:`parametrise`), in a
    scale-free encoding: a constant ``c`` becomes ``c * 2**u`` (its sign kept,
    ``u`` searched from 0 with step 0.5), a zero becomes ``u`` itself.  Each of
    ``constant_rounds`` CMA-ES generations asks ``constant_variants`` points
    per candidate, and every variant of the generation is trained together --
    one batched stage of the scorer -- at the short budget (``short_steps``) on
    the run's seeds.  The best values seen (the candidate's own included)
    replace the proposal when the strategy can adopt them (Lamarckian: its tree
    gets the tuned constants); the variants' trainings are recorded in the run
    store like any other, so a resumed generation replays them without
    training.  Each candidate's CMA-ES is seeded from ``seed``, the generation
    and its slot, never from the workers, so results do not depend on them.
    """
    import numpy as np
    from cmaes import CMA

    state: list[_Tuning] = []
    for i, prop in enumerate(proposals):
        if prop.expr is None or prop.tree is None:
            continue
        template, values = parametrise(prop.expr)
        if values:
            names = sorted(values)
            cma_seed = int(np.random.SeedSequence([seed, generation, i]).generate_state(1)[0])
            bounds = np.tile([-_U_MAX, _U_MAX], (len(names), 1))
            cma = CMA(mean=np.zeros(len(names)), sigma=0.5, bounds=bounds, seed=cma_seed,
                      population_size=config.constant_variants)
            state.append(_Tuning(i, template, names, values, cma, best=values))
    if not state:
        return proposals
    for t, fit in zip(state, _short_fitness(scorer, [t.template.bind(t.start) for t in state], generation)):
        t.best_fitness = fit
    for _ in range(config.constant_rounds):
        variants, owner = [], []
        for t in state:
            for _ in range(t.cma.population_size):
                u = t.cma.ask()
                new = t.decode(u)
                try:
                    variants.append(t.template.bind(new))
                except GrammarError:
                    variants.append(None)   # scored -inf: the filters would reject it too
                owner.append((t, u, new))
        told: dict[int, list] = {}
        for (t, u, new), fit in zip(owner, _short_fitness(scorer, variants, generation)):
            told.setdefault(id(t), []).append((u, -fit if math.isfinite(fit) else _PENALTY))
            if fit > t.best_fitness:
                t.best, t.best_fitness = new, fit
        for t in state:
            t.cma.tell(told[id(t)])   # CMA-ES minimises: the negated short-budget fitness
    out = list(proposals)
    for t in state:
        tuned = t.template.bind(t.best)
        if tuned != proposals[t.index].expr and strategy.adopt(t.index, tuned):
            out[t.index] = Proposal(proposals[t.index].tree, tuned, proposals[t.index].origin + "+constants")
    return out


@dataclass
class _Tuning:
    """One proposal's constant tuning: its template, the constants' start values, its CMA-ES, the best so far."""

    index: int
    template: Expr
    names: list[str]
    start: dict[str, float]
    cma: object
    best: dict[str, float]
    best_fitness: float = -math.inf

    def decode(self, u) -> dict[str, float]:
        """A CMA-ES point as constants: c * 2**u (sign kept), or u itself for a constant that starts at 0."""
        return {n: float(f"{self.start[n] * 2.0 ** z:.4g}") if self.start[n] else float(f"{z:.4g}")
                for n, z in zip(self.names, u)}


_U_MAX = 8.0        # a constant moves by at most a factor 2**8 either way within one tuning
_PENALTY = 1.0e6    # CMA-ES's value for a variant that the filters reject or that fails to train


def _short_fitness(scorer, exprs, generation: int) -> list[float]:
    """Short-budget fitness of each expression (rejected by the filters: -inf), trained in one batch."""
    items, keep = {}, []
    for e in exprs:
        ok = e is not None and bool(scorer.filter.viable(e))   # stateless: registers no fingerprint
        keep.append(e.canonical if ok else None)
        if ok:
            items.setdefault(e.canonical, str(e))
    results = scorer._stage(list(items.items()), scorer.short_steps, generation) if items else {}
    return [results[k][0] if k is not None else -math.inf for k in keep]
