"""Results depend on the configuration only: not on the evaluator, the number of
workers, or on whether the run was interrupted (Ctrl-C or SIGKILL) and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lossforge.search import resume, run
from lossforge.search.evaluators import LocalEvaluator, init_local_ray
from lossforge.tasks import get as get_task

from .search_checks import check_finished_run, evaluation_key, hall_of_fame_key, open_store, small_config


class Counting:
    """Wraps an evaluator: counts the candidates it trains and, with ``stop_after``,
    raises KeyboardInterrupt when asked for one more job report than that."""

    def __init__(self, inner, stop_after: int | None = None):
        self.inner = inner
        self.stop_after = stop_after
        self.parallelism = inner.parallelism
        self.reports = 0
        self.trained = 0

    def map(self, jobs):
        for report in self.inner.map(jobs):
            if self.stop_after is not None and self.reports >= self.stop_after:
                raise KeyboardInterrupt
            self.reports += 1
            self.trained += len(report.job.entries)
            yield report

    def close(self):
        self.inner.close()


def _local(config):
    return LocalEvaluator({t: get_task(t) for t in config.tasks})


def _tables(run_dir):
    """The run's recorded results, without ids, run ids, timings or workers."""
    store, run_id = open_store(run_dir)
    try:
        cands = [{k: v for k, v in c.items() if k not in ("id", "run_id")} for c in store.candidates(run_id)]
        gens = [{k: v for k, v in g.items() if k not in ("run_id", "created", "wall_time")}
                for g in store.generations(run_id)]
        return {"evaluations": evaluation_key(store, run_id), "candidates": cands, "generations": gens}
    finally:
        store.close()


def _same_results(a, b) -> None:
    assert hall_of_fame_key(a) == hall_of_fame_key(b)
    assert [(e.canonical, e.fitness) for e in a.pareto] == [(e.canonical, e.fitness) for e in b.pareto]
    assert a.baselines == b.baselines
    ta, tb = _tables(a.run_dir), _tables(b.run_dir)
    assert ta["evaluations"] == tb["evaluations"]
    assert ta["candidates"] == tb["candidates"]
    assert ta["generations"] == tb["generations"]
    assert (a.run_dir / "hall_of_fame.csv").read_text() == (b.run_dir / "hall_of_fame.csv").read_text()


# ----------------------------------------------------------------- local vs Ray
@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        init_local_ray(2)
    yield ray
    if started:
        ray.shutdown()


def test_local_and_ray_with_1_or_2_workers_give_the_same_run(tmp_path, ray_session):
    # chunk_size 2: several jobs per generation, so 2 workers finish them out of order
    config = small_config(chunk_size=2, seed_losses=["cross_entropy"])
    local = run(config, tmp_path / "local", quiet=True)
    check_finished_run(local, config)
    for workers in (1, 2):
        remote = run(config.replace(evaluator="ray", workers=workers), tmp_path / f"ray{workers}", quiet=True)
        _same_results(local, remote)
    store, run_id = open_store(tmp_path / "ray2")
    workers = {r["worker"] for r in store.evaluations(run_id)}
    store.close()
    assert len(workers) == 2  # both Ray workers trained candidates


def test_same_config_same_run_and_another_seed_another_run(tmp_path):
    config = small_config(generations=1, seed=5)
    a = run(config, tmp_path / "a", quiet=True)
    b = run(config, tmp_path / "b", quiet=True)
    _same_results(a, b)
    c = run(config.replace(seed=6), tmp_path / "c", quiet=True)
    seeds = [json.loads((r.run_dir / "run.json").read_text())["eval_seeds"] for r in (a, c)]
    assert seeds[0] != seeds[1]


