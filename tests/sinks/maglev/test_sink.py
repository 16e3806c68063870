"""The maglev sink: options, files on disk, generations across restarts, fail static,
rate limiting on virtual time, and GET /v1/maglev through the real API."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from sentinel.api.app import Api, serve_api
from sentinel.config.model import ApiConfig
from sentinel.engine.engine import Engine
from sentinel.errors import ConfigErrors, SinkUnavailable
from sentinel.model import BackendView, ServiceView, State
from sentinel.sinks.base import SinkContext, Update
from sentinel.sinks.maglev.options import MaglevOptions
from sentinel.sinks.maglev.sink import MaglevSink
from sentinel.sinks.maglev.table import NO_BACKEND, Mode
from sentinel.sinks.registry import load_config
from tests.engine.fakes import FakeProbe, config, service

PORTS = [9001, 9002, 9003]


def view(*down: int, name: str = "web") -> ServiceView:
    """Service `name` over 127.0.0.1:PORTS with the given ports down."""
    return ServiceView(name, tuple(BackendView(
        name=f"b{p}", address=f"127.0.0.1:{p}", host="127.0.0.1", port=p,
        state=State.DOWN if p in down else State.UP, weight=0 if p in down else 1,
        configured_weight=1) for p in PORTS))


def sink(tmp_path: Path, **options: object) -> MaglevSink:
    """A sink writing to tmp_path/maglev with a small table and no rate limit."""
    opts = MaglevOptions(**{"table_size": 101, "dir": str(tmp_path / "maglev"),
                            "min_interval": 0.0, **options})  # type: ignore[arg-type]
    return MaglevSink("ring", opts, SinkContext(state_dir=tmp_path))


def on_disk(tmp_path: Path, service: str = "web") -> tuple[dict[str, object], bytes]:
    """The published JSON and table."""
    base = tmp_path / "maglev" / service
    return json.loads(base.with_suffix(".json").read_text()), base.with_suffix(
        ".maglev").read_bytes()


def write_config(tmp_path: Path, ring: str) -> Path:
    """A config whose sink `ring` has the given flow-mapping options."""
    path = tmp_path / "sentinel.yaml"
    path.write_text(f"version: 1\nsinks:\n  ring: {{type: maglev, {ring}}}\nservices:\n"
                    "  web:\n    backends: [127.0.0.1:9001]\n    sinks: [ring]\n")
    return path


def test_options_defaults_and_relative_dir(tmp_path: Path) -> None:
    """Defaults: 65537 slots, stable, keep, 100ms; `dir` is relative to the config file."""
    options = load_config(write_config(tmp_path, "dir: out")).sinks[0].options
    assert options == MaglevOptions(table_size=65537, dir=str(tmp_path / "out"),
                                    mode=Mode.STABLE, on_empty="keep", min_interval=0.1)


def test_a_non_prime_table_size_names_the_nearest_primes(tmp_path: Path) -> None:
    """table_size 65536 is a config error at its position naming 65521 and 65537."""
    with pytest.raises(ConfigErrors) as info:
        load_config(write_config(tmp_path, "table_size: 65536"))
    assert str(info.value.errors[0]) == (
        f"{tmp_path / 'sentinel.yaml'}:3:36: sinks.ring.table_size: must be a prime (Maglev "
        "permutations need it), got 65536; nearest primes: 65521 or 65537")


@pytest.mark.parametrize(("ring", "message"), [
    ("mode: sticky", "sinks.ring.mode: expected one of stable, fresh; got 'sticky'"),
    ("on_empty: drop", "sinks.ring.on_empty: expected one of keep, clear; got 'drop'"),
    ("size: 7", "unknown key 'size'"),
    ("table_size: 1", "sinks.ring.table_size: must be 2..16777216, got 1"),
])
def test_bad_options_are_config_errors(tmp_path: Path, ring: str, message: str) -> None:
    """Unknown modes, policies and keys are rejected with their key path."""
    with pytest.raises(ConfigErrors, match=message):
        load_config(write_config(tmp_path, ring))


@pytest.mark.parametrize(("directory", "message"), [
    ("taken", "is not a directory"),
    ("taken/maglev", "cannot be made: {tmp}/taken is not a directory"),
])
def test_a_dir_that_cannot_be_a_directory_is_refused(tmp_path: Path, directory: str,
                                                     message: str) -> None:
    """`dir` naming a file, or a path under one, is refused at the key (the sink could
    only retry it for ever)."""
    (tmp_path / "taken").write_text("a file, not a directory")
    with pytest.raises(ConfigErrors) as info:
        load_config(write_config(tmp_path, f"dir: {directory}"))
    assert [str(e) for e in info.value.errors] == [
        f"{tmp_path / 'sentinel.yaml'}:3:29: sinks.ring.dir: "
        + message.replace("{tmp}", str(tmp_path))]


async def test_apply_writes_the_table_and_its_sidecar(tmp_path: Path) -> None:
    """SERVICE.maglev holds table_size uint32s whose sha256 the SERVICE.json names, with
    the backends by index, their weights and generation 1."""
    ring = sink(tmp_path)
    await ring.apply(Update(view()))
    doc, table = on_disk(tmp_path)
    assert len(table) == 4 * 101
    assert doc["sha256"] == hashlib.sha256(table).hexdigest()
    assert {k: doc[k] for k in ("service", "table_size", "backends", "weights", "generation",
                                "mode", "state")} == {
        "service": "web", "table_size": 101, "backends": ["b9001", "b9002", "b9003"],
        "weights": [1, 1, 1], "generation": 1, "mode": "stable", "state": "ok"}
    assert ring.table_for("web") == (doc, table)
    assert ring.table_for("api") is None


async def test_files_change_only_when_the_table_does(tmp_path: Path) -> None:
    """The same view again writes nothing; a failure writes generation 2."""
    ring = sink(tmp_path)
    await ring.apply(Update(view()))
    path = tmp_path / "maglev" / "web.maglev"
    first = path.stat().st_ino
    await ring.apply(Update(view()))
    assert path.stat().st_ino == first
    assert on_disk(tmp_path)[0]["generation"] == 1
    await ring.apply(Update(view(9002)))
    doc, table = on_disk(tmp_path)
    assert (doc["generation"], doc["weights"]) == (2, [1, 0, 1])
    assert 1 not in [int.from_bytes(table[i:i + 4], "little") for i in range(0, 404, 4)]


async def test_a_restart_continues_the_generation(tmp_path: Path) -> None:
    """A new sink over the same directory takes the table on disk: an unchanged view writes
    nothing, the next change is generation + 1."""
    await sink(tmp_path).apply(Update(view()))
    await sink(tmp_path).apply(Update(view(9001)))
    restarted = sink(tmp_path)
    await restarted.apply(Update(view(9001)))
    assert on_disk(tmp_path)[0]["generation"] == 2
    await restarted.apply(Update(view()))
    assert on_disk(tmp_path)[0]["generation"] == 3


async def test_a_corrupt_table_is_rewritten_with_the_next_generation(tmp_path: Path) -> None:
    """A table whose sha256 does not match its JSON is replaced; the count goes on."""
    await sink(tmp_path).apply(Update(view()))
    (tmp_path / "maglev" / "web.maglev").write_bytes(b"\0" * 404)
    await sink(tmp_path).apply(Update(view()))
    doc, table = on_disk(tmp_path)
    assert doc["generation"] == 2
    assert doc["sha256"] == hashlib.sha256(table).hexdigest()


async def test_all_down_keeps_the_last_table_fail_static(tmp_path: Path) -> None:
    """Every backend down: the last table stays, marked fail_static (a new generation);
    more all-down views change nothing; a recovery publishes a live table again."""
    ring = sink(tmp_path)
    await ring.apply(Update(view(9003)))
    _, last = on_disk(tmp_path)
    await ring.apply(Update(view(*PORTS)))
    doc, table = on_disk(tmp_path)
    assert (table, doc["state"], doc["generation"], doc["weights"]) == (
        last, "fail_static", 2, [1, 1, 0])
    await ring.apply(Update(view(*PORTS)))
    assert on_disk(tmp_path)[0]["generation"] == 2
    await ring.apply(Update(view()))
    assert on_disk(tmp_path)[0]["state"] == "ok"


async def test_fail_static_survives_a_restart(tmp_path: Path) -> None:
    """Started with every backend down, the sink keeps the table a previous run left."""
    await sink(tmp_path).apply(Update(view()))
    _, last = on_disk(tmp_path)
    await sink(tmp_path).apply(Update(view(*PORTS)))
    doc, table = on_disk(tmp_path)
    assert (table, doc["state"]) == (last, "fail_static")


@pytest.mark.parametrize("on_empty", ["keep", "clear"])
async def test_empty_table_when_clearing_or_nothing_to_keep(tmp_path: Path,
                                                            on_empty: str) -> None:
    """on_empty: clear, or keep with no earlier table: every slot is NO_BACKEND."""
    ring = sink(tmp_path, on_empty=on_empty)
    if on_empty == "clear":
        await ring.apply(Update(view()))
    await ring.apply(Update(view(*PORTS)))
    doc, table = on_disk(tmp_path)
    assert doc["state"] == "empty"
    assert table == NO_BACKEND.to_bytes(4, "little") * 101


async def test_rebuilds_are_rate_limited_per_service(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Within min_interval of a rebuild the next one waits for the interval to end; another
    service is not held up."""
    ring = sink(tmp_path, min_interval=2.0)
    await ring.apply(Update(view()))
    start = trio.current_time()
    await ring.apply(Update(view(name="api")))
    assert trio.current_time() == start
    await ring.apply(Update(view(9001)))
    assert trio.current_time() - start == pytest.approx(2.0)
    assert on_disk(tmp_path)[0]["generation"] == 2


