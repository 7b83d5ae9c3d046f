"""The run store on SQLite: URLs, how a store file is opened, what each record keeps, and
the errors (found by mutation testing, ``experiments/mutation.py runstore``)."""
from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from lossforge.search.errors import StorageError
from lossforge.search.runstore import (INFRA, LOCAL_STORE, RunStore, database_url, default_store_url, meta_table,
                                       open_run_store, run_store_url, sqlite_url, store_of_run, store_size_bytes)


def _row(i, **kw):
    r = dict(run_id="r1", generation=0, canonical=f"p*{i}", expr=f"p*{i}", task="digits", seed=1, steps=10,
             split="val", metric=0.5, status="ok", error=None, train_time=0.1, wall_time=0.2, worker="w")
    r.update(kw)
    return r


@pytest.fixture
def store(tmp_path):
    s = RunStore(sqlite_url(tmp_path / "store.db"))
    yield s
    s.close()


# ----------------------------------------------------------------------------- URLs
def test_sqlite_urls_name_the_absolute_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_url("sub/runs.db") == f"sqlite:///{tmp_path.resolve() / 'sub' / 'runs.db'}"
    assert default_store_url(tmp_path / "run") == f"sqlite:///{tmp_path.resolve() / 'run' / LOCAL_STORE}"
    assert LOCAL_STORE == "runs.db"


def test_a_plain_postgresql_url_uses_the_installed_driver(monkeypatch):
    url = "postgresql://me:secret@db.example:5432/runs"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg2" else real(name, *a))
    if real("psycopg") is not None:  # only psycopg 3: its dialect, and the password is kept for connecting
        assert database_url(url) == "postgresql+psycopg://me:secret@db.example:5432/runs"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in ("psycopg2", "psycopg")
                        else None)
    assert database_url(url) == url  # psycopg2 installed (psycopg too): SQLAlchemy's default for postgresql://
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert database_url(url) == url  # no driver at all: RunStore names the missing one
    assert database_url("postgresql+psycopg2://x@h/d") == "postgresql+psycopg2://x@h/d"
    assert database_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert database_url("not a url") == "not a url"  # RunStore gives the error


def test_a_run_local_store_is_the_one_inside_the_run_directory_wherever_it_was_moved(tmp_path):
    run_dir = tmp_path / "moved"
    inside = sqlite_url(run_dir / "runs.db")
    assert run_store_url(run_dir, "runs.db", None) == inside
    assert run_store_url(run_dir, "sub/other.db", None) == sqlite_url(run_dir / "sub" / "other.db")
    assert run_store_url(run_dir, "sqlite:////old/place/runs.db", None) == inside
    assert run_store_url(run_dir, None, None) == inside
    assert run_store_url(run_dir, "runs.db", "sqlite:////shared/s.db") == "sqlite:////shared/s.db"


