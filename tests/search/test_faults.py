"""Faults: a bad candidate, a dead or hung worker, a damaged run directory,
two searches on one store.  In every case the search either completes with
the failure recorded (and its reason), or stops with one clear error that
names the file -- it never loses or silently overwrites results.

Faults are injected through a task wrapper (``FaultyTask``) handed to a real
evaluator: it misbehaves for chosen candidates, exactly where a real task
would (inside ``Task.evaluate``, in the worker process).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossforge.losses import get as get_loss
from lossforge.primitives import Expr
from lossforge.search import SearchConfig, resume, run
from lossforge.search.checkpoint import read_checkpoint, write_checkpoint
from lossforge.search.cli import main
from lossforge.search.errors import StorageError
from lossforge.search.evaluators import InfraError, Job, LocalEvaluator, RayEvaluator, init_local_ray, run_job
from lossforge.tasks import Result, Task
from lossforge.tasks import get as get_task

from .search_checks import check_finished_run, open_store

REPO = Path(__file__).resolve().parents[2]
SEEDS = ["cross_entropy", "focal", "poly1", "sce", "taylor_glo", "baikal"]


def canonical(loss_name: str) -> str:
    return get_loss(loss_name).expr.canonical


class FaultyTask:
    """A real task that misbehaves for the candidates named in ``faults``
    (canonical form -> fault); everything else is the wrapped task's.

    Faults: ``raise`` (an exception inside evaluate), ``oom`` (a real attempt
    to allocate an exabyte), ``nan`` / ``inf`` (a metric reported as "ok"),
    ``slow`` (a million times the budget, so the time limit must stop it),
    ``hang`` (sleeps, ignoring the time limit), ``die`` (SIGKILLs its worker
    process every time), ``die_once`` (SIGKILLs its worker on the first attempt
    only: ``marker`` records that it happened, so the retry succeeds), ``die_n``
    (SIGKILLs its worker on the first ``kills`` attempts: ``marker-0``,
    ``marker-1``, ... record them).
    """

    def __init__(self, task: Task, faults: dict[str, str], marker: str | None = None, kills: int = 1):
        self.task = task
        self.faults = dict(faults)
        self.marker = marker
        self.kills = kills

    def __getattr__(self, name):
        if name == "task":  # unpickling: no recursion before __dict__ is set
            raise AttributeError(name)
        return getattr(self.task, name)

    def evaluate(self, losses, seed=0, steps=None, split="val", time_limit=None, **kw):
        kinds = [self.faults.get(loss.canonical) for loss in losses if isinstance(loss, Expr)]
        for kind in kinds:
            if kind == "raise":
                raise RuntimeError("injected fault: the task raised")
            if kind == "oom":
                import torch

                torch.empty(1 << 60, dtype=torch.uint8)  # 1 EiB: the allocator refuses
            if kind == "hang":
                time.sleep(3600)
            if kind == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "die_once":
                try:
                    os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass  # the retry: behave
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            if kind == "die_n":
                for k in range(self.kills):
                    try:
                        os.close(os.open(f"{self.marker}-{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        continue
                    os.kill(os.getpid(), signal.SIGKILL)
            if kind in ("nan", "inf"):
                value = math.nan if kind == "nan" else math.inf
                return [Result(str(loss), value, "ok", None, 0.0, steps or 0, seed) for loss in losses]
            if kind == "slow":
                steps = (steps or self.task.steps) * 10**6
        return self.task.evaluate(losses, seed=seed, steps=steps, split=split, time_limit=time_limit, **kw)


def faulty_config(**changes) -> SearchConfig:
    base = dict(tasks=["digits"], generations=2, population=8, steps=30, evaluator="local", save_best=0,
                chunk_size=1, seed_losses=SEEDS, direct_check=False)
    base.update(changes)
    return SearchConfig(**base)


def rows_by_canonical(run_dir: Path) -> tuple[dict, dict]:
    store, run_id = open_store(run_dir)
    try:
        evals = {r["canonical"]: r for r in store.evaluations(run_id)}
        cands = {c["canonical"]: c for c in store.candidates(run_id, generation=0)}
    finally:
        store.close()
    return evals, cands


# ----------------------------------------------------------------------------- one job, in this process
def test_run_job_records_each_bad_entry_alone_and_never_raises():
    task = get_task("digits")
    job = Job("digits", 0, 20, "val", ("-y*log(p)", "__import__('os')", "log(p", "loss:no_such_loss", "p*c0"))
    report = run_job(task, job)
    statuses = [o.status for o in report.outcomes]
    assert statuses[0] == "ok" and report.outcomes[0].metric > 0.5
    assert statuses[1:] == ["error"] * 4
    assert all(o.error for o in report.outcomes[1:])
    assert "GrammarError" in report.outcomes[1].error and "syntax error" in report.outcomes[2].error


def test_a_model_that_explodes_is_marked_diverged_and_the_others_train():
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    # SGD with a huge learning rate on the squared error blows the weights up to inf.
    task = Task.from_arrays(X[:40], y[:40], X[40:], y[40:], kind="regression", optimizer="sgd", lr=1e6,
                            steps=50, batch_size=20, model="linear")
    report = run_job(task, Job("custom", 0, 50, "val", ("(p - y)**2", "Abs(p - y)")))
    exploded, steady = report.outcomes
    assert exploded.status == "diverged" and exploded.metric is None and "non-finite" in exploded.error
    assert steady.status in ("ok", "diverged")  # L1 steps are bounded by lr; it may still diverge,
    assert steady.status == "ok" or steady.error  # but never without a reason


@pytest.mark.parametrize("fault, reason", [
    ("raise", "evaluation failed: RuntimeError: injected fault"),
    ("oom", "evaluation failed: RuntimeError"),
    ("nan", "non-finite metric (nan)"),
    ("inf", "non-finite metric (inf)"),
])
def test_a_job_whose_task_fails_records_every_candidate_with_the_reason(fault, reason):
    bad = canonical("focal")
    task = FaultyTask(get_task("digits"), {bad: fault})
    report = run_job(task, Job("digits", 0, 20, "val", (str(get_loss("focal").expr),)))
    (outcome,) = report.outcomes
    assert outcome.status in ("error", "diverged") and outcome.metric is None
    assert reason in outcome.error


def test_the_time_limit_stops_a_candidate_that_trains_too_long():
    t0 = time.perf_counter()
    (r,) = get_task("digits").evaluate(["-y*log(p)"], seed=0, steps=10**7, time_limit=0.5)
    elapsed = time.perf_counter() - t0
    assert r.status == "error" and r.error.startswith("time limit of 0.5 s reached after")
    assert elapsed < 30  # generous: a shared machine; without the limit this would take hours


def test_the_population_is_split_to_fit_the_memory_budget(monkeypatch):
    from lossforge.tasks import trainer

    task = get_task("digits")
    per = trainer.bytes_per_candidate(task)
    monkeypatch.setattr(trainer, "memory_budget", lambda device: 3 * per)
    assert trainer.default_max_population(task, trainer.resolve_device("cpu")) == 3
    sizes = []
    real = trainer.train_population

    def spy(task_, data, candidates, **kw):
        sizes.append(len(candidates))
        return real(task_, data, candidates, **kw)

    monkeypatch.setattr("lossforge.tasks.task.train_population", spy)
    losses = ["-y*log(p)", "(p - y)**2", "Abs(p - y)", "-y*log(p)*2", "y/p", "-y*p", "-y*sqrt(p)"]
    results = task.evaluate(losses, seed=0, steps=10, device="cpu")
    assert sizes == [3, 3, 1] and len(results) == 7
    assert all(r.status == "ok" for r in results)


# ----------------------------------------------------------------------------- a search with bad candidates
def test_a_search_records_failing_candidates_with_their_reasons_and_completes(tmp_path):
    faults = {canonical("focal"): "raise", canonical("poly1"): "oom", canonical("sce"): "nan",
              canonical("taylor_glo"): "inf", canonical("baikal"): "slow"}
    config = faulty_config(time_limit=2.0)
    evaluator = LocalEvaluator({"digits": FaultyTask(get_task("digits"), faults)}, time_limit=config.time_limit)
    result = run(config, tmp_path / "run", quiet=True, evaluator=evaluator)

    check_finished_run(result, config)
    assert [g["generation"] for g in result.generations] == [0, 1]
    evals, cands = rows_by_canonical(result.run_dir)
    expected = {"raise": "evaluation failed: RuntimeError: injected fault", "oom": "RuntimeError",
                "nan": "non-finite metric", "inf": "non-finite metric", "slow": "time limit of 2 s reached after"}
    for canon, fault in faults.items():
        row = evals[canon]
        assert row["status"] != "ok" and row["metric"] is None, fault
        assert expected[fault] in row["error"], (fault, row["error"])
        assert cands[canon]["status"] == "failed" and cands[canon]["scores"] == {"digits": None}
    assert evals[canonical("cross_entropy")]["status"] == "ok"
    hof = {e.canonical for e in result.hall_of_fame}
    assert canonical("cross_entropy") in hof and not hof & set(faults)
    assert result.generations[0]["filters"]["failed"] == len(faults)


# ----------------------------------------------------------------------------- Ray: dead and hung workers
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    import ray.cloudpickle

    init_local_ray(2)
    # FaultyTask lives in this test module, which the workers cannot import: ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def _ray_run(config, run_dir, task, **kw):
    evaluator = RayEvaluator({"digits": task}, workers=2, time_limit=config.time_limit,
                             max_retries=config.max_retries, **kw)
    try:
        return run(config, run_dir, quiet=True, evaluator=evaluator)
    finally:
        evaluator.close()


def test_a_worker_killed_mid_generation_is_retried_and_the_hall_of_fame_is_unchanged(ray_cluster, tmp_path):
    config = faulty_config(evaluator="ray", chunk_size=2, max_retries=2)
    plain = _ray_run(config, tmp_path / "plain", FaultyTask(get_task("digits"), {}))
    marker = tmp_path / "killed-once"
    faulty = FaultyTask(get_task("digits"), {canonical("focal"): "die_once"}, marker=str(marker))
    killed = _ray_run(config, tmp_path / "killed", faulty)

    assert marker.exists(), "the fault never fired"
    check_finished_run(killed, config)
    assert [(e.canonical, e.fitness, e.scores) for e in killed.hall_of_fame] == \
        [(e.canonical, e.fitness, e.scores) for e in plain.hall_of_fame]
    evals, _ = rows_by_canonical(killed.run_dir)
    assert evals[canonical("focal")]["status"] == "ok"


def test_ray_cancels_a_hung_job_and_gives_up_on_one_that_kills_every_worker(ray_cluster, monkeypatch):
    monkeypatch.setattr(RayEvaluator, "GRACE", 0.5)
    task = FaultyTask(get_task("digits"), {canonical("focal"): "hang", canonical("poly1"): "die"})
    reports = []
    # Separate evaluators: under the tiny time limit, a worker slow to start could be
    # cancelled before it gets to kill itself.
    for name, time_limit in (("focal", 0.5), ("poly1", None)):
        evaluator = RayEvaluator({"digits": task}, workers=2, time_limit=time_limit, max_retries=0)
        try:
            reports += list(evaluator.map([Job("digits", 0, 10, "val", (str(get_loss(name).expr),))]))
        finally:
            evaluator.close()
    hung, dead = reports
    assert "cancelled after exceeding the time limit of 0.5 s" in hung.failure and not hung.infra
    assert "lost to the infrastructure after 0 retries: WorkerCrashedError" in dead.failure and dead.infra
    for report, status in ((hung, "error"), (dead, "infra")):  # a time limit is the candidate's; a death is not
        (outcome,) = report.outcomes
        assert outcome.status == status and outcome.metric is None and outcome.error == report.failure


@pytest.mark.slow
def test_a_search_with_a_hung_job_completes_and_one_that_kills_every_worker_stops_it(ray_cluster, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setattr(RayEvaluator, "GRACE", 1.0)  # cancel 1.2 x time_limit + 1 s after the start
    monkeypatch.setattr(RayEvaluator, "BACKOFF", 0.1)
    config = faulty_config(evaluator="ray", generations=1, max_retries=1, time_limit=10.0, confirm_top=0)
    t0 = time.perf_counter()
    result = _ray_run(config, tmp_path / "run", FaultyTask(get_task("digits"), {canonical("focal"): "hang"}))
    assert time.perf_counter() - t0 < 300
    check_finished_run(result, config)
    evals, cands = rows_by_canonical(result.run_dir)
    hung = evals[canonical("focal")]
    assert hung["status"] == "error" and "cancelled after exceeding the time limit of 10 s" in hung["error"]
    assert cands[canonical("focal")]["status"] == "failed"
    assert evals[canonical("cross_entropy")]["status"] == "ok"

    with pytest.raises(InfraError, match="lost to the infrastructure after 1 retries"):
        _ray_run(config, tmp_path / "dies", FaultyTask(get_task("digits"), {canonical("poly1"): "die"}))
    evals, _ = rows_by_canonical(tmp_path / "dies")
    assert evals[canonical("poly1")]["status"] == "infra"


def test_a_job_killed_more_often_than_max_retries_stops_the_run_and_resume_gives_the_undisturbed_result(
        ray_cluster, tmp_path, monkeypatch, capsys):
    """The job training ``focal`` kills its worker 3 times with max_retries = 2: the
    run stops (exit 3, one line), the lost evaluations are recorded as ``infra`` and
    never scored, and ``--resume`` re-runs exactly those, ending with the hall of
    fame and the evaluations of an undisturbed run."""
    from lossforge.search import engine

    from .search_checks import evaluation_key, open_store

    monkeypatch.setattr(RayEvaluator, "BACKOFF", 0.05)
    config = faulty_config(evaluator="ray", chunk_size=2, max_retries=2, workers=2, confirm_top=0)
    plain = _ray_run(config, tmp_path / "plain", FaultyTask(get_task("digits"), {}))

    faults = {canonical("focal"): "die_n"}
    real_make = engine.make_evaluator

    def faulty_evaluator(kind, tasks, **kw):  # the CLI's own evaluator, its workers given the faulty task
        wrapped = {name: FaultyTask(task, faults, marker=str(tmp_path / "kill"), kills=3) for name, task in tasks.items()}
        return real_make(kind, wrapped, **kw)

    monkeypatch.setattr(engine, "make_evaluator", faulty_evaluator)
    cfg = tmp_path / "search.toml"
    cfg.write_text(config.to_toml())
    run_dir = tmp_path / "run"
    assert main(["search", str(cfg), "--run-dir", str(run_dir), "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lossforge: error: 2 evaluation(s) of generation 1 were lost to the infrastructure "
                              "after 2 retries (WorkerCrashedError") and f"--resume {run_dir}" in err[-1], err
    assert all(not line.startswith("lossforge:") for line in err[:-1])
    assert sorted(p.name for p in tmp_path.glob("kill-*")) == ["kill-0", "kill-1", "kill-2"]
    store, run_id = open_store(run_dir)
    try:
        assert store.run_row(run_id)["status"] == "stopped"
        lost = [r for r in store.evaluations(run_id) if r["status"] == "infra"]
        assert {r["canonical"] for r in lost} >= {canonical("focal")} and len(lost) == 2
        assert all("WorkerCrashedError" in r["error"] and r["metric"] is None for r in lost)
        assert store.generations(run_id) == []  # nothing was scored from generation 1
    finally:
        store.close()
    assert not (run_dir / "checkpoint.json").exists()

    assert main(["search", "--resume", str(run_dir), "--quiet"]) == 0
    resumed_store, _ = open_store(run_dir)
    plain_store, plain_id = open_store(plain.run_dir)
    try:
        assert evaluation_key(resumed_store, run_id) == evaluation_key(plain_store, plain_id)
        assert not [r for r in resumed_store.evaluations(run_id) if r["status"] == "infra"]
        assert resumed_store.run_row(run_id)["status"] == "finished"
    finally:
        resumed_store.close()
        plain_store.close()
    assert (run_dir / "hall_of_fame.csv").read_text() == (plain.run_dir / "hall_of_fame.csv").read_text()
    assert sorted(p.name for p in tmp_path.glob("kill-*")) == ["kill-0", "kill-1", "kill-2"]  # no more kills


# ----------------------------------------------------------------------------- a damaged run directory
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    config = faulty_config(seed_losses=[], chunk_size=8)
    run(config, run_dir, quiet=True)
    return run_dir


def _snapshot(run_dir: Path) -> dict[str, str]:
    """Every file of the run directory (but the lock file) and its hash."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.iterdir())
            if p.name != ".lock"}


