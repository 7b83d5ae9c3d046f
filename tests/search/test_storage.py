"""The run store's contract, one suite against every backend (the Optuna pattern):
SQLite (a file) and PostgreSQL (a real server each session starts in a
temporary directory on a free loopback port and stops at the end; see
``postgres_server.py``).  The PostgreSQL cases are skipped, with the reason,
only when the server binaries or the psycopg driver are missing.

Then what only SQLite has (a damaged file), and the checkpoint files.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from lossforge.search.checkpoint import atomic_write_text, read_checkpoint, write_checkpoint
from lossforge.search.errors import StorageError
from lossforge.search.runstore import INFRA, SCHEMA_VERSION, RunStore, database_url, meta_table, sqlite_url

from .postgres_server import PostgresServer, binaries

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres():
    bindir = binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed: pip install 'psycopg[binary]' (in lossforge[test])")
    server = PostgresServer(bindir)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"could not start a PostgreSQL server from {bindir}: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """A URL of a new, empty run store on each backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "store.db")
    server = request.getfixturevalue("postgres")
    return server.create_database(f"lf_{uuid.uuid4().hex[:12]}")


def _row(i, **kw):
    r = dict(run_id="r1", generation=0, canonical=f"p*{i}", expr=f"p*{i}", task="digits", seed=1, steps=10,
             split="val", metric=0.5, status="ok", error=None, train_time=0.1, wall_time=0.2, worker="w")
    r.update(kw)
    return r


KEY0 = ("p*0", "digits", 1, 10, "val")


# ----------------------------------------------------------------------------- the contract
def test_evaluations_round_trip_and_are_never_duplicated(store_url):
    store = RunStore(store_url)
    store.open_run("r1", "t", {"a": 1}, "d1", "0")
    store.record_evaluations([_row(i) for i in range(5)])
    store.record_evaluations([_row(0, metric=0.9)])  # same key: kept as first recorded
    assert store.count_evaluations("r1") == 5
    got = store.cached_evaluations("r1", [KEY0, ("p*9", "digits", 1, 10, "val")])
    assert list(got) == [KEY0] and got[KEY0]["metric"] == 0.5
    assert [r["canonical"] for r in store.evaluations("r1")] == [f"p*{i}" for i in range(5)]
    assert store.run_row("r1")["status"] == "running" and store.run_row("nope") is None
    store.close()


def test_a_run_reopened_with_another_config_is_refused(store_url):
    store = RunStore(store_url)
    store.open_run("r1", "t", {}, "d1", "0")
    store.set_status("r1", "interrupted")
    store.open_run("r1", "t", {}, "d1", "0")  # the same run resumed
    assert store.run_row("r1")["status"] == "running"
    with pytest.raises(StorageError, match="different configuration"):
        store.open_run("r1", "t", {}, "d2", "0")
    store.close()


def test_an_infrastructure_fault_is_recorded_never_cached_and_replaced_by_the_result(store_url):
    store = RunStore(store_url)
    store.record_evaluations([_row(0, metric=None, status=INFRA, error="lost: WorkerCrashedError"), _row(1)])
    assert store.count_evaluations("r1") == 2
    assert list(store.cached_evaluations("r1", [KEY0, ("p*1", "digits", 1, 10, "val")])) == [
        ("p*1", "digits", 1, 10, "val")]
    store.record_evaluations([_row(0, metric=0.7)])  # the retried evaluation's result
    rows = {r["canonical"]: r for r in store.evaluations("r1")}
    assert len(rows) == 2 and rows["p*0"]["status"] == "ok" and rows["p*0"]["metric"] == 0.7
    assert store.cached_evaluations("r1", [KEY0])[KEY0]["metric"] == 0.7
    # a late infrastructure fault never overwrites a result
    store.record_evaluations([_row(0, metric=None, status=INFRA)])
    assert store.cached_evaluations("r1", [KEY0])[KEY0]["metric"] == 0.7
    store.close()


def test_generations_and_candidates_are_recorded_idempotently(store_url):
    store = RunStore(store_url)
    cands = [dict(position=i, origin="gp", expr=f"p*{i}", canonical=f"p*{i}", complexity=3, status="ok",
                  fidelity=2, fitness=0.1 * i, scores=json.dumps({"digits": 0.9})) for i in range(4)]
    summary = dict(best=0.3, median=0.15, n_candidates=4, n_evaluations=4, filters={"duplicate": 0}, wall_time=1.0)
    for _ in range(2):  # a generation recorded again after a resume replaces itself
        store.record_generation("r1", 0, cands, summary)
    store.record_generation("r1", 1, cands[:2], dict(summary, best=0.5))
    assert [(g["generation"], g["best"]) for g in store.generations("r1")] == [(0, 0.3), (1, 0.5)]
    assert store.generations("r1")[0]["filters"] == {"duplicate": 0}
    assert len(store.candidates("r1")) == 6 and len(store.candidates("r1", generation=1)) == 2
    assert store.candidates("r1", generation=0)[3]["scores"] == {"digits": 0.9}
    store.close()