def test_opening_a_missing_or_empty_run_local_store_names_the_file(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = run_dir / "runs.db"
    with pytest.raises(StorageError, match=f"^run store {path} is missing or empty; restore it from a backup "
                                           r"\(the run's results are in it\)$"):
        open_run_store(run_dir, "runs.db", None)
    path.write_bytes(b"")
    with pytest.raises(StorageError, match="is missing or empty"):
        open_run_store(run_dir, "runs.db", None)
    RunStore(sqlite_url(path)).close()
    s = open_run_store(run_dir, "runs.db", None)
    assert s.url == sqlite_url(path)
    s.close()
    other = run_dir / "sub" / "other.db"  # the store recorded for the run, not the default name
    RunStore(sqlite_url(other)).close()
    s = open_run_store(run_dir, "sub/other.db", None)
    assert s.url == sqlite_url(other)
    s.close()
    configured = tmp_path / "shared" / "new.db"  # a configured store is created when missing
    s = open_run_store(run_dir, None, sqlite_url(configured))
    s.close()
    assert configured.exists()


def test_store_size_counts_the_file_and_its_journal(tmp_path, store):
    url = store.url
    store.record_evaluations([_row(i) for i in range(50)])
    path = Path(sa.engine.make_url(url).database)
    files = [Path(f"{path}{s}") for s in ("", "-wal", "-shm")]
    assert store_size_bytes(url) == sum(f.stat().st_size for f in files if f.exists())
    assert Path(f"{path}-wal").exists() and store_size_bytes(url) > path.stat().st_size
    assert store_size_bytes("postgresql://h/d") == 0


def test_store_of_run_opens_the_runs_own_store(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text('tasks = ["digits"]\n')
    (run_dir / "run.json").write_text(json.dumps({"run_id": "r-7", "store": "sub/mine.db"}))
    s = RunStore(sqlite_url(run_dir / "sub" / "mine.db"))
    s.open_run("r-7", "n", {}, "d", "0")
    s.close()
    s, run_id = store_of_run(run_dir)
    try:
        assert run_id == "r-7" and s.run_row("r-7")["name"] == "n"
    finally:
        s.close()
    shared = tmp_path / "shared.db"  # a store named in the config is the one opened
    s = RunStore(sqlite_url(shared))
    s.open_run("r-7", "in the shared store", {}, "d", "0")
    s.close()
    (run_dir / "config.toml").write_text(f'tasks = ["digits"]\nstore = "{sqlite_url(shared)}"\n')
    s, _ = store_of_run(run_dir)
    try:
        assert s.run_row("r-7")["name"] == "in the shared store"
    finally:
        s.close()


# ----------------------------------------------------------------------------- opening a file
def test_a_new_store_is_made_in_a_new_folder_with_the_wal_journal_and_a_busy_timeout(tmp_path):
    path = tmp_path / "a" / "b" / "runs.db"
    s = RunStore(sqlite_url(path))
    try:
        assert path.exists() and s.is_sqlite and s.url_for_humans == sqlite_url(path)
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        with s.engine.connect() as conn:
            rows = dict(conn.execute(sa.select(meta_table.c.key, meta_table.c.value)).all())
        assert rows["schema_version"] == "1" and rows["created_by"].startswith("lossforge ")
    finally:
        s.close()
    assert not Path(f"{path}-wal").exists()  # closed: SQLite folded the journal back in


def test_an_empty_file_is_a_new_store_and_an_in_memory_store_works(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    s = RunStore(sqlite_url(path))
    s.record_evaluations([_row(0)])
    assert s.count_evaluations() == 1
    s.close()
    for url in ("sqlite://", "sqlite:///:memory:"):
        m = RunStore(url)
        assert m.schema_version() == 1
        m.close()
    assert not (Path.cwd() / ":memory:").exists()


def test_a_file_with_a_damaged_header_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "s.db"
    RunStore(sqlite_url(path)).close()
    data = bytearray(path.read_bytes())
    data[15] = ord("x")  # the last byte of "SQLite format 3\0"
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=f"^run store {path} is not an SQLite database \\(corrupt or overwritten\\); "
                                           "move it away to keep it, or point `store` at another file. lossforge will "
                                           "not overwrite it.$"):
        RunStore(sqlite_url(path))
    assert path.read_bytes() == bytes(data)


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_an_unreadable_schema_version_is_refused(tmp_path, value):
    url = sqlite_url(tmp_path / "s.db")
    s = RunStore(url)
    with s.engine.begin() as conn:
        conn.execute(meta_table.update().where(meta_table.c.key == "schema_version").values(value=value))
    s.close()
    with pytest.raises(StorageError, match=rf"^run store {url} has an unreadable schema version \('{value}'\); it "
                                           r"was edited by hand. Restore it from a backup$"):
        RunStore(url)


def test_a_newer_store_names_both_versions(tmp_path):
    url = sqlite_url(tmp_path / "s.db")
    s = RunStore(url)
    with s.engine.begin() as conn:
        conn.execute(meta_table.update().where(meta_table.c.key == "schema_version").values(value="2"))
    s.close()
    from lossforge.primitives.version import lossforge_version

    with pytest.raises(StorageError, match=rf"^run store {url} has schema version 2, written by a newer lossforge "
                                           rf"\(lossforge .*\); this lossforge {lossforge_version()} reads schema "
                                           r"version 1 at most. Upgrade lossforge \(pip install -U lossforge\) to "
                                           r"read it, or use another store$"):
        RunStore(url)


def test_a_database_that_cannot_be_opened_is_one_error_and_the_password_is_not_shown():
    # nothing listens on port 1: the driver's connection error, not a retry loop
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        RunStore("postgresql+psycopg://me:secret@127.0.0.1:1/runs")
    text = str(info.value)
    assert "secret" not in text and text.startswith("run store postgresql+psycopg://me:***@127.0.0.1:1/runs")
    assert time.monotonic() - started < 20  # a connection refused is not retried as a busy database


# ----------------------------------------------------------------------------- records
def test_a_run_row_keeps_what_it_was_opened_with(store):
    before = time.time()
    store.open_run("r1", "my search", {"b": 2, "a": [1]}, "dig", "1.2.3")
    row = store.run_row("r1")
    assert {k: row[k] for k in ("run_id", "name", "config", "config_digest", "status", "version")} == {
        "run_id": "r1", "name": "my search", "config": '{"a": [1], "b": 2}', "config_digest": "dig",
        "status": "running", "version": "1.2.3"}
    assert before <= row["created"] <= time.time()
    store.set_status("r1", "finished")
    assert store.run_row("r1")["status"] == "finished"
    store.open_run("r2", "other", {}, "x", "0")
    store.set_status("r2", "failed")
    assert store.run_row("r1")["status"] == "finished"


def test_evaluation_rows_keep_every_field_and_their_time(store):
    before = time.time()
    store.record_evaluations([])  # nothing to do
    store.record_evaluations([_row(0), _row(1, created=123.0, run_id="r2")])
    (r0,) = store.evaluations("r1")
    assert {k: r0[k] for k in _row(0)} == _row(0)
    assert before <= r0["created"] <= time.time()
    assert store.evaluations("r2")[0]["created"] == 123.0
    assert (store.count_evaluations(), store.count_evaluations("r1"), store.count_evaluations("nope")) == (2, 1, 0)


def test_a_result_replaces_only_the_infrastructure_fault_of_its_own_evaluation(store):
    faults = [_row(0, status=INFRA, metric=None), _row(0, status=INFRA, metric=None, seed=2),
              _row(0, status=INFRA, metric=None, task="wine"), _row(0, status=INFRA, metric=None, steps=20),
              _row(0, status=INFRA, metric=None, split="test"), _row(0, status=INFRA, metric=None, run_id="r2"),
              _row(1, status=INFRA, metric=None)]
    store.record_evaluations(faults)
    store.record_evaluations([_row(0, metric=0.8)])
    rows = store.evaluations("r1")
    assert sorted((r["canonical"], r["task"], r["seed"], r["steps"], r["split"], r["status"]) for r in rows) == [
        ("p*0", "digits", 1, 10, "test", INFRA), ("p*0", "digits", 1, 10, "val", "ok"),
        ("p*0", "digits", 1, 20, "val", INFRA), ("p*0", "digits", 2, 10, "val", INFRA),
        ("p*0", "wine", 1, 10, "val", INFRA), ("p*1", "digits", 1, 10, "val", INFRA)]
    assert store.evaluations("r2")[0]["status"] == INFRA
    # an infra row mixed with a result in one call: the result replaces its own fault only
    store.record_evaluations([_row(1, metric=0.4), _row(2, status=INFRA, metric=None)])
    assert {r["canonical"]: r["status"] for r in store.evaluations("r1") if r["seed"] == 1 and r["steps"] == 10
            and r["split"] == "val" and r["task"] == "digits"} == {"p*0": "ok", "p*1": "ok", "p*2": INFRA}


def test_cached_results_are_found_by_their_whole_key_and_in_large_numbers(store):
    rows = [_row(i) for i in range(1203)] + [_row(0, task="wine", metric=0.1), _row(0, run_id="r2", metric=0.2)]
    store.record_evaluations(rows)
    keys = [(f"p*{i}", "digits", 1, 10, "val") for i in range(1203)]
    got = store.cached_evaluations("r1", keys + [("p*0", "digits", 1, 10, "test"), ("p*0", "digits", 2, 10, "val")])
    assert sorted(got) == sorted(keys) and got[keys[1202]]["canonical"] == "p*1202"
    assert got[keys[0]]["metric"] == 0.5 and got[keys[0]]["run_id"] == "r1"
    assert store.cached_evaluations("r1", []) == {}
    assert list(store.cached_evaluations("r1", iter([keys[5]]))) == [keys[5]]  # any iterable of keys
    assert [r["canonical"] for r in store.evaluations("r1")][:3] == ["p*0", "p*1", "p*2"]


def test_cached_results_are_read_in_chunks_of_500_expressions(store):
    # one SELECT per 500 distinct expressions (a bounded IN list), not one per expression
    store.record_evaluations([_row(i) for i in range(1203)])
    selects = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        keys = [(f"p*{i}", "digits", 1, 10, s) for i in range(3) for s in ("val", "test")]
        assert sorted(store.cached_evaluations("r1", keys)) == sorted(k for k in keys if k[4] == "val")
        assert len(selects) == 1
        selects.clear()
        assert len(store.cached_evaluations("r1", [(f"p*{i}", "digits", 1, 10, "val") for i in range(1203)])) == 1203
        assert len(selects) == 3
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)


def test_candidates_and_generations_come_back_in_order_with_their_json_fields(store):
    def cand(pos, **kw):
        return dict(dict(position=pos, origin="gp", expr="p", canonical="p", complexity=1, status="ok", fidelity=1,
                         fitness=0.5, scores=json.dumps({"digits": pos})), **kw)

    summary = dict(best=0.1, median=0.2, n_candidates=2, n_evaluations=2, wall_time=1.0)
    store.record_generation("r1", 1, [cand(1), cand(0, scores=None)], dict(summary, filters={"x": 1}))
    store.record_generation("r1", 0, [cand(0)], summary)
    store.record_generation("r1", 2, [], summary)
    store.record_generation("r2", 0, [cand(0)], summary)
    assert [(c["generation"], c["position"]) for c in store.candidates("r1")] == [(0, 0), (1, 0), (1, 1)]
    assert [c["scores"] for c in store.candidates("r1", generation=1)] == [{}, {"digits": 1}]
    assert store.candidates("r1", generation=2) == [] and store.candidates("r1", generation=0)[0]["run_id"] == "r1"
    gens = store.generations("r1")
    assert [(g["generation"], g["filters"]) for g in gens] == [(0, {}), (1, {"x": 1}), (2, {})]
    assert gens[1]["best"] == 0.1 and gens[1]["n_candidates"] == 2 and gens[1]["wall_time"] == 1.0
    # recording a generation again replaces its candidates and its summary
    store.record_generation("r1", 1, [cand(5)], dict(summary, best=0.9))
    assert [c["position"] for c in store.candidates("r1", generation=1)] == [5]
    assert [g["best"] for g in store.generations("r1")] == [0.1, 0.9, 0.1]
    assert len(store.candidates("r2")) == 1


# ----------------------------------------------------------------------------- damaged files and drivers
def test_damaged_pages_fail_the_integrity_check_on_open(tmp_path):
    path = tmp_path / "s.db"
    s = RunStore(sqlite_url(path))
    s.record_evaluations([_row(i, canonical=f"p*{i}" * 20) for i in range(2000)])
    s.close()
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3, len(data) - 4096, 4096 * 5):  # garbage inside data pages, header intact
        data[offset + 100:offset + 400] = b"\xff" * 300
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=f"(?s)^run store {sqlite_url(path)} failed its integrity check \\(.*\\); "
                                           "restore it from a backup or start a new run directory$"):
        RunStore(sqlite_url(path))


