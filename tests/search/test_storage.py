import json
import multiprocessing as mp
import os

import pytest

from lossforge.search.checkpoint import read_checkpoint, write_checkpoint
from lossforge.search.errors import StorageError
from lossforge.search.runstore import RunStore, sqlite_url


def _row(i, **kw):
    r = dict(run_id="r1", generation=0, canonical=f"p*{i}", expr=f"p*{i}", task="digits", seed=1, steps=10,
             split="val", metric=0.5, status="ok", error=None, train_time=0.1, wall_time=0.2, worker="w")
    r.update(kw)
    return r


def test_evaluations_round_trip_and_are_never_duplicated(tmp_path):
    store = RunStore(sqlite_url(tmp_path / "s.db"))
    store.open_run("r1", "t", {"a": 1}, "d1", "0")
    store.record_evaluations([_row(i) for i in range(5)])
    store.record_evaluations([_row(0, metric=0.9)])  # same key: kept as first recorded
    assert store.count_evaluations("r1") == 5
    got = store.cached_evaluations("r1", [("p*0", "digits", 1, 10, "val"), ("p*9", "digits", 1, 10, "val")])
    assert list(got) == [("p*0", "digits", 1, 10, "val")] and got[("p*0", "digits", 1, 10, "val")]["metric"] == 0.5


def test_a_run_reopened_with_another_config_is_refused(tmp_path):
    store = RunStore(sqlite_url(tmp_path / "s.db"))
    store.open_run("r1", "t", {}, "d1", "0")
    with pytest.raises(StorageError, match="different configuration"):
        store.open_run("r1", "t", {}, "d2", "0")


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


def _writer(url, run_id, n):
    store = RunStore(url)
    store.open_run(run_id, run_id, {}, "d", "0")
    for i in range(n):
        store.record_evaluations([_row(i, run_id=run_id)])
    store.close()


def test_two_processes_writing_one_store_lose_nothing(tmp_path):
    url = sqlite_url(tmp_path / "shared.db")
    RunStore(url).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, f"run{k}", 60)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = RunStore(url)
    assert store.count_evaluations("run0") == 60 and store.count_evaluations("run1") == 60


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