def test_the_schema_version_is_recorded_and_a_newer_store_is_refused(store_url):
    store = RunStore(store_url)
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.begin() as conn:  # what a future lossforge would leave behind
        conn.execute(meta_table.update().where(meta_table.c.key == "schema_version").values(value="99"))
        conn.execute(meta_table.update().where(meta_table.c.key == "created_by").values(value="lossforge 9.0"))
    store.close()
    with pytest.raises(StorageError, match=r"schema version 99, written by a newer lossforge \(lossforge 9.0\).*"
                                           r"Upgrade lossforge"):
        RunStore(store_url)
    engine = sa.create_engine(database_url(store_url))  # the refused store was left as it was
    with engine.connect() as conn:
        assert conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar() == "99"
    engine.dispose()


def _open_at_once(url, barrier, errors):
    try:
        barrier.wait(60)
        store = RunStore(url)
        store.open_run(f"run-{os.getpid()}", "t", {}, "d", "0")
        store.record_evaluations([_row(0, run_id=f"run-{os.getpid()}")])
        store.close()
    except Exception as exc:  # reported to the parent, which fails the test with it
        errors.put(f"{type(exc).__name__}: {exc}")


def test_several_processes_creating_one_new_store_at_the_same_moment_all_succeed(store_url):
    ctx = mp.get_context("fork")
    n = 6
    barrier, errors = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(store_url, barrier, errors)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems and all(p.exitcode == 0 for p in procs), problems
    store = RunStore(store_url)
    assert store.count_evaluations() == n and store.schema_version() == SCHEMA_VERSION
    store.close()


def _writer(url, run_id, n):
    store = RunStore(url)
    store.open_run(run_id, run_id, {}, "d", "0")
    for i in range(n):
        store.record_evaluations([_row(i, run_id=run_id)])
    store.close()


def test_two_processes_writing_one_store_lose_nothing(store_url):
    RunStore(store_url).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(store_url, f"run{k}", 60)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = RunStore(store_url)
    assert store.count_evaluations("run0") == 60 and store.count_evaluations("run1") == 60
    store.close()


SEARCH = ('name = "{name}"\nseed = {seed}\ntasks = ["digits"]\ngenerations = 2\npopulation = 6\nsteps = 20\n'
          'chunk_size = 2\ndirect_check = false\nsave_best = 0\nconfirm_top = 0\ntune_top = {tune}\n'
          'tune_trials = 2\nstore = "{url}"\n')


