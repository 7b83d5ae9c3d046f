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

    A (1+lambda) evolution strategy on each candidate's tunable constants
    (:func:`parametrise`): ``constant_rounds`` rounds of ``constant_variants``
    log-normal perturbations around the best values so far (step halving each
    round), every variant of the generation trained together -- one batched
    stage of the scorer -- at the short budget (``short_steps``) on the run's
    seeds.  The best variant (the candidate itself included) replaces the
    proposal when the strategy can adopt it (Lamarckian: its tree gets the
    tuned constants); the variants' trainings are recorded in the run store
    like any other, so a resumed generation replays them without training.
    Draws come from ``seed`` and the generation, never from the workers.
    """
    import numpy as np

    c = config
    state = []  # per tunable proposal: [index, template, best values, best fitness]
    for i, prop in enumerate(proposals):
        if prop.expr is None or prop.tree is None:
            continue
        template, values = parametrise(prop.expr)
        if values:
            state.append([i, template, values, None])
    if not state:
        return proposals
    first = _short_fitness(scorer, [s[1].bind(s[2]) for s in state], generation)
    for s, fit in zip(state, first):
        s[3] = fit
    for r in range(c.constant_rounds):
        variants, owner = [], []
        for k, (i, template, values, _) in enumerate(state):
            rng = np.random.default_rng([seed, generation, i, r])
            names = sorted(values)
            for _ in range(c.constant_variants):
                steps = rng.normal(0.0, 0.5 / 2 ** r, len(names))
                new = {n: float(f"{values[n] * 2.0 ** z:.4g}") if values[n] else float(f"{z:.4g}")
                       for n, z in zip(names, steps)}
                try:
                    variants.append(template.bind(new))
                    owner.append((k, new))
                except GrammarError:
                    continue
        for (k, new), fit in zip(owner, _short_fitness(scorer, variants, generation)):
            if fit > state[k][3]:
                state[k][2], state[k][3] = new, fit
    out = list(proposals)
    for i, template, values, _ in state:
        tuned = template.bind(values)
        if tuned != proposals[i].expr and strategy.adopt(i, tuned):
            out[i] = Proposal(proposals[i].tree, tuned, proposals[i].origin + "+constants")
    return out


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
