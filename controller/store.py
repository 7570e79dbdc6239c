"""StatusStore: what envctl knows about each environment, and its run history, in SQLite.

One file under the workdir. A run writes twice: its row when it starts (so a
crash leaves it unfinished, and status shows it as Applying or Destroying),
and, when it ends, the record patch and the run's outcome in one transaction
(`commit`). Records are read with the runs under way laid over them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from controller.rows import detail, iso, row
from controller.types import OutboxItem, Phase, Record, Run

__all__ = ["OutboxItem", "Run", "StatusStore", "iso", "row"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS environments (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    revision TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    message TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runs_by_name ON runs (name, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_by_target ON outbox (target, id);
CREATE TABLE IF NOT EXISTS phases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    phase TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS phases_by_name ON phases (name, id);
"""


_FIELDS = frozenset(f.name for f in fields(Record)) - {"name"}
RUNNING_PHASES = {"apply": Phase.APPLYING, "destroy": Phase.DESTROYING}
"""The phase a record shows while a run of that action is under way."""


def _write(db: sqlite3.Connection, record: Record) -> None:
    record.updated_at = time.time()
    db.execute(
        "INSERT INTO environments (name, data, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        (record.name, json.dumps(asdict(record), sort_keys=True), record.updated_at),
    )


class StatusStore:
    """Records keyed by environment name, a run history, and a few meta values."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        # A database from before runs carried their digest and kind.
        for column in ("digest", "kind", "spec"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def load(self, name: str) -> Record | None:
        """The record of one environment, if any, as a run under way shows it."""
        with self._lock:
            row = self._db.execute("SELECT data FROM environments WHERE name = ?", (name,)).fetchone()
        running = [run for run in self.unfinished_runs() if run.name == name]
        return _overlaid(_record(row[0]) if row else None, running[-1] if running else None)

    def load_all(self) -> dict[str, Record]:
        """Every record, keyed by name, as the runs under way show them."""
        with self._lock:
            rows = self._db.execute("SELECT data FROM environments ORDER BY name").fetchall()
        records = {r.name: r for r in (_record(row[0]) for row in rows)}
        running = {run.name: run for run in self.unfinished_runs()}
        for name in sorted(set(records) | set(running)):
            overlaid = _overlaid(records.get(name), running.get(name))
            if overlaid is not None:
                records[name] = overlaid
        return dict(sorted(records.items()))

    def stored(self, name: str) -> Record | None:
        """The record as last written, without a run under way laid over it."""
        with self._lock:
            row = self._db.execute("SELECT data FROM environments WHERE name = ?", (name,)).fetchone()
        return _record(row[0]) if row else None

    def save(self, record: Record) -> None:
        """Write one record whole."""
        with self._tx() as db:
            row = db.execute("SELECT data FROM environments WHERE name = ?", (record.name,)).fetchone()
            before = _record(row[0]) if row else None
            _write(db, record)
            _remember_phase(db, before, record)

    def update(self, name: str, **changes: Any) -> Record:
        """Read, change and write one record in one transaction (or start it); return it.

        Concurrent updates of one record, from threads or from another process on the same
        database, never lose each other's fields. A field Record does not have is an error.
        """
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise TypeError(f"Record has no field {unknown[0]!r}; fields are {', '.join(sorted(_FIELDS))}")
        with self._tx() as db:
            row = db.execute("SELECT data FROM environments WHERE name = ?", (name,)).fetchone()
            record = _record(row[0]) if row else Record(name=name)
            before = _record(row[0]) if row else None
            for key, value in changes.items():
                setattr(record, key, value)
            _write(db, record)
            _remember_phase(db, before, record)
        return record

    def history(self, name: str, limit: int = 30) -> list[dict[str, Any]]:
        """The phases `name` went through, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT phase, reason, at FROM phases WHERE name = ? ORDER BY id DESC LIMIT ?", (name, limit)
            ).fetchall()
        return [{"phase": phase, "reason": reason, "at": iso(at)} for phase, reason, at in rows]

    def start_run(
        self,
        name: str,
        action: str,
        revision: str,
        *,
        digest: str = "",
        kind: str = "",
        spec: dict[str, Any] | None = None,
    ) -> int:
        """The run's row, unfinished until `commit` (or `finish_run`); its phase joins the history."""
        now = time.time()
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO runs (name, action, revision, started_at, digest, kind, spec) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, action, revision, now, digest, kind, json.dumps(spec) if spec else ""),
            )
            if action in RUNNING_PHASES:
                db.execute(
                    "INSERT INTO phases (name, phase, reason, at) VALUES (?, ?, ?, ?)",
                    (name, str(RUNNING_PHASES[action]), "", now),
                )
            return int(cursor.lastrowid or 0)

    def commit(
        self,
        name: str,
        changes: dict[str, Any],
        *,
        run_id: int | None = None,
        outcome: str = "",
        message: str = "",
    ) -> tuple[Record | None, Record]:
        """One run's end in one transaction: the record patch and the run's outcome.

        Returns the record before (as last written) and after: what `status.transitions` reads.
        """
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise TypeError(f"Record has no field {unknown[0]!r}; fields are {', '.join(sorted(_FIELDS))}")
        with self._tx() as db:
            row = db.execute("SELECT data FROM environments WHERE name = ?", (name,)).fetchone()
            before = _record(row[0]) if row else None
            record = _record(row[0]) if row else Record(name=name)
            for key, value in changes.items():
                setattr(record, key, value)
            _write(db, record)
            _remember_phase(db, before, record)
            if run_id is not None:
                db.execute(
                    "UPDATE runs SET finished_at = ?, outcome = ?, message = ? WHERE id = ?",
                    (time.time(), outcome, message, run_id),
                )
        return before, record

    def finish_run(self, run_id: int, outcome: str, message: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, message = ? WHERE id = ?",
                (time.time(), outcome, message, run_id),
            )

    def runs(self, name: str | None = None, limit: int = 20) -> list[Run]:
        """The most recent runs, newest first."""
        query = (
            "SELECT id, name, action, revision, started_at, finished_at, outcome, message, digest, kind, "
            "spec "
            "FROM runs"
        )
        params: tuple[Any, ...] = ()
        if name is not None:
            query += " WHERE name = ?"
            params = (name,)
        query += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, limit)).fetchall()
        return [Run(*row) for row in rows]

    def runs_started_since(self, action: str, since: float) -> int:
        """How many runs of `action` started at or after `since` (epoch seconds)."""
        with self._lock:
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM runs WHERE action = ? AND started_at >= ?", (action, since)
            ).fetchone()
        return int(count)

    def unfinished_runs(self) -> list[Run]:
        """Runs a crash or kill left without an outcome."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, action, revision, started_at, finished_at, outcome, message, digest, kind, "
                "spec "
                "FROM runs WHERE finished_at IS NULL ORDER BY id"
            ).fetchall()
        return [Run(*row) for row in rows]

    def rows(self) -> list[dict[str, Any]]:
        """The status records as plain dicts (the `status --json` and API format); times in ISO 8601."""
        return [row(record) for record in self.load_all().values()]

    def detail(self, name: str, runs: int = 20) -> dict[str, Any] | None:
        """One environment's row with its recent runs (durations in seconds), or None."""
        record = self.load(name)
        if record is None:
            return None
        return detail(record, self.history(name), self.runs(name, limit=runs))

    # --- the feedback outbox ------------------------------------------------------------------

    def outbox_add(self, target: str, name: str, payload: str) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO outbox (target, name, payload, created_at) VALUES (?, ?, ?, ?)",
                (target, name, payload, time.time()),
            )
            return int(cursor.lastrowid or 0)

    def outbox_pending(self, target: str) -> list[OutboxItem]:
        """What waits for `target`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, target, name, payload, attempts, next_at FROM outbox "
                "WHERE target = ? ORDER BY id",
                (target,),
            ).fetchall()
        return [OutboxItem(*r) for r in rows]

    def outbox_done(self, item_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))

    def outbox_later(self, item_id: int, attempts: int, next_at: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts = ?, next_at = ? WHERE id = ?", (attempts, next_at, item_id)
            )

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _remember_phase(db: sqlite3.Connection, before: Record | None, after: Record) -> None:
    """Append to the phase history when the phase or its reason changed."""
    if before is not None and (before.phase, before.reason) == (after.phase, after.reason):
        return
    db.execute(
        "INSERT INTO phases (name, phase, reason, at) VALUES (?, ?, ?, ?)",
        (after.name, str(after.phase), after.reason, after.updated_at),
    )


def _overlaid(record: Record | None, run: Run | None) -> Record | None:
    """`record` as an apply or destroy under way shows it: Applying (what) or Destroying."""
    phase = RUNNING_PHASES.get(run.action) if run is not None else None
    if run is None or phase is None:
        return record
    shown = replace(record) if record is not None else Record(name=run.name, kind=run.kind)
    shown.phase = phase
    shown.reason = ""
    shown.message = "applying" if phase is Phase.APPLYING else "destroying"
    shown.revision = run.revision or shown.revision
    if run.digest:
        shown.attempted_digest = run.digest
    if run.spec:
        shown.spec = json.loads(run.spec)
    return shown


def _record(data: str) -> Record:
    raw = json.loads(data)
    raw["phase"] = Phase(raw["phase"])
    if raw.keys() <= _KNOWN:
        return Record(**raw)
    # Written by an envctl that knew fields this one does not (a rollback): those are dropped.
    return Record(**{k: v for k, v in raw.items() if k in _KNOWN})


_KNOWN = frozenset(Record.__dataclass_fields__)