def test_two_searches_writing_one_store_at_once_and_the_optuna_studies_of_a_run(store_url, tmp_path):
    """Two searches (separate processes) on one store; the second also tunes the
    constants of its best candidate, with the Optuna study in the same database."""
    import optuna

    procs = []
    for k in range(2):
        cfg = tmp_path / f"s{k}.toml"
        cfg.write_text(SEARCH.format(name=f"shared{k}", seed=k, tune=k, url=store_url))
        procs.append(subprocess.Popen([sys.executable, "-m", "lossforge.search.cli", "search", str(cfg), "--local",
                                       "--quiet", "--run-dir", str(tmp_path / f"run{k}")], cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    store = RunStore(store_url)
    run_ids = []
    for k, (out, _) in enumerate(outputs):
        run_id, reported = out.split(":")[0].split()[1], int(out.split(":")[1].split()[0])
        run_ids.append(run_id)
        assert run_id.startswith(f"shared{k}-") and store.run_row(run_id)["status"] == "finished"
        assert len(store.evaluations(run_id)) == reported > 0
        assert [g["generation"] for g in store.generations(run_id)][:2] == [0, 1]
        assert json.loads((tmp_path / f"run{k}" / "run.json").read_text())["store"] == store_url
        assert not (tmp_path / f"run{k}" / "runs.db").exists()
    store.close()
    studies = optuna.get_all_study_names(storage=RunStore(store_url).url)
    assert any(s.startswith(f"{run_ids[1]}-tune-") for s in studies), studies
    assert not any(s.startswith(run_ids[0]) for s in studies)
    study = optuna.load_study(study_name=next(s for s in studies if s.startswith(run_ids[1])),
                              storage=RunStore(store_url).url)
    assert len(study.trials) >= 1


def test_an_unknown_database_kind_or_missing_driver_is_one_clear_error(tmp_path):
    with pytest.raises(StorageError, match="not a usable database URL"):
        RunStore("nosuchdb://x/y")
    with pytest.raises(StorageError, match="not a usable database URL"):
        RunStore("not a url at all")


# ----------------------------------------------------------------------------- SQLite files
def test_a_file_that_is_not_a_database_gives_a_clear_error_and_is_left_alone(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(StorageError, match="not an SQLite database"):
        RunStore(sqlite_url(path))
    assert path.read_bytes() == b"garbage" * 100


def test_a_truncated_database_gives_a_clear_error(tmp_path):
    path = tmp_path / "s.db"
    store = RunStore(sqlite_url(path))
    store.open_run("r1", "t", {}, "d1", "0")
    store.record_evaluations([_row(i) for i in range(300)])
    store.close()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StorageError):
        s = RunStore(sqlite_url(path))
        s.evaluations("r1")


def test_a_store_written_before_schema_versions_is_read_as_version_1(tmp_path):
    """Stores from before ``lf_meta`` existed have the same tables: opening one adds the version."""
    path = tmp_path / "old.db"
    store = RunStore(sqlite_url(path))
    store.record_evaluations([_row(0)])
    store.close()
    engine = sa.create_engine(sqlite_url(path))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE lf_meta")
    engine.dispose()
    store = RunStore(sqlite_url(path))
    assert store.schema_version() == 1 and store.count_evaluations("r1") == 1
    store.close()


# ----------------------------------------------------------------------------- checkpoint files
def test_checkpoints_are_atomic_checksummed_and_keep_the_previous_one(tmp_path):
    path = tmp_path / "checkpoint.json"
    write_checkpoint(path, {"next_generation": 1, "x": [1, 2]})
    write_checkpoint(path, {"next_generation": 2, "x": [3]})
    assert read_checkpoint(path)["next_generation"] == 2
    assert (tmp_path / "checkpoint.prev.json").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(StorageError, match="corrupt or truncated.*previous checkpoint"):
        read_checkpoint(path)
    doc = json.loads(text)
    doc["payload"]["next_generation"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(StorageError, match="checksum"):
        read_checkpoint(path)


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
@pytest.mark.parametrize("which", ["previous", "new"])
def test_a_checkpoint_write_that_fails_keeps_the_old_one_and_leaves_no_temporary_file(failing, which, tmp_path,
                                                                                    monkeypatch):
    """The real writer, made to fail where a full disk or a dying process makes it
    fail: while keeping the previous checkpoint, or while writing the new one."""
    from lossforge.primitives import files  # the atomic writer behind write_checkpoint

    path = tmp_path / "checkpoint.json"
    write_checkpoint(path, {"next_generation": 1})
    write_checkpoint(path, {"next_generation": 2})
    target = ".checkpoint.prev.json.tmp" if which == "previous" else ".checkpoint.json.tmp"
    real_open, real_replace, real_fsync = open, os.replace, os.fsync
    opened = {}

    def full_disk():
        raise OSError(28, "No space left on device")

    class HalfWritten:  # the disk fills up half-way through the text
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, text):
            self.fh.write(text[: len(text) // 2])
            full_disk()

    def fake_open(file, *args, **kwargs):
        fh = real_open(file, *args, **kwargs)
        opened[fh.fileno()] = Path(file).name
        return HalfWritten(fh) if failing == "write" and Path(file).name.startswith(target) else fh

    def fake_replace(src, dst):
        if failing == "replace" and Path(src).name.startswith(target):
            full_disk()
        return real_replace(src, dst)

    def fake_fsync(fd):
        if failing == "fsync" and opened.get(fd, "").startswith(target):
            full_disk()
        return real_fsync(fd)

    monkeypatch.setattr(files, "open", fake_open, raising=False)
    monkeypatch.setattr(files.os, "replace", fake_replace)
    monkeypatch.setattr(files.os, "fsync", fake_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_checkpoint(path, {"next_generation": 3})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.prev.json"]  # no .tmp
    assert read_checkpoint(path)["next_generation"] == 2
    # the previous checkpoint is intact: the older one, or (failing on the new one) a copy of the current one
    assert read_checkpoint(tmp_path / "checkpoint.prev.json")["next_generation"] == (1 if which == "previous" else 2)


def test_an_unwritable_directory_fails_the_write_and_leaves_the_file_alone(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories; the monkeypatched failures above cover the write")
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OSError):
            atomic_write_text(path, "new")
        assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    finally:
        tmp_path.chmod(0o700)
