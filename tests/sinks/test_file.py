"""The `file` sink: options, atomic replacement, and the engine's state document on disk."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from sentinel.config.model import Config, SinkConfig
from sentinel.config.node import load_yaml
from sentinel.engine.engine import Engine
from sentinel.errors import ConfigError, SinkError
from sentinel.model import ServiceView
from sentinel.observe import NullObserver
from sentinel.sinks.base import SinkContext, Update
from sentinel.sinks.file import FileOptions, FileSink, parse_options
from tests.engine.fakes import FakeProbe, service

EMPTY = Update(ServiceView("web", ()))


def file_sink(path: Path, document: dict[str, object]) -> FileSink:
    """A FileSink at `path` whose state document is `document` (mutable by the test)."""
    return FileSink("f", FileOptions(str(path)), SinkContext(path.parent, lambda: document))


class FileWatch(NullObserver):
    """Sets `reached` after a successful apply leaves a document with seq >= `seq` at `path`."""

    def __init__(self, path: Path, seq: int) -> None:
        self.path = path
        self.seq = seq
        self.reached = trio.Event()

    def sink_applied(self, sink: str, service: str, error: str | None, start_unix: float,
                     duration: float) -> None:
        """Look at the file after each successful write."""
        if error is None and json.loads(self.path.read_text())["seq"] >= self.seq:
            self.reached.set()


def test_options_need_a_path() -> None:
    """`{type: file}` without `path` is a config error naming the sink's position."""
    with pytest.raises(ConfigError, match=r"f\.yaml:1:1: .*needs `path`"):
        parse_options(load_yaml("{}", "f.yaml"))


def test_options_reject_unknown_keys() -> None:
    """An unknown key under a file sink is an error."""
    with pytest.raises(ConfigError, match="mode"):
        parse_options(load_yaml("{path: /tmp/x, mode: 1}", "f.yaml"))


def test_options_take_the_path() -> None:
    """`path` is carried as given."""
    assert parse_options(load_yaml("{path: /srv/state.json}", "f.yaml")) == FileOptions(
        "/srv/state.json")


@pytest.mark.parametrize(("written", "message"), [
    ("{tmp}/", "f.yaml:1:8: path: is a directory"),
    ("{tmp}/taken/state.json", "f.yaml:1:8: path: cannot be made: {tmp}/taken is not a "
                               "directory"),
])
def test_options_refuse_a_path_no_file_can_be_written_at(tmp_path: Path, written: str,
                                                         message: str) -> None:
    """A `path` that is a directory, or under a file, is refused at the key (the sink
    could only retry it for ever); missing directories are fine (they are made)."""
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(ConfigError) as caught:
        parse_options(load_yaml(f"{{path: '{written.replace('{tmp}', str(tmp_path))}'}}",
                                "f.yaml"))
    assert str(caught.value) == message.replace("{tmp}", str(tmp_path))
    made_later = str(tmp_path / "new" / "state.json")
    assert parse_options(load_yaml(f"{{path: '{made_later}'}}", "f.yaml")).path == made_later


async def test_apply_writes_the_state_document_as_json(tmp_path: Path) -> None:
    """Each apply writes the current document; a later apply replaces it."""
    target = tmp_path / "out" / "state.json"
    document: dict[str, object] = {"services": {}, "seq": 1}
    sink = file_sink(target, document)
    await sink.apply(EMPTY)
    assert json.loads(target.read_text()) == {"services": {}, "seq": 1}
    document["seq"] = 2
    await sink.apply(EMPTY)
    assert json.loads(target.read_text())["seq"] == 2


async def test_apply_replaces_the_file_by_rename_leaving_no_temp_files(tmp_path: Path) -> None:
    """The file is replaced (a new inode), never rewritten in place; no temp file stays."""
    target = tmp_path / "state.json"
    sink = file_sink(target, {"seq": 1})
    await sink.apply(EMPTY)
    first = os.stat(target).st_ino
    await sink.apply(EMPTY)
    assert os.stat(target).st_ino != first
    assert os.listdir(tmp_path) == ["state.json"]


async def test_a_concurrent_reader_never_sees_a_partial_document(tmp_path: Path) -> None:
    """While 40 large documents are written, a reader thread always parses a whole one."""
    target = tmp_path / "state.json"
    document: dict[str, object] = {"pad": "x" * 200_000, "seq": 0}
    sink = file_sink(target, document)
    await sink.apply(EMPTY)
    done, seen, bad = threading.Event(), set[int](), list[str]()

    def reader() -> None:
        while not done.is_set():
            text = target.read_text()
            try:
                seen.add(json.loads(text)["seq"])
            except ValueError:
                bad.append(text[:80])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for seq in range(1, 41):
            document["seq"] = seq
            await sink.apply(EMPTY)
    finally:
        done.set()
        thread.join(timeout=10)
    assert bad == []
    assert len(seen) > 1


async def test_unwritable_path_raises_a_sink_error(tmp_path: Path) -> None:
    """A path under a regular file cannot be written: SinkError, which the runner retries."""
    (tmp_path / "blocker").write_text("")
    sink = file_sink(tmp_path / "blocker" / "state.json", {"seq": 1})
    with pytest.raises(SinkError, match="blocker"):
        await sink.apply(EMPTY)


async def test_engine_file_sink_holds_the_state_document(tmp_path: Path) -> None:
    """Run by the engine, the file's services and seq equal engine.state_document()'s."""
    target = tmp_path / "doc" / "state.json"
    probe = FakeProbe()
    probe.alive[("127.0.0.1", 9002)] = False
    # Real clock, interval 20s: b9002 is probed (and goes down) at once, b9001 not before 10s,
    # so nothing changes between the write and the comparison.
    cfg = Config(path="<test>", state_dir=str(tmp_path / "state"),
                 sinks=(SinkConfig("f", "file", FileOptions(str(target))),),
                 services=(service("web", [9002, 9001], interval=20.0, sinks=("f",)),))
    written = FileWatch(target, seq=1)
    engine = Engine(cfg, probe_factory=probe.factory(), poller=probe.poller, observer=written)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        with trio.fail_after(5):
            await written.reached.wait()
        engine.stop()
    on_disk = json.loads(target.read_text())
    live = engine.state_document()
    assert on_disk["services"] == live["services"]
    assert on_disk["seq"] == live["seq"] == 1
    states = {b["name"]: b["state"] for b in on_disk["services"]["web"]["backends"]}
    assert states == {"b9001": "up", "b9002": "down"}
