"""Shared checks for end-to-end search tests: what must hold for any finished run."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from lossforge.search import SearchConfig
from lossforge.search.fitness import aggregate, task_score
from lossforge.search.runstore import RunStore, store_of_run

TRAINED = ("ok", "failed")  # candidate statuses trained under their own canonical form


def small_config(**changes) -> SearchConfig:
    """A search that finishes in seconds on one CPU core (no loss store writes, no confirmation:
    tests/search/test_confirm.py covers it)."""
    base = dict(tasks=["digits"], generations=2, population=8, steps=60, evaluator="local", save_best=0,
                chunk_size=8, confirm_top=0)
    base.update(changes)
    return SearchConfig(**base)


def open_store(run_dir: Path) -> tuple[RunStore, str]:
    return store_of_run(run_dir)


def full_steps(config: SearchConfig) -> dict[str, int]:
    from lossforge.tasks import get as get_task

    return {t: int(config.steps or get_task(t).steps) for t in config.tasks}


def hall_of_fame_key(result) -> list[tuple]:
    """What must be equal between two runs of one config (not timings or workers)."""
    return [(e.canonical, e.expr, e.complexity, e.fitness, sorted(e.scores.items()), e.generation, e.origin)
            for e in result.hall_of_fame]


def evaluation_key(store: RunStore, run_id: str) -> list[tuple]:
    return sorted((r["canonical"], r["task"], r["seed"], r["steps"], r["split"], r["metric"], r["status"],
                   r["generation"]) for r in store.evaluations(run_id))


def check_finished_run(result, config: SearchConfig, *, tuning_generations: int = 0) -> dict:
    """Assert the invariants of a finished run; returns the store's tables for further checks."""
    from lossforge.tasks import get as get_task

    store, run_id = open_store(result.run_dir)
    try:
        evals = store.evaluations(run_id)
        cands = store.candidates(run_id)
        gens = store.generations(run_id)
        row = store.run_row(run_id)
    finally:
        store.close()
    assert row["status"] == "finished"
    steps = full_steps(config)
    seeds = json.loads((Path(result.run_dir) / "run.json").read_text())["eval_seeds"]
    assert len(seeds) == config.eval_seeds

    # -- generations: one record per generation (+ tuning batches), a full population each
    assert [g["generation"] for g in gens] == list(range(config.generations + tuning_generations))
    for g in gens[: config.generations]:
        assert g["n_candidates"] == config.population
    by_gen: dict[int, list] = {}
    for c in cands:
        by_gen.setdefault(c["generation"], []).append(c)
    for gen in range(config.generations):
        assert [c["position"] for c in by_gen[gen]] == list(range(config.population))

    # -- confirmation (search.confirm): the top entries and the baselines on fresh seeds, full budget
    confirm = [r for r in evals if r["generation"] == -2]
    if config.confirm_top:
        n = min(config.confirm_top, len(result.hall_of_fame)) + 1
        assert len(confirm) == n * config.confirm_seeds * len(config.tasks)
        assert not {r["seed"] for r in confirm} & set(seeds)
        assert all(r["steps"] == steps[r["task"]] for r in confirm)
    else:
        assert not confirm

    # -- baselines: one per task and budget, computed over the run's seeds
    levels = [steps] + ([{t: config.short_steps for t in config.tasks}] if config.short_steps else [])
    expected_baselines = {}
    for level in levels:
        for t in config.tasks:
            entry = "loss:" + get_task(t).baseline
            vals = [r["metric"] for r in evals if r["canonical"] == entry and r["task"] == t
                    and r["steps"] == level[t] and r["generation"] != -2]
            assert len(vals) == len(seeds)
            expected_baselines[f"{t}@{level[t]}"] = pytest.approx(sum(vals) / len(vals))
    assert result.baselines == expected_baselines

    # -- evaluations: exactly the (candidate, task, seed, budget) cells the candidates needed, once each
    keys = [(r["canonical"], r["task"], r["seed"], r["steps"], r["split"]) for r in evals]
    assert len(keys) == len(set(keys)), "an evaluation was recorded twice"
    assert result.evaluations == len(evals)
    keys = [k for k, r in zip(keys, evals) if r["generation"] != -2]
    evals = [r for r in evals if r["generation"] != -2]
    needed = {(r["canonical"], r["task"], r["seed"], r["steps"], r["split"]) for r in evals
              if r["canonical"].startswith("loss:")}
    for c in cands:
        if c["status"] not in TRAINED:
            continue
        budgets = []
        if c["fidelity"] == 2:
            budgets.append(steps)
        if config.short_steps:
            budgets.append({t: config.short_steps for t in config.tasks})
        for level in budgets:
            for t in config.tasks:
                for s in seeds:
                    needed.add((c["canonical"], t, s, level[t], config.split))
    extra = set(keys) - needed
    assert needed <= set(keys)
    # A fingerprint duplicate promoted to the full budget trains its representative
    # (an earlier candidate, possibly only short-trained) on the full budget.
    if extra:
        assert config.short_steps and any(c["status"] == "fingerprint_duplicate" and c["fidelity"] == 2
                                          for c in cands)
        trained = {c["canonical"] for c in cands if c["status"] in TRAINED}
        assert all(k[0] in trained and k[3] == steps[k[1]] for k in extra)

    # -- every full-budget score is the mean of its recorded metrics; fitness is f(metrics, baselines)
    metric = {(r["canonical"], r["task"], r["seed"], r["steps"]): r["metric"] for r in evals}
    tasks = {t: get_task(t) for t in config.tasks}

    def fitness_of(scores: dict, level: dict) -> float:
        per_task = {t: task_score(scores[t], result.baselines[f"{t}@{level[t]}"], tasks[t].direction)
                    for t in config.tasks}
        return aggregate(per_task, config.aggregate)

    for c in cands:
        if c["status"] not in TRAINED or c["fidelity"] == 0:
            continue
        level = steps if c["fidelity"] == 2 else {t: config.short_steps for t in config.tasks}
        for t in config.tasks:
            vals = [metric[(c["canonical"], t, s, level[t])] for s in seeds]
            if any(v is None for v in vals):
                assert c["scores"][t] is None and c["status"] == "failed"
            else:
                assert c["scores"][t] == pytest.approx(sum(vals) / len(vals))
        assert c["fitness"] == pytest.approx(fitness_of(c["scores"], level))

    # -- hall of fame: the best distinct full-budget candidates ever trained, sorted
    hof = result.hall_of_fame
    assert 0 < len(hof) <= config.hall_of_fame
    assert len({e.canonical for e in hof}) == len(hof)
    assert [(-e.fitness, e.complexity) for e in hof] == sorted((-e.fitness, e.complexity) for e in hof)
    for e in hof:
        assert math.isfinite(e.fitness)
        assert e.fitness == pytest.approx(fitness_of(e.scores, steps))
    best: dict[str, dict] = {}
    for c in cands:
        if c["status"] == "ok" and c["fidelity"] == 2:
            best.setdefault(c["canonical"], c)
    ranked = sorted(best.values(), key=lambda c: (-c["fitness"], c["complexity"], c["canonical"]))
    assert [e.canonical for e in hof] == [c["canonical"] for c in ranked[: config.hall_of_fame]]

    # -- the readable files agree with the result
    with open(Path(result.run_dir) / "hall_of_fame.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["canonical"] for r in rows] == [e.canonical for e in hof]
    assert [float(r["fitness"]) for r in rows] == [pytest.approx(e.fitness, abs=1e-6) for e in hof]
    front = result.pareto
    assert [e.complexity for e in front] == sorted(e.complexity for e in front)
    assert all(a.fitness < b.fitness for a, b in zip(front, front[1:]))
    assert front[-1].fitness == hof[0].fitness
    ckpt = json.loads((Path(result.run_dir) / "checkpoint.json").read_text())["payload"]
    assert ckpt["next_generation"] == config.generations
    return {"evaluations": evals, "candidates": cands, "generations": gens}
