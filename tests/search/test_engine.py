"""End-to-end searches, small enough for CI: every strategy and option that
changes what a run does, checked against the run store it leaves behind."""
from __future__ import annotations

import json
import math

import optuna
import pytest

from lossforge.primitives import parse
from lossforge.search import SearchConfig, run
from lossforge.search.cli import main
from lossforge.search.fitness import REJECTED_FITNESS

from .search_checks import check_finished_run, open_store, small_config


def _by_generation(candidates):
    out: dict[int, list] = {}
    for c in candidates:
        out.setdefault(c["generation"], []).append(c)
    return out


def _dominates(a, b) -> bool:
    """(fitness up, complexity down)."""
    return a[0] >= b[0] and a[1] <= b[1] and a != b


def test_gp_tournament_search(tmp_path):
    config = small_config(generations=3)
    result = run(config, tmp_path / "run", quiet=True)
    tables = check_finished_run(result, config)
    gens = _by_generation(tables["candidates"])
    assert {c["origin"] for c in gens[0]} == {"init"}
    for g in (1, 2):
        # elitism: the first `elitism` of a generation are the previous one's best
        elites = [c for c in gens[g] if c["origin"] == "elite"]
        assert [c["position"] for c in elites] == list(range(config.elitism))
        previous = sorted((c["fitness"] for c in gens[g - 1]), reverse=True)[: config.elitism]
        assert sorted((c["fitness"] for c in elites), reverse=True) == pytest.approx(previous)
        assert not {c["origin"] for c in gens[g]} & {"init", "seed"}
    # the generation summaries agree with the candidates
    for rec in tables["generations"]:
        trained = [c["fitness"] for c in gens[rec["generation"]] if c["fidelity"] > 0]
        assert rec["best"] == pytest.approx(max(trained))
    assert result.best is result.hall_of_fame[0]


def test_gp_nsga2_search_keeps_the_first_front(tmp_path):
    config = small_config(selection="nsga2", elitism=0)
    result = run(config, tmp_path / "run", quiet=True)
    tables = check_finished_run(result, config)
    ckpt = json.loads((result.run_dir / "checkpoint.json").read_text())["payload"]
    population = ckpt["strategy"]["population"]
    assert len(population) == config.population
    assert all(p["crowding"] is not None for p in population)  # parent selection needs it after a resume
    # (mu + lambda) survival: the first front of parents + offspring survives whole.
    points = [(c["fitness"], c["complexity"] if c["complexity"] is not None else 10**6)
              for c in tables["candidates"]]
    front = [p for p in points if not any(_dominates(q, p) for q in points)]
    survivors = sorted(tuple(p["fitness"]) for p in population)
    if len(front) <= config.population:
        for p in front:
            assert any(s[0] == pytest.approx(p[0]) and s[1] == p[1] for s in survivors)
    assert "elite" not in {c["origin"] for c in tables["candidates"]}  # NSGA-II survival replaces elitism


def test_random_search(tmp_path):
    config = small_config(strategy="random")
    result = run(config, tmp_path / "run", quiet=True)
    tables = check_finished_run(result, config)
    assert {c["origin"] for c in tables["candidates"]} == {"random"}


def test_family_search_records_its_optuna_study(tmp_path):
    config = small_config(strategy="family", family="taylor")
    result = run(config, tmp_path / "run", quiet=True)
    tables = check_finished_run(result, config)
    assert {c["origin"] for c in tables["candidates"]} == {"family:taylor"}
    study = optuna.load_study(storage=f"sqlite:///{result.run_dir / 'runs.db'}",
                              study_name=f"{result.run_id}-family-taylor")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == config.generations * config.population
    assert set(trials[0].params) == {f"c{i}" for i in range(8)}
    # Optuna was told each candidate's fitness, in proposal order
    fitness = [max(c["fitness"], REJECTED_FITNESS) for c in tables["candidates"]]
    assert [t.value for t in trials] == pytest.approx(fitness)
    assert study.best_value == pytest.approx(max(fitness))


