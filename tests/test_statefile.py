"""state_dir/state.json: written crash-safely, read back, a bad file set aside; admin overrides
persisted by the engine and honoured by the next one (virtual clock)."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.model import State
from sentinel.statefile import FILENAME, SavedBackend, SavedState, load_state, save_state
from tests.engine.fakes import FakeProbe, service
from tests.engine.test_engine import make_engine, run_for, states
from tests.sinks.fakes import TimedSink

SAVED = SavedState(seq=42, backends={"web": {
    "web1": SavedBackend("up", "2026-11-24T16:00:00.123Z", 1_790_000_000.5),
    "web2": SavedBackend("down", "2026-11-24T16:01:00.000Z", None, "maint")}})


def test_saved_state_reads_back_equal_and_is_private(tmp_path: Path) -> None:
    """save_state then load_state gives the same value; the file is mode 0600 and no temp
    file is left beside it."""
    save_state(tmp_path, SAVED)
    assert load_state(tmp_path) == SAVED
    assert stat.S_IMODE((tmp_path / FILENAME).stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]


def test_missing_file_is_a_fresh_start(tmp_path: Path) -> None:
    """No state.json: seq 0, no backends, nothing created or moved."""
    assert load_state(tmp_path) == SavedState()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [
    b'{"seq": 41, "backends": {"web": {',  # cut short mid-write by another tool
    b"\xff\xfe\x00garbage",  # not UTF-8
    b"[]",  # not an object
    b"null",
    b'{"backends": {}}',  # no seq
    b'{"seq": "many", "backends": {}}',
    b'{"seq": 1, "backends": {"web": {"web1": {"since": "x"}}}}',  # no state
    b'{"seq": 1, "backends": {"web": ["web1"]}}',
])
def test_unreadable_file_is_moved_aside_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    """A state.json that does not parse is renamed to state.json.corrupt-TIME (bytes kept),
    logged as an error, and loading starts fresh instead of raising."""
    (tmp_path / FILENAME).write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="sentinel.state"):
        assert load_state(tmp_path) == SavedState()
    [aside] = tmp_path.iterdir()
    assert aside.name.startswith(f"{FILENAME}.corrupt-")
    assert aside.read_bytes() == content
    [record] = caplog.records
    assert "unreadable" in record.getMessage()
    assert f"moved aside to {aside}" in record.getMessage()


def test_a_directory_in_place_of_the_file_is_moved_aside(tmp_path: Path) -> None:
    """state.json that is a directory (unreadable as a file) is moved aside like a bad file."""
    (tmp_path / FILENAME).mkdir()
    assert load_state(tmp_path) == SavedState()
    [aside] = tmp_path.iterdir()
    assert aside.is_dir()
    assert aside.name.startswith(f"{FILENAME}.corrupt-")


def test_a_second_bad_file_does_not_overwrite_the_first_one_set_aside(tmp_path: Path) -> None:
    """Two bad files within the same second both survive, under different names."""
    for content in (b"first", b"second"):
        (tmp_path / FILENAME).write_bytes(content)
        load_state(tmp_path)
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"first", b"second"]


async def test_overrides_are_persisted_and_a_new_engine_starts_with_them_silently(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """drain and maint go to state.json; a new engine publishes them from its first view,
    emits nothing, and numbers its next event after the persisted seq."""
    probe = FakeProbe()
    svc = service("s", [9001, 9002, 9003], interval=1.0)
    engine = make_engine(tmp_path, probe, {"rec": TimedSink()}, svc)

    async def admin(_probe: FakeProbe) -> None:
        await trio.sleep(0.5)
        await engine.set_override("s", "b9001", "drain")
        await engine.set_override("s", "b9002", "maint")

    await run_for(engine, 0.9, admin, probe)
    saved = json.loads((tmp_path / FILENAME).read_text())
    assert (saved["seq"], {n: b["override"] for n, b in saved["backends"]["s"].items()}) == (
        2, {"b9001": "drain", "b9002": "maint", "b9003": None})

    rec = TimedSink()
    engine = make_engine(tmp_path, probe, {"rec": rec}, svc)

    async def lift(_probe: FakeProbe) -> None:
        await trio.sleep(5.5)
        await engine.set_override("s", "b9001", "ready")

    await run_for(engine, 5.9, lift, probe)
    assert [b.state for b in rec.applied[0][1].view.backends] == [
        State.DRAIN, State.MAINT, State.UP]
    assert [(e.seq, e.backend, e.from_state, e.to_state, e.reason) for e in rec.events()] == [
        (3, "b9001", "drain", "up", "admin: ready")]
    assert states(engine, "s") == {"b9001": ("up", 1), "b9002": ("maint", 0),
                                   "b9003": ("up", 1)}
