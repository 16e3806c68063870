"""What survives a restart: the event sequence and each backend's last verdict.

One JSON document in `state_dir/state.json`, replaced atomically (temp file,
fsync, rename) whenever an event is emitted. A file that cannot be read or
parsed is renamed aside (`state.json.corrupt-TIMESTAMP`) and logged; sentinel
then starts fresh instead of crash-looping.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel.errors import StartupError
from sentinel.files import write_atomic
from sentinel.model import Event

log = logging.getLogger(__name__)
FILENAME = "state.json"


@dataclass(frozen=True, slots=True)
class SavedBackend:
    """A backend's persisted verdict."""

    state: str
    since: str
    last_ok: float | None = None  # Unix time of the last passing probe
    override: str | None = None  # admin override: drain or maint


Verdicts = dict[str, dict[str, SavedBackend]]  # service -> backend -> its saved verdict


@dataclass(frozen=True, slots=True)
class SavedState:
    """The whole persisted document."""

    seq: int = 0
    backends: Verdicts = field(default_factory=dict)
    unacked: tuple[Event, ...] = ()  # events durable sinks have not taken yet

    def to_json(self) -> dict[str, Any]:
        """The document as written."""
        return {"version": 1, "seq": self.seq, "unacked": [e.to_json() for e in self.unacked],
                "backends": {
            svc: {name: {"state": b.state, "since": b.since, "last_ok": b.last_ok,
                         "override": b.override}
                  for name, b in backends.items()}
            for svc, backends in self.backends.items()}}


def check_writable(state_dir: Path) -> None:
    """Create `state_dir` if needed and a file in it; StartupError naming the directory
    when either is refused (read-only, permissions, not a directory). A full file system
    passes: sentinel runs on, its writes retried until space returns."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=state_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("state_dir %s is full (%s); starting anyway", state_dir, exc.strerror)
            return
        raise StartupError(f"state_dir {state_dir}: cannot write: {exc.strerror or exc}"
                           ) from None


def load_state(state_dir: Path) -> SavedState:
    """Read the persisted state; a missing file is a fresh start, a bad one is set aside."""
    path = state_dir / FILENAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return _parse(doc)
    except FileNotFoundError:
        return SavedState()
    # Whatever the damage, the same outcome: set aside, start fresh. A deeply nested
    # document is a RecursionError inside json; an event cut short a KeyError; 1e400 for
    # an integer an OverflowError.
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError,
            OverflowError) as exc:
        aside = _aside_name(path)
        try:
            os.replace(path, aside)
            log.error("state file %s unreadable (%s); moved aside to %s", path, exc, aside)
        except OSError as move_exc:
            log.error("state file %s unreadable (%s) and cannot be moved: %s",
                      path, exc, move_exc)
        return SavedState()


def _aside_name(path: Path) -> Path:
    """`state.json.corrupt-TIME`, with `.N` added when that name is taken: os.replace
    would otherwise overwrite an earlier bad file set aside within the same second."""
    base = path.with_name(f"{FILENAME}.corrupt-{int(time.time())}")
    aside, n = base, 0
    while aside.exists():
        n += 1
        aside = base.with_name(f"{base.name}.{n}")
    return aside


def _parse(doc: dict[str, Any]) -> SavedState:
    backends = {
        str(svc): {str(name): SavedBackend(str(b["state"]), str(b["since"]),
                                           float(b["last_ok"]) if b.get("last_ok") else None,
                                           str(b["override"]) if b.get("override") else None)
                   for name, b in entries.items()}
        for svc, entries in doc.get("backends", {}).items()}
    # Parsed now, not when they are handed over: a bad entry must fail here, where the
    # file can be set aside, not later in a crash loop.
    unacked = tuple(Event.from_json(e) for e in doc.get("unacked", []))
    return SavedState(seq=int(doc["seq"]), backends=backends, unacked=unacked)


def save_state(state_dir: Path, state: SavedState) -> None:
    """Write the state crash-safely (blocking: run it in a worker thread)."""
    data = json.dumps(state.to_json(), sort_keys=True).encode()
    write_atomic(state_dir / FILENAME, data, mode=0o600)