def test_tune_top_tunes_the_best_entry_with_constants(tmp_path):
    # sce (4*p*(1 - y) - y*log(p)/10) has two tunable constants.
    config = small_config(seed_losses=["sce"], tune_top=1, tune_trials=8, hall_of_fame=100)
    result = run(config, tmp_path / "run", quiet=True)
    tables = check_finished_run(result, config, tuning_generations=1)
    study_names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{result.run_dir / 'runs.db'}")]
    assert study_names == [f"{result.run_id}-tune-0"]
    study = optuna.load_study(storage=f"sqlite:///{result.run_dir / 'runs.db'}", study_name=study_names[0])
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == config.tune_trials
    tuned = [c for c in tables["candidates"] if c["origin"] == "tuned"]
    assert len(tuned) == config.tune_trials and {c["generation"] for c in tuned} == {config.generations}
    assert [t.value for t in trials] == pytest.approx([max(c["fitness"], REJECTED_FITNESS) for c in tuned])
    # The first trial is the entry as found (the best one with constants).
    from lossforge.search.tuning import parametrise

    first = next(e for e in _gp_hall_of_fame(tables, config) if parametrise(e["expression"])[1])
    assert trials[0].params == pytest.approx(parametrise(first["expression"])[1])
    assert any(e.origin == "tuned" for e in result.hall_of_fame)


def _gp_hall_of_fame(tables, config):
    """The hall of fame before tuning, rebuilt from the GP generations' candidates."""
    best: dict[str, dict] = {}
    for c in tables["candidates"]:
        if c["generation"] < config.generations and c["status"] == "ok" and c["fidelity"] == 2:
            best.setdefault(c["canonical"], c)
    ranked = sorted(best.values(), key=lambda c: (-c["fitness"], c["complexity"], c["canonical"]))
    return [{**c, "expression": parse(c["expr"])} for c in ranked]


def test_multi_fidelity_promotes_the_best_fraction(tmp_path):
    from lossforge.search.fitness import aggregate, task_score
    from lossforge.tasks import get as get_task

    config = small_config(steps=80, short_steps=30, promote_fraction=0.5, seed_losses=["cross_entropy", "focal"])
    result = run(config, tmp_path / "run", quiet=True)
    tables = check_finished_run(result, config)
    assert set(result.baselines) == {"digits@80", "digits@30"}
    gens = _by_generation(tables["candidates"])
    short = {r["canonical"]: r["metric"] for r in tables["evaluations"] if r["steps"] == 30}
    task = get_task("digits")
    for rec in tables["generations"]:
        f = rec["filters"]
        n_promote = math.ceil(config.promote_fraction * f["evaluated"]) if f["evaluated"] else 0
        assert n_promote <= f["promoted"] <= f["evaluated"] + f["fingerprint_duplicate"]
        trained = [c for c in gens[rec["generation"]] if c["status"] in ("ok", "failed")]
        assert len(trained) == f["evaluated"]
        full = [c for c in trained if c["fidelity"] == 2]
        assert n_promote <= len(full) <= f["promoted"]
        if rec["generation"] == 0:
            # Nothing was full-trained before: exactly the best short-budget fraction is promoted.
            assert len(full) == n_promote < len(trained)
            fit = {c["canonical"]: aggregate({"digits": task_score(short[c["canonical"]], result.baselines["digits@30"],
                                                                   task.direction)}) for c in trained}
            assert min(fit[c["canonical"]] for c in full) >= max(fit[c["canonical"]] for c in trained
                                                                  if c["fidelity"] == 1)
    # the hall of fame holds full-budget results only
    full_metric = {r["canonical"]: r["metric"] for r in tables["evaluations"] if r["steps"] == 80}
    for e in result.hall_of_fame:
        assert e.scores["digits"] == pytest.approx(full_metric[e.canonical])


