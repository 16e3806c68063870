"""The durable outbox file: FIFO, idempotent enqueue, bounds with counted drops, retry and
purge, and a clear StateError for a corrupt or locked file."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sentinel.errors import OutboxLocked, StateError
from sentinel.sinks.webhook.outbox import NewEvent, Outbox
from tests.config import run_sentinel, write_config
from tests.e2e.helpers import wait_until
from tests.sinks.webhook.conftest import SECRET

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA locking_mode=EXCLUSIVE")
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(60)
"""


def new(i: int, key: str = "web/web1") -> NewEvent:
    """An event for the outbox, numbered `i`."""
    return NewEvent(key, f"ev-{i}", i, b'{"seq":%d}' % i)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    """A fresh outbox file, closed at the end."""
    box = Outbox.open(tmp_path / "outbox.sqlite3")
    yield box
    box.close()


def test_entries_come_back_in_fifo_order_after_reopen(tmp_path: Path) -> None:
    """What was enqueued is there, in order, after the file is closed and opened again."""
    box = Outbox.open(tmp_path / "o.sqlite3")
    box.enqueue([new(i) for i in range(5)], 100.0)
    box.close()
    box = Outbox.open(tmp_path / "o.sqlite3")
    try:
        assert [e.event_id for e in box.entries()] == [f"ev-{i}" for i in range(5)]
        assert box.entries()[0].next_attempt == 100.0
    finally:
        box.close()


def test_enqueue_is_idempotent_by_event_id(outbox: Outbox) -> None:
    """Handing over the same event twice (a retried apply) keeps one entry."""
    assert len(outbox.enqueue([new(1), new(2)], 1.0)) == 2
    assert [e.event_id for e in outbox.enqueue([new(2), new(3)], 2.0)] == ["ev-3"]
    assert outbox.counts().pending == 3


def test_wal_mode_and_full_sync(tmp_path: Path) -> None:
    """The file is in WAL mode (a -wal file appears on write) and survives a reader."""
    box = Outbox.open(tmp_path / "o.sqlite3")
    try:
        box.enqueue([new(1)], 1.0)
        assert (tmp_path / "o.sqlite3-wal").exists()
    finally:
        box.close()


def test_max_pending_drops_dead_letters_first_and_counts(outbox: Outbox) -> None:
    """Over max_pending, the oldest dead letters go first, then the oldest pending; the
    drops are counted."""
    entries = outbox.enqueue([new(i) for i in range(6)], 1.0)
    outbox.settle([replace(e, dead=True) for e in entries[3:5]], [])
    dropped = outbox.enforce(max_pending=3, max_age=1e9, now=2.0)
    assert [e.event_id for e in dropped] == ["ev-3", "ev-4", "ev-0"]
    assert [e.event_id for e in outbox.entries()] == ["ev-1", "ev-2", "ev-5"]
    assert outbox.counts().dropped == 3


def test_max_age_drops_old_entries_and_counts(outbox: Outbox) -> None:
    """Entries older than max_age are dropped and counted; younger ones stay."""
    outbox.enqueue([new(1)], 100.0)
    outbox.enqueue([new(2)], 200.0)
    assert [e.event_id for e in outbox.enforce(1000, 50.0, now=240.0)] == ["ev-1"]
    assert outbox.counts().dropped == 1
    assert outbox.counts().pending == 1


def test_retry_revives_dead_letters_and_purge_removes(outbox: Outbox) -> None:
    """retry makes dead letters pending and due now; purge drops dead letters only unless
    told to take pending ones too."""
    e1, e2, _ = outbox.enqueue([new(1), new(2), new(3)], 1.0)
    outbox.settle([replace(e1, dead=True, attempts=4,
                           last_error="HTTP 410")], [])
    assert outbox.counts().dead == 1
    assert [e.event_id for e in outbox.purge(None, pending_too=False)] == ["ev-1"]
    outbox.settle([replace(e2, dead=True)], [])
    revived = outbox.retry(["ev-2"], 50.0)
    assert [(e.event_id, e.dead, e.attempts, e.next_attempt) for e in revived] == [
        ("ev-2", False, 0, 50.0)]
    assert [e.event_id for e in outbox.purge(["ev-3"], pending_too=True)] == ["ev-3"]
    assert outbox.counts().pending == 1


def test_corrupt_file_is_a_state_error_naming_it(tmp_path: Path) -> None:
    """A file that is not SQLite gives a StateError with its path and what to do."""
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database, just garbage " * 200)
    with pytest.raises(StateError, match=r"outbox .*outbox\.sqlite3 is not a sound SQLite"):
        Outbox.open(path)


def test_locked_file_is_refused_quickly(tmp_path: Path) -> None:
    """A file another process holds locked gives OutboxLocked (a StateError) within
    about a second, not a hang."""
    path = tmp_path / "outbox.sqlite3"
    Outbox.open(path).close()
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        stdout = proc.stdout
        assert stdout is not None
        wait_until(lambda: stdout.readline().strip() == "locked", what="lock holder")
        started = time.monotonic()
        with pytest.raises(OutboxLocked, match="locked by another process"):
            Outbox.open(path)
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
        proc.wait()


def test_same_process_shares_one_open_outbox(tmp_path: Path) -> None:
    """Opening the same file twice in one process (a reload) shares it; the lock is let go
    only when the last user closes it."""
    first = Outbox.open(tmp_path / "o.sqlite3")
    second = Outbox.open(tmp_path / "o.sqlite3")
    assert first is second
    first.close()
    second.enqueue([new(1)], 1.0)
    second.close()
    third = Outbox.open(tmp_path / "o.sqlite3")
    assert third is not first
    third.close()


@pytest.mark.parametrize(("sink", "message"), [
    ("nosuch", "sentinel outbox: --sink nosuch: sentinel.yaml has no webhook sink of that "
               "name (webhook sinks: ops, audit)"),
    ("doc", "sentinel outbox: --sink doc: sentinel.yaml has no webhook sink of that name "
            "(webhook sinks: ops, audit)"),
])
def test_outbox_names_an_unknown_sink_and_exits_2(tmp_path: Path, sink: str,
                                                  message: str) -> None:
    """`sentinel outbox list --sink NAME` for a name that is no webhook sink is a bad
    argument: one line naming the webhook sinks there are, exit 2, no outbox opened."""
    write_config(tmp_path, f"""\
state_dir: ./state
sinks:
  doc: {{type: file, path: ./doc.json}}
  ops: {{type: webhook, url: http://127.0.0.1:1/, secret: {SECRET}}}
  audit: {{type: webhook, url: http://127.0.0.1:1/, secret: {SECRET}}}
services:
  web: {{backends: [127.0.0.1:1], sinks: [doc, ops, audit]}}
""")
    done = run_sentinel("outbox", "list", "--sink", sink, "-c", "sentinel.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")
    assert not (tmp_path / "state").exists()
