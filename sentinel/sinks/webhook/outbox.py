"""The durable outbox: events a webhook sink still owes its receiver.

One SQLite file per sink under state_dir (`outbox-NAME.sqlite3`), in WAL
mode with `synchronous=FULL`, so a committed enqueue survives a power cut,
not just a crash. A sink counts an event as published only once its row is
committed, and deletes the row only after a 2xx; a crash in between means
the event is sent again with the same id and the same bytes (at least once).

The file is opened in EXCLUSIVE locking mode and written to at once, so a
second process on the same state_dir is refused at start ("locked") instead
of delivering everything twice; `sentinel outbox` then goes through the
running instance's API. Within one process an open outbox is shared (a
reload replaces a sink while the old one still holds the lock) and closed
when its last user closes it. A file that is not a sound SQLite database stops
the start with a StateError naming it, never a crash loop of tracebacks.

Rows are ordered by an autoincrement id (FIFO); each carries its ordering
key (`service/backend`), attempts, next attempt time and last error, and a
`dead` flag for dead letters. Times are Unix seconds: they must survive a
restart. Every method blocks (fsync): async code calls them through
`trio.to_thread.run_sync`; a lock serialises threads.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sentinel.errors import OutboxLocked, StateError
from sentinel.timefmt import rfc3339

log = logging.getLogger(__name__)
LOCK_WAIT = 1.0  # seconds to wait for a lock held by someone else before refusing
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    dead INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
COLUMNS = "id, key, event_id, seq, body, created, attempts, next_attempt, last_error, dead"


@dataclass(frozen=True, slots=True)
class Entry:
    """One event waiting in (or dead-lettered by) the outbox."""

    id: int  # FIFO position
    key: str  # ordering key: events of one key are delivered in id order
    event_id: str
    seq: int
    body: bytes  # the exact JSON sent, so a duplicate is byte-identical
    created: float  # Unix time it was enqueued
    attempts: int = 0
    next_attempt: float = 0.0  # Unix time
    last_error: str = ""
    dead: bool = False

    def to_json(self) -> dict[str, object]:
        """The entry as `sentinel outbox list` and GET /v1/outbox show it."""
        event: Any = json.loads(self.body)
        return {"id": self.event_id, "seq": self.seq, "key": self.key,
                "state": "dead" if self.dead else "pending", "created": rfc3339(self.created),
                "attempts": self.attempts,
                "next_attempt": None if self.dead else rfc3339(self.next_attempt),
                "last_error": self.last_error or None, "event": event}


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What a sink hands the outbox for one event."""

    key: str
    event_id: str
    seq: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Counts:
    """How many entries are pending and dead, and how many were ever dropped."""

    pending: int
    dead: int
    dropped: int