def test_a_malformed_database_is_one_error_that_says_the_file_is_left_alone(tmp_path):
    path = tmp_path / "s.db"
    RunStore(sqlite_url(path)).close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\0" * (len(data) - 100))  # header kept, every page zeroed
    with pytest.raises(StorageError, match=f"^run store {sqlite_url(path)} cannot be opened: .*\\. If the file is "
                                           "corrupt, move it away and restore a backup; lossforge will not "
                                           "overwrite it\\.$"):
        RunStore(sqlite_url(path))


def test_a_one_byte_file_is_not_taken_for_a_new_store(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"S")
    with pytest.raises(StorageError, match="is not an SQLite database"):
        RunStore(sqlite_url(path))
    assert path.read_bytes() == b"S"


def test_an_unusable_url_or_a_missing_driver_names_the_fix():
    with pytest.raises(StorageError, match=r"^run store 'nosuchdb://x/y' is not a usable database URL \(.*\); use "
                                           r"e\.g\. sqlite:////path/to/runs\.db or postgresql://user@host/db$"):
        RunStore("nosuchdb://x/y")
    if importlib.util.find_spec("MySQLdb") is None:
        with pytest.raises(StorageError, match=r"^run store mysql://me:\*\*\*@h/db needs a database driver that is "
                                               r"not installed \(No module named 'MySQLdb'\); install that driver "
                                               r"or use an sqlite:/// URL$"):
            RunStore("mysql://me:secret@h/db")


def test_a_duplicate_row_is_ignored_by_the_databases_own_statement():
    from lossforge.search.runstore import evaluations

    store = RunStore.__new__(RunStore)  # the statement only: no server needed
    try:
        store.engine = sa.create_engine("postgresql+psycopg://u@h/db")
        sql = str(store._insert_ignoring_duplicates(evaluations).compile(dialect=store.engine.dialect))
        assert sql.startswith("INSERT INTO lf_evaluations ") and sql.endswith(" ON CONFLICT DO NOTHING")
    finally:
        store.engine.dispose()
    store.engine = sa.create_engine("sqlite://")
    sql = str(store._insert_ignoring_duplicates(evaluations).compile(dialect=store.engine.dialect))
    assert sql.startswith("INSERT OR IGNORE INTO lf_evaluations ")
    store.engine.dispose()
