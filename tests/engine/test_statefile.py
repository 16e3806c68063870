"""state_dir/state.json: written crash-safely, read back, a bad file set aside; admin overrides
persisted by the engine and honoured by the next one (virtual clock)."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.engine.statefile import FILENAME, SavedBackend, SavedState, load_state, save_state
from sentinel.model import Event, State
from sentinel.timefmt import rfc3339, uuid7
from tests.engine.drive import make_engine, run_for, states
from tests.engine.fakes import FakeProbe, service
from tests.sinks.fakes import TimedSink

EVENT = Event(id=uuid7(1_790_000_000_000), seq=42, time=rfc3339(1_790_000_000.0), service="web",
              backend="web1", address="10.0.0.11:80", from_state="up", to_state="down",
              weight=0, reason="1 failures within 10s")
SAVED = SavedState(seq=42, unacked=(EVENT,), backends={"web": {
    "web1": SavedBackend("up", "2026-11-24T16:00:00.123Z", 1_790_000_000.5),
    "web2": SavedBackend("down", "2026-11-24T16:01:00.000Z", None, "maint")}})
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


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
    b'{"seq": 1, "backends": {}, "unacked": [{"id": "x", "seq": 1}]}',  # event cut short
    b'{"seq": 1, "backends": {}, "unacked": [7]}',
    b'{"seq": 1, "backends": {}, "unacked": [{"id": "x", "seq": 1, "time": "t", '
    b'"service": "s", "backend": "b", "address": "a", "from": "up", "to": "down", '
    b'"weight": 0, "reason": "r", "probe": {"type": "tcp"}}]}',  # probe cut short
    b'{"seq": 1e400, "backends": {}}',  # int(inf): OverflowError
    b'{"seq": 1, "backends": {}, "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
])
def test_unreadable_file_is_moved_aside_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    """A state.json that does not parse is renamed to state.json.corrupt-TIME (bytes kept),
    logged as an error, and loading starts fresh instead of raising."""
    (tmp_path / FILENAME).write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="sentinel.engine.statefile"):
        assert load_state(tmp_path) == SavedState()
    [aside] = tmp_path.iterdir()
    assert aside.name.startswith(f"{FILENAME}.corrupt-")
    assert aside.read_bytes() == content
    [record] = caplog.records
    assert "unreadable" in record.getMessage()
    assert f"moved aside to {aside}" in record.getMessage()


def replaced(doc: Any, path: list[str | int], value: object) -> Any:
    """`doc` with the value at `path` (followed as far as it exists) replaced by `value`."""
    if not path or not isinstance(doc, dict | list):
        return value
    key, rest = path[0], path[1:]
    if isinstance(doc, dict) and key in doc:
        return {**doc, key: replaced(doc[key], rest, value)}
    if isinstance(doc, list) and isinstance(key, int) and key < len(doc):
        return [replaced(v, rest, value) if i == key else v for i, v in enumerate(doc)]
    return value


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.sampled_from(["seq", "backends", "web", "web1", "state", "since",
                                      "last_ok", "override", "unacked", 0, "id", "probe",
                                      "weight", "trace_id", "time"]), max_size=4),
       value=JSON)
def test_any_damage_to_a_good_file_loads_or_is_set_aside(
        tmp_path: Path, path: list[str | int], value: object) -> None:
    """A good state file with any one value replaced by any JSON value: loading never
    raises, and what it returns can be written back."""
    (tmp_path / FILENAME).write_text(json.dumps(replaced(SAVED.to_json(), path, value)))
    save_state(tmp_path, load_state(tmp_path))
    for aside in tmp_path.glob(f"{FILENAME}.corrupt-*"):
        aside.unlink()


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


async def test_an_engine_starts_on_a_file_with_an_event_cut_short(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """An `unacked` entry missing its keys (it crash-looped at the hand-over to durable
    sinks) is set aside at load; the engine starts fresh and publishes."""
    (tmp_path / FILENAME).write_text('{"seq": 7, "backends": {}, "unacked": [{"id": "x"}]}')
    rec = TimedSink()
    engine = make_engine(tmp_path, FakeProbe(), {"rec": rec}, service("s", [9001]))
    await run_for(engine, 0.5)
    assert len(list(tmp_path.glob(f"{FILENAME}.corrupt-*"))) == 1  # noqa: ASYNC240
    assert [b.state for b in rec.applied[0][1].view.backends] == [State.UP]