# ----------------------------------------------------------------- interrupt (Ctrl-C) and resume
CONFIGS = {
    "gp": dict(generations=3, chunk_size=2, seed_losses=["cross_entropy"]),
    "nsga2": dict(generations=3, chunk_size=2, selection="nsga2", elitism=0),
    "multi_fidelity": dict(generations=3, chunk_size=2, steps=60, short_steps=20, promote_fraction=0.5, eval_seeds=2),
    "family": dict(generations=3, chunk_size=2, strategy="family", family="poly", family_params=2),
    "tune": dict(generations=2, chunk_size=4, seed_losses=["sce"], tune_top=1, tune_trials=8),
}
# (config, share of the uninterrupted run's job reports after which Ctrl-C arrives)
CASES = [("gp", 0.0), ("gp", 0.5), ("multi_fidelity", 0.6), ("family", 0.6), ("tune", 1.0)]
SLOW_CASES = [("gp", 0.2), ("gp", 0.9), ("nsga2", 0.3), ("nsga2", 0.7), ("multi_fidelity", 0.3),
              ("family", 0.3), ("tune", 0.75)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per config, made on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            config = small_config(**CONFIGS[name])
            ev = Counting(_local(config))
            result = run(config, tmp_path_factory.mktemp(f"ref-{name}") / "run", quiet=True, evaluator=ev)
            check_finished_run(result, config, tuning_generations=1 if config.tune_top else 0)
            cache[name] = (config, result, ev)
        return cache[name]

    return get


def _interrupt_and_resume(tmp_path, reference, name, share):
    config, ref, ref_ev = reference(name)
    stop = min(int(share * ref_ev.reports), ref_ev.reports - 1)
    first = Counting(_local(config), stop_after=stop)
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "run", quiet=True, evaluator=first)
    store, run_id = open_store(tmp_path / "run")
    assert store.run_row(run_id)["status"] == "interrupted"
    assert store.count_evaluations(run_id) == first.trained  # every finished job was recorded
    store.close()
    if name == "tune" and stop == ref_ev.reports - 1:
        # Ctrl-C in the middle of the first tuning batch: its trials are left running.
        import optuna

        study = optuna.load_study(storage=f"sqlite:///{tmp_path / 'run' / 'runs.db'}", study_name=f"{run_id}-tune-0")
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING] * config.tune_trials
    second = Counting(_local(config))
    resumed = resume(tmp_path / "run", quiet=True, evaluator=second)
    _same_results(ref, resumed)
    # nothing was trained twice
    assert first.trained + second.trained == ref_ev.trained
    assert resumed.evaluations == ref.evaluations


@pytest.mark.parametrize("name,share", CASES)
def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, reference, name, share):
    _interrupt_and_resume(tmp_path, reference, name, share)


@pytest.mark.slow
@pytest.mark.parametrize("name,share", SLOW_CASES)
def test_interrupted_run_resumes_to_the_uninterrupted_result_more_points(tmp_path, reference, name, share):
    _interrupt_and_resume(tmp_path, reference, name, share)


def test_twice_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, reference):
    config, ref, ref_ev = reference("gp")
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "run", quiet=True, evaluator=Counting(_local(config), stop_after=3))
    with pytest.raises(KeyboardInterrupt):
        resume(tmp_path / "run", quiet=True, evaluator=Counting(_local(config), stop_after=3))
    _same_results(ref, resume(tmp_path / "run", quiet=True))


# ----------------------------------------------------------------- SIGKILL and resume
def _kill_during_run(tmp_path, config_text: str, generations: int):
    from lossforge.search import SearchConfig

    cfg = tmp_path / "search.toml"
    cfg.write_text(config_text)
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lossforge.search.cli", "search", str(cfg), "--local",
                             "--run-dir", str(run_dir), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ckpt = run_dir / "checkpoint.json"
    deadline = time.monotonic() + 120
    killed_at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = json.loads(ckpt.read_text())["payload"]["next_generation"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                done = 0
            if done >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = done
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    assert killed_at is not None, f"the run ended before it could be killed: {err.decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert killed_at < generations, "the kill came after the last generation; lengthen the run"
    config = SearchConfig.from_toml(cfg).replace(evaluator="local")
    return config, run_dir


def sigkill_and_resume(tmp_path, config_text: str, generations: int = 3) -> None:
    """SIGKILL a run mid-search, resume it, and check it equals an uninterrupted run with nothing trained twice."""
    config, run_dir = _kill_during_run(tmp_path, config_text, generations)
    store, run_id = open_store(run_dir)
    assert store.run_row(run_id)["status"] == "running"  # SIGKILL leaves no chance to say otherwise
    before = store.count_evaluations(run_id)
    store.close()
    ev = Counting(_local(config))
    resumed = resume(run_dir, quiet=True, evaluator=ev)
    reference = run(config, tmp_path / "reference", quiet=True)
    check_finished_run(resumed, config)
    _same_results(reference, resumed)
    assert before + ev.trained == reference.evaluations  # nothing trained twice


@pytest.mark.parametrize("extra", ["", pytest.param("selection = \"nsga2\"\nelitism = 0\n", marks=pytest.mark.slow)],
                         ids=["tournament", "nsga2"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, extra):
    sigkill_and_resume(tmp_path, "tasks = [\"digits\"]\ngenerations = 3\npopulation = 8\nsteps = 60\nchunk_size = 2\n"
                                 "save_best = 0\nseed = 11\n" + extra)


# ----------------------------------------------------------------- a two-node cluster on loopback
@pytest.mark.slow
def test_two_node_loopback_cluster_gives_the_local_hall_of_fame():
    import shutil
    import socket
    from pathlib import Path

    if shutil.which("ray") is None and not (Path(sys.executable).parent / "ray").exists():
        pytest.skip("the ray command is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).resolve().parents[2] / "experiments" / "multinode.py"
    out = subprocess.run([sys.executable, str(script), "--port", str(port)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "hall of fame identical: yes; recorded metrics identical: yes" in out.stdout
