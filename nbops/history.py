"""The history store: one SQLite file (WAL mode) where every build, push, deploy and run is recorded.

One schema for all modules. Migrations are named and applied once, in order; a module that needs a
new table appends a migration to :data:`MIGRATIONS` (never edits an applied one).

Every write goes through :meth:`History.record` (one transaction: the parent row and its children
land together or not at all), so a killed writer never leaves half a build behind.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_core",
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY, notebook TEXT, params TEXT, started REAL, finished REAL,
            status TEXT, error TEXT, output TEXT, user TEXT, host TEXT
        );
        CREATE TABLE builds (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT, name TEXT,
            tags TEXT, image_id TEXT, dockerfile_sha TEXT, builder TEXT, engine TEXT,
            duration_s REAL, size INTEGER, n_layers INTEGER, ok INTEGER NOT NULL, error TEXT,
            meta TEXT
        );
        CREATE TABLE build_steps (
            build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
            step INTEGER NOT NULL, stage TEXT, instruction TEXT, duration_s REAL, cached INTEGER,
            layer_id TEXT, layer_size INTEGER, cumulative_size INTEGER,
            PRIMARY KEY (build_id, step)
        );
        CREATE TABLE pushes (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT, image TEXT,
            ref TEXT, digest TEXT, verified INTEGER, duration_s REAL, bytes_sent INTEGER,
            bytes_skipped INTEGER, ok INTEGER NOT NULL, error TEXT
        );
        CREATE TABLE push_layers (
            push_id INTEGER NOT NULL REFERENCES pushes(id) ON DELETE CASCADE,
            layer TEXT NOT NULL, status TEXT, bytes INTEGER, duration_s REAL,
            PRIMARY KEY (push_id, layer)
        );
        CREATE TABLE deploys (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT, service TEXT,
            image TEXT, orchestrator TEXT, outcome TEXT, duration_s REAL, replicas INTEGER,
            error TEXT, meta TEXT
        );
        CREATE TABLE rollout_events (
            deploy_id INTEGER NOT NULL REFERENCES deploys(id) ON DELETE CASCADE,
            ts REAL NOT NULL, service TEXT, task TEXT, slot INTEGER, node TEXT, image TEXT,
            state TEXT, health TEXT, message TEXT
        );
        CREATE INDEX builds_name_ts ON builds(name, ts);
        CREATE INDEX builds_run ON builds(run_id);
        CREATE INDEX pushes_run ON pushes(run_id);
        CREATE INDEX deploys_run ON deploys(run_id);
        """,
    ),
    (
        "0003_layers",
        """
        CREATE TABLE layer_cache (
            diff_id TEXT PRIMARY KEY, size INTEGER NOT NULL, files INTEGER NOT NULL,
            entries INTEGER NOT NULL, listing BLOB NOT NULL, source TEXT, scan_s REAL, ts REAL NOT NULL
        );
        CREATE TABLE layer_analyses (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT, image TEXT,
            image_id TEXT NOT NULL, source TEXT, size INTEGER, n_layers INTEGER, efficiency REAL,
            wasted_bytes INTEGER, wasted_percent REAL, hidden_bytes INTEGER, cache_hits INTEGER,
            cache_misses INTEGER, duration_s REAL
        );
        CREATE TABLE analysis_layers (
            analysis_id INTEGER NOT NULL REFERENCES layer_analyses(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL, diff_id TEXT NOT NULL, instruction TEXT, created_by TEXT,
            size INTEGER, files INTEGER,
            bytes_added INTEGER, bytes_hidden_later INTEGER, bytes_removed INTEGER,
            PRIMARY KEY (analysis_id, idx)
        );
        CREATE TABLE layer_states (
            chain_id TEXT PRIMARY KEY, n_layers INTEGER NOT NULL, state BLOB NOT NULL, ts REAL NOT NULL
        );
        CREATE INDEX layer_analyses_image ON layer_analyses(image_id, ts);
        """,
    ),
    (
        "0004_distribute_pulls",
        """
        CREATE TABLE pulls (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT, kind TEXT,
            source TEXT, image TEXT, digest TEXT, image_id TEXT, duration_s REAL, bytes INTEGER,
            layers_new INTEGER, layers_total INTEGER, ok INTEGER NOT NULL, error TEXT
        );
        CREATE INDEX pulls_run ON pulls(run_id);
        """,
    ),
    (
        "0008_runbook",  # nbops run: options (tags, resume chain), the failed cell, the skipped cells
        """
        ALTER TABLE runs ADD COLUMN options TEXT;
        ALTER TABLE runs ADD COLUMN resumed_from TEXT;
        ALTER TABLE runs ADD COLUMN failed_cell TEXT;
        ALTER TABLE runs ADD COLUMN skipped TEXT;
        CREATE INDEX runs_started ON runs(started);
        """,
    ),
    (
        "0009_trend_indexes",
        """
        CREATE INDEX IF NOT EXISTS layer_analyses_latest ON layer_analyses(image_id, id);
        """,
    ),
]