class Outbox:
    """A SQLite-backed FIFO of entries (blocking methods; see the module docstring)."""

    _shared: ClassVar[dict[Path, Outbox]] = {}  # open in this process, by resolved path
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()
        self._users = 1

    @classmethod
    def open(cls, path: Path) -> Outbox:
        """Open (creating) the outbox at `path` and take its lock; StateError if unusable."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path = path.resolve()
        with cls._shared_lock:
            if (shared := cls._shared.get(path)) is not None:
                shared._users += 1
                return shared
            outbox = cls._shared[path] = cls(path, cls._connect(path))
            return outbox

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(path, timeout=LOCK_WAIT, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(f"outbox {path}: cannot open: {exc}") from exc
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")  # takes and keeps the exclusive lock
            conn.executescript(SCHEMA)  # commits
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        except sqlite3.OperationalError as exc:
            conn.close()
            # SQLite's code, not its message: extended codes keep the primary in the low byte
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise OutboxLocked(
                    f"outbox {path} is locked by another process (is another sentinel "
                    f"running with this state_dir?)") from exc
            raise _corrupt(path, exc) from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _corrupt(path, exc) from exc
        if problems != ["ok"]:
            conn.close()
            raise _corrupt(path, "; ".join(problems[:3]))
        return conn

    def close(self) -> None:
        """Release the file and its lock once no user is left."""
        with self._shared_lock, self._lock:
            self._users -= 1
            if self._users == 0:
                self._conn.close()
                self._shared.pop(self.path, None)

    def _write(self, statements: Iterable[tuple[str, Sequence[object]]]) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StateError(f"outbox {self.path}: {exc}") from exc

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"outbox {self.path}: {exc}") from exc

    # -- the sink's side ----------------------------------------------------------

    def enqueue(self, events: Sequence[NewEvent], now: float) -> list[Entry]:
        """Commit `events` (one fsync for all) and return the entries created.

        An event id already in the outbox is skipped, so a retried hand-off
        never queues an event twice.
        """
        known = {row[0] for row in self._read(
            f"SELECT event_id FROM entries WHERE event_id IN ({_marks(events)})",
            [e.event_id for e in events])}
        fresh = [e for e in events if e.event_id not in known]
        self._write(("INSERT OR IGNORE INTO entries (key, event_id, seq, body, created, "
                     "next_attempt) VALUES (?, ?, ?, ?, ?, ?)",
                     (e.key, e.event_id, e.seq, e.body, now, now)) for e in fresh)
        return self.entries(event_ids=[e.event_id for e in fresh]) if fresh else []

    def settle(self, updated: Iterable[Entry], deleted: Iterable[int]) -> None:
        """Record attempt outcomes in one transaction: updates first, then deletions."""
        self._write([*(("UPDATE entries SET attempts = ?, next_attempt = ?, last_error = ?, "
                        "dead = ? WHERE id = ?",
                        (e.attempts, e.next_attempt, e.last_error, int(e.dead), e.id))
                       for e in updated),
                     *(("DELETE FROM entries WHERE id = ?", (i,)) for i in deleted)])

    def enforce(self, max_pending: int, max_age: float, now: float) -> list[Entry]:
        """Drop what is older than `max_age` and the oldest beyond `max_pending`
        entries (dead letters before pending ones); count the drops; return them."""
        doomed = self.entries(older_than=now - max_age)
        counts = self.counts()
        excess = counts.pending + counts.dead - len(doomed) - max_pending
        if excess > 0:
            gone = {e.id for e in doomed}
            rest = [e for e in self.entries() if e.id not in gone]
            rest.sort(key=lambda e: (not e.dead, e.id))
            doomed += rest[:excess]
        if doomed:
            self._write([*(("DELETE FROM entries WHERE id = ?", (e.id,)) for e in doomed),
                         ("INSERT INTO counters VALUES ('dropped', ?) ON CONFLICT(name) "
                          "DO UPDATE SET value = value + excluded.value", (len(doomed),))])
        return doomed

    # -- the operator's side --------------------------------------------------------

    def entries(self, *, dead: bool | None = None, event_ids: Sequence[str] | None = None,
                older_than: float | None = None, limit: int = -1) -> list[Entry]:
        """Entries in FIFO order, optionally only dead or pending ones, given ids, or
        those created before `older_than`."""
        where, params = _filter(dead, event_ids)
        if older_than is not None:
            where.append("created < ?")
            params.append(older_than)
        sql = f"SELECT {COLUMNS} FROM entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._read(sql + " ORDER BY id LIMIT ?", [*params, limit])
        return [Entry(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7], r[8], bool(r[9]))
                for r in rows]

    def dead_ids(self) -> list[int]:
        """The ids of the dead letters (a sink keeps them to count them in memory)."""
        return [row[0] for row in self._read("SELECT id FROM entries WHERE dead = 1")]

    def counts(self) -> Counts:
        """Pending and dead entries now, drops ever."""
        pending, dead = self._read(
            "SELECT COALESCE(SUM(dead = 0), 0), COALESCE(SUM(dead), 0) FROM entries")[0]
        dropped = self._read("SELECT value FROM counters WHERE name = 'dropped'")
        return Counts(int(pending), int(dead), int(dropped[0][0]) if dropped else 0)

    def retry(self, event_ids: Sequence[str] | None, now: float) -> list[Entry]:
        """Make the given entries (default: all) due now, dead letters included, with
        their attempt count reset; returns them as they are now."""
        where, params = _filter(None, event_ids)
        sql = "UPDATE entries SET attempts = 0, dead = 0, next_attempt = ?"
        if where:
            sql += " WHERE " + " AND ".join(where)
        self._write([(sql, [now, *params])])
        return self.entries(dead=False, event_ids=event_ids)

    def purge(self, event_ids: Sequence[str] | None, *, pending_too: bool) -> list[Entry]:
        """Delete the given entries (default: every dead letter, and every pending
        entry too when `pending_too`); returns what was deleted."""
        doomed = self.entries(dead=None if pending_too else True, event_ids=event_ids)
        self._write(("DELETE FROM entries WHERE id = ?", (e.id,)) for e in doomed)
        return doomed


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


def _filter(dead: bool | None, event_ids: Sequence[str] | None) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    if dead is not None:
        where.append("dead = ?")
        params.append(int(dead))
    if event_ids is not None:
        where.append(f"event_id IN ({_marks(event_ids)})")
        params.extend(event_ids)
    return where, params


def _corrupt(path: Path, detail: object) -> StateError:
    return StateError(
        f"outbox {path} is not a sound SQLite database ({detail}); move it aside to start "
        f"with an empty outbox (its undelivered events would not be sent) or restore it")