async def test_an_unwritable_directory_is_sink_unavailable(tmp_path: Path) -> None:
    """When DIR cannot be created the sink raises SinkUnavailable (the runner retries)."""
    (tmp_path / "maglev").write_text("a file, not a directory")
    with pytest.raises(SinkUnavailable, match="maglev"):
        await sink(tmp_path).apply(Update(view()))


async def test_api_serves_the_table_as_json_and_bin(tmp_path: Path) -> None:
    """GET /v1/maglev/web answers the sidecar, ?format=bin the table bytes; an unknown
    service is 404."""
    ring = sink(tmp_path)
    await ring.apply(Update(view()))
    probe = FakeProbe()
    engine = Engine(config(tmp_path, service("web", PORTS, sinks=("ring",)), sinks=("ring",)),
                    sinks={"ring": ring}, probe_factory=probe.factory(), poller=probe.poller)
    doc, table = on_disk(tmp_path)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_api, Api(engine), ApiConfig(host="127.0.0.1", port=0),
                                  tmp_path)
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            as_json = await client.get("/v1/maglev/web")
            as_bin = await client.get("/v1/maglev/web", params={"format": "bin"})
            missing = await client.get("/v1/maglev/nope")
        nursery.cancel_scope.cancel()
    assert (as_json.status_code, as_json.json()) == (200, doc)
    assert (as_bin.status_code, as_bin.content) == (200, table)
    assert as_bin.headers["content-type"] == "application/octet-stream"
    assert missing.status_code == 404