_TABLE_COLUMNS_CACHE: dict[tuple[str, str], list[str]] = {}


def current_run_id() -> str | None:
    """The id of the runbook run this process belongs to (set by ``nbops run``), if any."""
    return os.environ.get("NBOPS_RUN_ID") or None


class History:
    """A handle on the SQLite history store. Cheap to create; connections are per thread."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 30.0) -> None:
        self.path = Path(path) if path is not None else paths.history_path()
        self.timeout = timeout
        self._local = threading.local()
        self._migrated = False

    def __repr__(self) -> str:
        return f"History({str(self.path)!r})"

    # -- connection -------------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            self._local.conn = conn
        if not self._migrated:
            self._migrate(conn)
            self._migrated = True
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied REAL)")
        done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # another process may have applied it while we waited for the lock
                if conn.execute("SELECT 1 FROM migrations WHERE name=?", (name,)).fetchone():
                    conn.execute("COMMIT")
                    continue
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @contextmanager
    def transaction(self):
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    # -- writing ----------------------------------------------------------------------------
    def record(
        self,
        table: str,
        row: Mapping[str, Any],
        children: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
        *,
        parent_key: str | None = None,
    ) -> int:
        """Insert ``row`` into ``table`` and its ``children`` (table -> rows) in one transaction.

        Each child row gets the new parent id under ``parent_key`` (default ``<table minus s>_id``).
        Returns the parent's rowid.
        """
        key = parent_key or f"{_singular(table)}_id"
        with self.transaction() as conn:
            rowid = self._insert(conn, table, row)
            for child_table, rows in (children or {}).items():
                for child in rows:
                    self._insert(conn, child_table, {**child, key: rowid})
        return rowid

    def _insert(self, conn: sqlite3.Connection, table: str, row: Mapping[str, Any]) -> int:
        cols = self._columns(conn, table)
        data = {k: _to_sql(v) for k, v in row.items() if k in cols}
        names = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        cur = conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(data.values()))
        return int(cur.lastrowid or 0)

    def _columns(self, conn: sqlite3.Connection, table: str) -> list[str]:
        key = (str(self.path), table)
        if key not in _TABLE_COLUMNS_CACHE:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            if not cols:
                raise KeyError(f"no table {table!r} in the history store")
            _TABLE_COLUMNS_CACHE[key] = cols
        return _TABLE_COLUMNS_CACHE[key]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.connect().execute(sql, tuple(params)).fetchall()

    # -- reading ----------------------------------------------------------------------------
    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Run a query and return a DataFrame (columns named as in the query)."""
        import pandas as pd

        cur = self.connect().execute(sql, tuple(params))
        cols = [d[0] for d in cur.description or ()]
        return pd.DataFrame(cur.fetchall(), columns=cols)

    def builds(self, name: str | None = None) -> pd.DataFrame:
        sql = "SELECT * FROM builds" + (" WHERE name=?" if name else "") + " ORDER BY ts"
        df = self.frame(sql, (name,) if name else ())
        return _with_time(df)

    def pushes(self) -> pd.DataFrame:
        return _with_time(self.frame("SELECT * FROM pushes ORDER BY ts"))

    def deploys(self) -> pd.DataFrame:
        return _with_time(self.frame("SELECT * FROM deploys ORDER BY ts"))

    def pulls(self) -> pd.DataFrame:
        return _with_time(self.frame("SELECT * FROM pulls ORDER BY ts"))


def _with_time(df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    if "ts" in df.columns:
        df.insert(1, "time", pd.to_datetime(df["ts"], unit="s", utc=True))
    return df


def _to_sql(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    if isinstance(value, Path):
        return str(value)
    return value


def _singular(table: str) -> str:
    if table.endswith(("shes", "ches", "sses", "xes")):
        return table[:-2]
    return table[:-1] if table.endswith("s") else table


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


_default: History | None = None


def default() -> History:
    """The process-wide store at :func:`nbops.paths.history_path` (re-created if the path changes)."""
    global _default
    path = paths.history_path()
    if _default is None or _default.path != path:
        _default = History(path)
    return _default
