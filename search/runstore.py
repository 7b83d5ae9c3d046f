"""The run store: every evaluation of every search, in a real database.

SQLite by default (one file, WAL journal, retries on a busy database, so two
searches can write the same store at once); any SQLAlchemy URL (PostgreSQL)
for runs shared by a team.  Optuna's studies live in the same database.
Table names carry an ``lf_`` prefix so they never collide with Optuna's.

The store carries a schema version (``lf_meta``): a store written by a newer
lossforge is refused on open with a clear error instead of being misread.
Evaluations lost to the infrastructure (status ``infra``: a worker or node
died) are kept for the record but are never results: they are not returned as
cached, and the real result of the retried evaluation replaces them.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.schema import CreateIndex, CreateTable

from lossforge.primitives.version import lossforge_version

from .errors import StorageError

metadata = sa.MetaData()

runs = sa.Table(
    "lf_runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200)),
    sa.Column("config", sa.Text),
    sa.Column("config_digest", sa.String(32)),
    sa.Column("created", sa.Float),
    sa.Column("status", sa.String(20)),
    sa.Column("version", sa.String(40)),
)

evaluations = sa.Table(
    "lf_evaluations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), index=True, nullable=False),
    sa.Column("generation", sa.Integer),
    sa.Column("canonical", sa.Text, nullable=False),
    sa.Column("expr", sa.Text, nullable=False),
    sa.Column("task", sa.String(100), nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("steps", sa.Integer, nullable=False),
    sa.Column("split", sa.String(10), nullable=False),
    sa.Column("metric", sa.Float, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("train_time", sa.Float),
    sa.Column("wall_time", sa.Float),
    sa.Column("worker", sa.String(100)),
    sa.Column("created", sa.Float),
    sa.UniqueConstraint("run_id", "canonical", "task", "seed", "steps", "split", name="uq_lf_evaluation"),
)

candidates = sa.Table(
    "lf_candidates", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), index=True, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("origin", sa.String(40)),
    sa.Column("expr", sa.Text),
    sa.Column("canonical", sa.Text),
    sa.Column("complexity", sa.Integer),
    sa.Column("status", sa.String(40)),
    sa.Column("fidelity", sa.Integer),
    sa.Column("fitness", sa.Float),
    sa.Column("scores", sa.Text),
    sa.UniqueConstraint("run_id", "generation", "position", name="uq_lf_candidate"),
)

generations = sa.Table(
    "lf_generations", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("best", sa.Float),
    sa.Column("median", sa.Float),
    sa.Column("n_candidates", sa.Integer),
    sa.Column("n_evaluations", sa.Integer),
    sa.Column("filters", sa.Text),
    sa.Column("wall_time", sa.Float),
    sa.Column("created", sa.Float),
)

meta_table = sa.Table(
    "lf_meta", metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("value", sa.String(200)),
)

SCHEMA_VERSION = 1          # bump when the tables change; older stores are then migrated on open
INFRA = "infra"             # evaluation status of an infrastructure fault (never a result)
LOCAL_STORE = "runs.db"     # a run-local store, recorded in run.json relative to the run directory
_RETRIES = 8
# Errors another process can cause while this one opens or writes the store: SQLite's
# lock, and two processes creating the tables at the same moment (PostgreSQL reports the
# loser of that race as a duplicate key in its catalogue, or a deadlock).
_TRANSIENT = ("locked", "busy", "already exists", "duplicate key", "deadlock", "could not serialize")


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def database_url(url: str) -> str:
    """``url`` with a driver SQLAlchemy can load: a plain ``postgresql://`` URL
    means psycopg2 to SQLAlchemy; when only psycopg 3 (``lossforge[test]``,
    ``pip install 'psycopg[binary]'``) is installed, it is used instead."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return url  # RunStore gives the error
    if parsed.drivername == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def _with_retries(fn):
    """Retry a write when another process holds the SQLite lock."""
    def wrapper(self, *args, **kwargs):
        delay = 0.05
        for attempt in range(_RETRIES):
            try:
                return fn(self, *args, **kwargs)
            except (OperationalError, IntegrityError, ProgrammingError) as exc:
                text = str(exc).lower()
                if not any(t in text for t in _TRANSIENT) or attempt == _RETRIES - 1:
                    raise StorageError(f"run store {self.url_for_humans}: {exc.orig}") from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 2.0)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class RunStore:
    """Records of runs, evaluations, candidates and generations."""

    def __init__(self, url: str):
        url = self.url = database_url(url)
        try:
            parsed = sa.engine.make_url(url)
            parsed.get_dialect()
        except sa.exc.ArgumentError as exc:  # also an unknown database kind (NoSuchModuleError)
            raise StorageError(f"run store {url!r} is not a usable database URL ({exc}); use e.g. "
                               "sqlite:////path/to/runs.db or postgresql://user@host/db") from None
        self.url_for_humans = parsed.render_as_string(hide_password=True)
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = sa.engine.make_url(url).database
            if path and path != ":memory:":
                p = Path(path)
                p.parent.mkdir(parents=True, exist_ok=True)
                if p.exists() and p.stat().st_size > 0:
                    with open(p, "rb") as fh:
                        if fh.read(16) != b"SQLite format 3\x00":
                            raise StorageError(
                                f"run store {p} is not an SQLite database (corrupt or overwritten); move it away "
                                "to keep it, or point `store` at another file. lossforge will not overwrite it.")
            self.engine = sa.create_engine(url, connect_args={"timeout": 30})

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised via SQLite
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()
        else:
            try:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
            except ImportError as exc:
                raise StorageError(f"run store {self.url_for_humans} needs a database driver that is not installed "
                                   f"({exc}); install that driver or use an sqlite:/// URL") from None
        try:
            self._create()
            self.check()
        except (DatabaseError, StorageError) as exc:
            self.engine.dispose()  # closes the connections, so SQLite removes the -wal/-shm files it made
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"run store {self.url_for_humans} cannot be opened: {exc.orig}. If the file is "
                               "corrupt, move it away and restore a backup; lossforge will not overwrite it.") from None

    @_with_retries
    def _create(self) -> None:
        """Create the tables (each ``IF NOT EXISTS``, in one transaction, so two
        processes creating a new store at once both succeed: the loser of a race
        is retried) and check the schema version."""
        writer = lossforge_version()
        with self.engine.begin() as conn:
            for table in metadata.sorted_tables:
                conn.execute(CreateTable(table, if_not_exists=True))
                for index in sorted(table.indexes, key=lambda i: i.name or ""):
                    conn.execute(CreateIndex(index, if_not_exists=True))
            conn.execute(self._insert_ignoring_duplicates(meta_table),
                         [{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                          {"key": "created_by", "value": f"lossforge {writer}"}])
            rows = dict(conn.execute(sa.select(meta_table.c.key, meta_table.c.value)).all())
        try:
            found = int(rows.get("schema_version", "0"))
        except ValueError:
            found = -1
        if found > SCHEMA_VERSION:
            raise StorageError(
                f"run store {self.url_for_humans} has schema version {found}, written by a newer lossforge "
                f"({rows.get('created_by', '?')}); this lossforge {writer} reads schema version {SCHEMA_VERSION} "
                "at most. Upgrade lossforge (pip install -U lossforge) to read it, or use another store")
        if found < 1:
            raise StorageError(f"run store {self.url_for_humans} has an unreadable schema version "
                               f"({rows.get('schema_version')!r}); it was edited by hand. Restore it from a backup")

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar()
        return int(value)

    def check(self) -> None:
        """Fail loudly on a damaged SQLite file instead of silently losing rows."""
        if not self.is_sqlite:
            return
        with self.engine.connect() as conn:
            result = conn.exec_driver_sql("PRAGMA quick_check").scalar()
        if result != "ok":
            raise StorageError(f"run store {self.url_for_humans} failed its integrity check ({result}); "
                               "restore it from a backup or start a new run directory")

    def close(self) -> None:
        self.engine.dispose()

    # -------------------------------------------------------------- runs
    @_with_retries
    def open_run(self, run_id: str, name: str, config: dict, digest: str, version: str) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
            if row is None:
                conn.execute(runs.insert().values(run_id=run_id, name=name, config=json.dumps(config, sort_keys=True),
                                                  config_digest=digest, created=time.time(), status="running",
                                                  version=version))
            elif row["config_digest"] != digest:
                raise StorageError(f"run {run_id} in {self.url_for_humans} was made with a different configuration "
                                   f"(digest {row['config_digest']} vs {digest}); use a new run directory")
            else:
                conn.execute(runs.update().where(runs.c.run_id == run_id).values(status="running"))

    @_with_retries
    def set_status(self, run_id: str, status: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(status=status))

    def run_row(self, run_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    # -------------------------------------------------------------- evaluations
    def _insert_ignoring_duplicates(self, table: sa.Table):
        if self.engine.dialect.name == "sqlite":
            return table.insert().prefix_with("OR IGNORE")
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        return table.insert()

    @_with_retries
    def record_evaluations(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert evaluation rows; a row already recorded (same run, expression,
        task, seed, budget and split) is kept as it is, never duplicated."""
        if not rows:
            return
        now = time.time()
        payload = [{**r, "created": r.get("created", now)} for r in rows]
        results = [r for r in payload if r["status"] != INFRA]
        with self.engine.begin() as conn:
            if results:  # the real result of an evaluation once lost to the infrastructure replaces that record
                e = evaluations.c
                conn.execute(evaluations.delete().where(
                    e.run_id == sa.bindparam("b_run"), e.canonical == sa.bindparam("b_canon"),
                    e.task == sa.bindparam("b_task"), e.seed == sa.bindparam("b_seed"),
                    e.steps == sa.bindparam("b_steps"), e.split == sa.bindparam("b_split"), e.status == INFRA),
                    [{"b_run": r["run_id"], "b_canon": r["canonical"], "b_task": r["task"], "b_seed": r["seed"],
                      "b_steps": r["steps"], "b_split": r["split"]} for r in results])
            conn.execute(self._insert_ignoring_duplicates(evaluations), payload)

    def cached_evaluations(self, run_id: str, keys: Iterable[tuple[str, str, int, int, str]]) -> dict[tuple, dict]:
        """Recorded results for (canonical, task, seed, steps, split) keys (an
        infrastructure fault is not a result: such keys are left out, to be run)."""
        keys = list(keys)
        if not keys:
            return {}
        wanted = set(keys)
        out: dict[tuple, dict] = {}
        canon = sorted({k[0] for k in keys})
        with self.engine.connect() as conn:
            for i in range(0, len(canon), 500):
                q = sa.select(evaluations).where(evaluations.c.run_id == run_id,
                                                 evaluations.c.canonical.in_(canon[i:i + 500]),
                                                 evaluations.c.status != INFRA)
                for row in conn.execute(q).mappings():
                    key = (row["canonical"], row["task"], row["seed"], row["steps"], row["split"])
                    if key in wanted:
                        out[key] = dict(row)
        return out

    def evaluations(self, run_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            q = sa.select(evaluations).where(evaluations.c.run_id == run_id).order_by(evaluations.c.id)
            return [dict(r) for r in conn.execute(q).mappings()]

    def count_evaluations(self, run_id: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(evaluations)
        if run_id is not None:
            q = q.where(evaluations.c.run_id == run_id)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar())

    # -------------------------------------------------------------- candidates / generations
    @_with_retries
    def record_generation(self, run_id: str, generation: int, candidate_rows: Sequence[dict], summary: dict) -> None:
        """One generation's candidates and summary, in one transaction (idempotent)."""
        with self.engine.begin() as conn:
            conn.execute(candidates.delete().where(candidates.c.run_id == run_id,
                                                   candidates.c.generation == generation))
            if candidate_rows:
                conn.execute(candidates.insert(), [{**r, "run_id": run_id, "generation": generation}
                                                   for r in candidate_rows])
            conn.execute(generations.delete().where(generations.c.run_id == run_id,
                                                    generations.c.generation == generation))
            conn.execute(generations.insert().values(run_id=run_id, generation=generation, created=time.time(),
                                                     **{**summary, "filters": json.dumps(summary.get("filters", {}))}))

    def generations(self, run_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            q = sa.select(generations).where(generations.c.run_id == run_id).order_by(generations.c.generation)
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["filters"] = json.loads(r["filters"] or "{}")
        return rows

    def candidates(self, run_id: str, generation: int | None = None) -> list[dict]:
        q = sa.select(candidates).where(candidates.c.run_id == run_id)
        if generation is not None:
            q = q.where(candidates.c.generation == generation)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q.order_by(candidates.c.generation, candidates.c.position)).mappings()]
        for r in rows:
            r["scores"] = json.loads(r["scores"] or "{}")
        return rows


def default_store_url(run_dir: str | Path) -> str:
    return sqlite_url(Path(run_dir) / LOCAL_STORE)


def run_store_url(run_dir: str | Path, recorded: str | None, configured: str | None) -> str:
    """The URL of a run's store.  ``configured`` is the config's ``store`` (None:
    the run's own ``runs.db``), ``recorded`` what ``run.json`` says.  A run-local
    store is always the one inside ``run_dir`` -- wherever the directory was
    copied or moved -- never the path recorded when the run started."""
    if configured is not None:
        return database_url(configured)
    if recorded and "://" not in recorded:  # recorded relative to the run directory
        return sqlite_url(Path(run_dir) / recorded)
    return default_store_url(run_dir)


def open_run_store(run_dir: str | Path, recorded: str | None, configured: str | None) -> RunStore:
    """Open an existing run's store; a missing or empty run-local store is an
    error naming the file (never a silent fallback to another database)."""
    url = run_store_url(run_dir, recorded, configured)
    if configured is None:
        path = Path(sa.engine.make_url(url).database)
        if not path.exists() or path.stat().st_size == 0:
            raise StorageError(f"run store {path} is missing or empty; restore it from a backup "
                               "(the run's results are in it)")
    return RunStore(url)


def store_size_bytes(url: str) -> int:
    if not url.startswith("sqlite"):
        return 0
    path = sa.engine.make_url(url).database
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = f"{path}{suffix}"
        if os.path.exists(p):
            total += os.path.getsize(p)
    return total


def store_of_run(run_dir: str | Path) -> tuple[RunStore, str]:
    """The store of the run in ``run_dir`` and the run's id (for scripts and
    notebooks reading a finished run)."""
    from .config import SearchConfig

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    configured = SearchConfig.from_toml(run_dir / "config.toml").store
    return open_run_store(run_dir, meta.get("store"), configured), meta["run_id"]