def test_multi_task_classification_binary_and_multiclass(tmp_path):
    config = small_config(tasks=["digits", "breast_cancer"], seed_losses=["cross_entropy"])
    result = run(config, tmp_path / "run", quiet=True)
    check_finished_run(result, config)
    assert set(result.baselines) == {"digits@60", "breast_cancer@60"}
    for e in result.hall_of_fame:
        assert set(e.scores) == {"digits", "breast_cancer"}


def test_multi_task_regression_with_classification(tmp_path):
    # One expression, two prediction spaces: (p - y)**2 is MSE on both.
    config = small_config(tasks=["breast_cancer", "diabetes"], seed_losses=["mse"], generations=1)
    result = run(config, tmp_path / "run", quiet=True)
    check_finished_run(result, config)
    mse = next(e for e in result.hall_of_fame if e.canonical == parse("(p - y)**2").canonical)
    assert mse.origin == "seed"
    assert mse.scores["diabetes"] == pytest.approx(result.baselines["diabetes@60"])  # the catalogue's mse


def test_seed_losses_start_the_population_and_match_the_baseline(tmp_path):
    config = small_config(seed_losses=["cross_entropy"], eval_seeds=2)
    result = run(config, tmp_path / "run", quiet=True)
    tables = check_finished_run(result, config)
    first = tables["candidates"][0]
    assert (first["generation"], first["position"], first["origin"]) == (0, 0, "seed")
    assert first["canonical"] == "-y*log(p)" and first["status"] == "ok"
    # cross-entropy written as an expression trains exactly like the catalogue baseline
    assert first["scores"]["digits"] == pytest.approx(result.baselines["digits@60"])
    assert first["fitness"] == pytest.approx(0.0, abs=1e-12)
    assert [e.canonical for e in result.hall_of_fame].count("-y*log(p)") == 1


def test_cli_search_and_resume_of_a_finished_run(tmp_path, capsys):
    cfg = tmp_path / "search.toml"
    cfg.write_text('name = "cli"\nsave_best = 0\n\n'
                   '[search]\ntasks = ["digits"]\ngenerations = 2\npopulation = 8\nseed = 3\n\n'
                   '[evaluation]\nsteps = 60\nchunk_size = 8\n')
    run_dir = tmp_path / "run"
    assert main(["search", str(cfg), "--local", "--run-dir", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "hall of fame (fitness = mean log error ratio" in out and str(run_dir) in out
    saved = SearchConfig.from_toml(run_dir / "config.toml")
    assert saved.evaluator == "local" and saved.seed == 3 and saved.name == "cli"
    store, run_id = open_store(run_dir)
    n = store.count_evaluations(run_id)
    store.close()
    lines = (run_dir / "hall_of_fame.csv").read_text().splitlines()
    # resuming a finished run trains nothing and reports the same hall of fame
    assert main(["search", "--resume", str(run_dir), "--local", "--quiet"]) == 0
    assert (run_dir / "hall_of_fame.csv").read_text().splitlines() == lines
    store, _ = open_store(run_dir)
    assert store.count_evaluations(run_id) == n
    store.close()
    # a second run into the same directory is refused with a hint, not a traceback
    assert main(["search", str(cfg), "--local", "--run-dir", str(run_dir), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_the_cli_names_the_runs_fitness_aggregate(tmp_path, capsys):
    from lossforge.search.cli import main

    cfg = tmp_path / "min.toml"
    cfg.write_text('[search]\nname = "cli-min"\ntasks = ["digits"]\ngenerations = 1\npopulation = 4\n\n'
                   '[evaluation]\nsteps = 30\nchunk_size = 4\n\n[fitness]\naggregate = "min"\n\n'
                   '[confirmation]\nconfirm_top = 0\n')
    assert main(["search", str(cfg), "--local", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    assert "hall of fame (fitness = worst task's log error ratio vs the baseline" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[search]\ntask = ["digits"]\n')
    assert main(["search", str(bad), "--local"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'tasks'" in err and "Traceback" not in err
    assert main(["search", "--local"]) == 2
    assert "missing CONFIG" in capsys.readouterr().err