GARBAGE = random.Random(0).randbytes(8192)


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE = {
    "checkpoint truncated": ("checkpoint.json", lambda p: _truncate(p, 0.5), "corrupt or truncated"),
    "checkpoint empty": ("checkpoint.json", lambda p: p.write_bytes(b""), "corrupt or truncated"),
    "checkpoint garbage": ("checkpoint.json", lambda p: p.write_bytes(GARBAGE[:512]), "corrupt or truncated"),
    "checkpoint deleted": ("checkpoint.json", lambda p: p.unlink(), "is missing but checkpoint.prev.json"),
    "run store truncated": ("runs.db", lambda p: _truncate(p, 0.5), "cannot be opened"),
    "run store header only": ("runs.db", lambda p: _truncate(p, 0.002), "cannot be opened"),
    "run store garbage": ("runs.db", lambda p: p.write_bytes(GARBAGE), "not an SQLite database"),
    "run store page garbage": ("runs.db", lambda p: p.write_bytes(p.read_bytes()[:4096] + GARBAGE[:4096]
                                                                   + p.read_bytes()[8192:]), "cannot be opened"),
    "run store empty": ("runs.db", lambda p: p.write_bytes(b""), "missing or empty"),
    "run store deleted": ("runs.db", lambda p: p.unlink(), "missing or empty"),
    "run record garbage": ("run.json", lambda p: p.write_bytes(b"\x00\xff{"), "is corrupt"),
    "run record not an object": ("run.json", lambda p: p.write_text("[1, 2]"), "not a lossforge run record"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_directory_is_refused_naming_the_file_and_left_as_it_is(damage, finished_run, tmp_path,
                                                                              capsys):
    name, harm, fragment = DAMAGE[damage]
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    harm(run_dir / name)
    before = _snapshot(run_dir)

    with pytest.raises(StorageError) as info:
        resume(run_dir, quiet=True)
    message = str(info.value)
    assert str(run_dir / name) in message and fragment in message
    assert _snapshot(run_dir) == before

    assert main(["search", "--resume", str(run_dir), "--local", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lossforge: error: ") and str(run_dir / name) in err
    assert _snapshot(run_dir) == before


def test_an_intact_copy_of_a_run_directory_resumes_from_its_own_store(finished_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    original = _snapshot(finished_run)
    result = resume(run_dir, quiet=True)
    assert result.evaluations > 0 and result.hall_of_fame
    assert _snapshot(finished_run) == original  # the copy did not write to the original's runs.db


def test_report_and_resume_of_a_copy_read_the_copy_and_never_touch_the_original(finished_run, tmp_path):
    from lossforge.search.report import _open_store

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    assert json.loads((copy / "run.json").read_text())["store"] == "runs.db"  # recorded relative to the run
    original = _snapshot(finished_run)
    store, run_id = open_store(copy)
    try:  # mark the copy's own store, to see which one the report read
        store.set_status(run_id, "copy-marker")
    finally:
        store.close()
    reader = _open_store(copy, json.loads((copy / "run.json").read_text()))  # what `lossforge report` reads
    try:
        assert reader.run_row(run_id)["status"] == "copy-marker"
    finally:
        reader.close()
    resume(copy, quiet=True)
    assert _snapshot(finished_run) == original
    store, _ = open_store(finished_run)
    try:
        assert store.run_row(run_id)["status"] == "finished"
    finally:
        store.close()


@pytest.mark.parametrize("damage, fragment", [("deleted", "is missing or empty"), ("emptied", "is missing or empty"),
                                              ("truncated", "cannot be opened")])
def test_report_of_a_copy_whose_run_store_is_missing_or_damaged_is_exit_2_naming_the_file(
        damage, fragment, finished_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    db = copy / "runs.db"
    if damage == "deleted":
        db.unlink()
    elif damage == "emptied":
        db.write_bytes(b"")
    else:
        _truncate(db, 0.5)
    original = _snapshot(finished_run)
    for argv in (["report", str(copy)], ["search", "--resume", str(copy), "--local", "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(db) in err and fragment in err, err
    assert _snapshot(finished_run) == original


def _another_run(tmp_path) -> Path:
    other = tmp_path / "other"
    run(faulty_config(seed_losses=[], chunk_size=8, generations=1, seed=5), other, quiet=True)
    return other


def test_a_checkpoint_from_another_run_is_refused(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    shutil.copy(_another_run(tmp_path) / "checkpoint.json", run_dir / "checkpoint.json")
    before = _snapshot(run_dir)
    with pytest.raises(StorageError, match="belongs to run .* copied from another run"):
        resume(run_dir, quiet=True)
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize("tamper", ["payload edited", "hash edited", "format edited", "valid hash, bad content",
                                    "valid hash, not an object", "pickle"])
def test_a_tampered_checkpoint_is_refused(tamper, finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    path = run_dir / "checkpoint.json"
    doc = json.loads(path.read_text())
    if tamper == "payload edited":
        doc["payload"]["next_generation"] = 1
        path.write_text(json.dumps(doc))
        fragment = "fails its checksum"
    elif tamper == "hash edited":
        doc["sha256"] = "0" * 64
        path.write_text(json.dumps(doc))
        fragment = "fails its checksum"
    elif tamper == "format edited":
        doc["format"] = "something-else/9"
        path.write_text(json.dumps(doc))
        fragment = "is not a lossforge checkpoint"
    elif tamper == "valid hash, bad content":
        payload = dict(doc["payload"], strategy={"rng": "not a state"}, hall_of_fame=17)
        write_checkpoint(path, payload)  # a correct checksum over content that does not fit
        fragment = "does not fit this run"
    elif tamper == "valid hash, not an object":
        write_checkpoint(path, [1, 2, 3])  # type: ignore[arg-type]
        fragment = "holds no run state"
    else:
        import pickle

        canary = tmp_path / "canary"

        class Boom:
            def __reduce__(self):
                return (os.system, (f"touch {canary}",))

        path.write_bytes(pickle.dumps({"payload": Boom()}))
        fragment = "corrupt or truncated"
    with pytest.raises(StorageError, match=fragment) as info:
        resume(run_dir, quiet=True)
    assert str(path) in str(info.value)
    if tamper == "pickle":
        assert not (tmp_path / "canary").exists()


def test_a_crash_while_writing_a_checkpoint_leaves_a_valid_one(tmp_path, monkeypatch):
    from lossforge.search import checkpoint

    path = tmp_path / "checkpoint.json"
    write_checkpoint(path, {"next_generation": 1})
    real = checkpoint.atomic_write_text
    calls = []

    def crash_on_the_new_checkpoint(p, text):
        calls.append(Path(p).name)
        if Path(p).name == "checkpoint.json":
            raise KeyboardInterrupt  # the process dies between keeping .prev and writing the new one
        real(p, text)

    monkeypatch.setattr(checkpoint, "atomic_write_text", crash_on_the_new_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(path, {"next_generation": 2})
    assert calls == ["checkpoint.prev.json", "checkpoint.json"]
    assert read_checkpoint(path)["next_generation"] == 1
    assert read_checkpoint(tmp_path / "checkpoint.prev.json")["next_generation"] == 1


# ----------------------------------------------------------------------------- two searches, one store
def test_two_searches_writing_one_store_at_once_lose_nothing(tmp_path):
    store_url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = []
    for k in range(2):
        cfg = tmp_path / f"search{k}.toml"
        cfg.write_text(f'name = "shared{k}"\nseed = {k}\ntasks = ["digits"]\ngenerations = 2\npopulation = 8\n'
                       f'steps = 30\nchunk_size = 1\ndirect_check = false\nsave_best = 0\nconfirm_top = 0\n'
                       f'store = "{store_url}"\n')
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "lossforge.search.cli", "search", str(cfg), "--local", "--quiet",
             "--run-dir", str(tmp_path / f"run{k}")], cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]

    from lossforge.search.runstore import RunStore

    store = RunStore(store_url)
    try:
        for k, (out, _) in enumerate(outputs):
            run_id, reported = out.split(":")[0].split()[1], int(out.split(":")[1].split()[0])
            assert run_id.startswith(f"shared{k}-")
            assert store.run_row(run_id)["status"] == "finished"
            evals = store.evaluations(run_id)
            cands = store.candidates(run_id)
            assert len(evals) == reported > 0
            assert [g["generation"] for g in store.generations(run_id)] == [0, 1]
            assert len(cands) == 2 * 8
            # every candidate that was trained has its evaluation row
            trained = {c["canonical"] for c in cands if c["fidelity"] > 0 and c["status"] in ("ok", "failed")}
            assert trained <= {r["canonical"] for r in evals}
            assert {r["canonical"] for r in evals if r["canonical"].startswith("loss:")} == {"loss:cross_entropy"}
        assert not (tmp_path / "run0" / "runs.db").exists()
    finally:
        store.close()
