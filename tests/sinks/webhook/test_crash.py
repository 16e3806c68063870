"""`sentinel run` with a webhook sink, as a subprocess: kill -9 while deliveries are
pending and while they are in flight, restart, and every event arrives, validly signed,
duplicates byte-identical; a graceful restart sends nothing twice; a corrupt or locked
outbox stops the start with a clear error; `sentinel outbox` and `sentinel webhook test`
work against the real thing, and `sentinel status` and /v1/state show a receiver that
refuses every delivery."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.e2e.helpers import (
    Processes,
    free_port,
    port_open,
    start_sentinel,
    wait_until,
)
from tests.sinks.webhook.conftest import SECRET

pytestmark = pytest.mark.e2e
RECEIVER = Path(__file__).with_name("receiver_server.py")
CONFIG = """\
version: 1
state_dir: {state}
shutdown_timeout: 2s
api: {{listen: "127.0.0.1:0"}}
sinks:
  ops: {{type: webhook, url: "{url}", secret: "{secret}",
         initial_delay: 50ms, max_delay: 200ms, timeout: 2s, concurrency: 2}}
defaults:
  probe: {{type: script, command: [/bin/true], interval: 1s}}
services:
  web:
    backends: [{{name: a, address: "127.0.0.1:1"}}, {{name: b, address: "127.0.0.1:2"}}]
    sinks: [ops]
"""


@dataclass
class Setup:
    """A receiver process and a config pointing a webhook sink at it."""

    url: str
    config: Path
    state: Path
    control: Path
    log: Path

    def records(self) -> list[dict[str, Any]]:
        """Every request the receiver saw, in arrival order."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def accepted_ids(self) -> list[str]:
        """webhook-id of every request answered 200, in arrival order."""
        return [r["headers"]["webhook-id"] for r in self.records() if r["status"] == 200]


@pytest.fixture
def setup(tmp_path: Path, processes: Processes) -> Setup:
    """A receiver (answering 503 until told otherwise) and the config for sentinel."""
    port = free_port()
    s = Setup(f"http://127.0.0.1:{port}/hook", tmp_path / "sentinel.yaml", tmp_path / "state",
              tmp_path / "ctl", tmp_path / "received.jsonl")
    s.control.mkdir()
    s.config.write_text(CONFIG.format(state=s.state, url=s.url, secret=SECRET))
    processes.start([sys.executable, str(RECEIVER), str(port), str(s.log), str(s.control)],
                    "receiver")
    wait_until(lambda: port_open(port), what="receiver")
    return s


def outbox(api: str) -> dict[str, Any]:
    """GET /v1/outbox's entry for the `ops` sink."""
    doc: dict[str, Any] = httpx.get(f"{api}/v1/outbox", timeout=5).json()["sinks"]["ops"]
    return doc


def flip(api: str, backend: str, action: str) -> list[str]:
    """An admin override through the API; the ids of the events it caused."""
    answer = httpx.post(f"{api}/v1/backends/web/{backend}/{action}", timeout=5)
    assert answer.status_code == 200, answer.text
    return [e["id"] for e in answer.json()["events"]]


def test_kill_9_while_pending_and_in_flight_loses_nothing(setup: Setup,
                                                          processes: Processes) -> None:
    """Events owed to a receiver that answers 503 survive kill -9; a second kill -9 in the
    middle of slow deliveries only causes duplicates with the same id and bytes; after
    the last restart every event has arrived, validly signed, each backend in order."""
    proc, api = start_sentinel(processes, setup.config, setup.state)
    events: list[str] = []
    for _ in range(5):
        for backend in ("a", "b"):
            events += flip(api, backend, "drain")
            events += flip(api, backend, "ready")
    assert len(events) == 20
    wait_until(lambda: outbox(api)["pending"] == 20 and outbox(api)["failed_attempts"] >= 2,
               what="all events pending after failed attempts")
    processes.kill(proc)

    # slow answers: the 20 take about 10 s (two at a time), so the kill after the
    # first few comes with requests in flight, however late this test looks
    (setup.control / "delay").write_text("1")
    (setup.control / "accept").touch()
    proc, api = start_sentinel(processes, setup.config, setup.state, "sentinel-2")
    wait_until(lambda: len(setup.accepted_ids()) >= 3, what="some deliveries")
    processes.kill(proc)  # requests are in flight: their answers are never seen
    assert len(set(setup.accepted_ids())) < len(events), "killed after the deliveries"

    (setup.control / "delay").write_text("0")
    proc, api = start_sentinel(processes, setup.config, setup.state, "sentinel-3")
    wait_until(lambda: set(events) <= set(setup.accepted_ids()), timeout=20,
               what="every event accepted")
    wait_until(lambda: outbox(api)["pending"] == 0, what="an empty outbox")
    assert processes.kill(proc, signal.SIGTERM) == 0

    hook = Webhook(SECRET)
    bodies: dict[str, set[str]] = {}
    for record in setup.records():
        bodies.setdefault(record["headers"]["webhook-id"], set()).add(record["body"])
        if record["status"] == 200:
            assert hook.verify(record["body"], record["headers"])["id"] == (
                record["headers"]["webhook-id"])
    assert all(len(b) == 1 for b in bodies.values())  # a duplicate carries the same bytes
    first_seen = list(dict.fromkeys(setup.accepted_ids()))
    for backend in ("a", "b"):
        seqs = [json.loads(next(iter(bodies[i])))["seq"] for i in first_seen
                if json.loads(next(iter(bodies[i])))["backend"] == backend]
        assert seqs == sorted(seqs)


def test_a_graceful_restart_sends_no_event_twice(setup: Setup, processes: Processes) -> None:
    """An event delivered before SIGTERM is no longer held in state.json after the clean
    stop, and the next instance does not send it again: once its own event is delivered
    and its outbox is empty, the receiver has accepted each event exactly once."""
    (setup.control / "accept").touch()
    proc, api = start_sentinel(processes, setup.config, setup.state)
    first = flip(api, "a", "drain")
    wait_until(lambda: outbox(api)["pending"] == 0 and first[0] in setup.accepted_ids(),
               what="the first event delivered")
    assert processes.kill(proc, signal.SIGTERM) == 0
    assert json.loads((setup.state / "state.json").read_text())["unacked"] == []

    proc, api = start_sentinel(processes, setup.config, setup.state, "sentinel-2")
    second = flip(api, "a", "ready")
    wait_until(lambda: outbox(api)["pending"] == 0 and second[0] in setup.accepted_ids(),
               what="the second event delivered")
    assert setup.accepted_ids() == first + second
    assert processes.kill(proc, signal.SIGTERM) == 0


def test_outbox_commands_via_api_while_running_and_on_the_file_when_stopped(
        setup: Setup, processes: Processes) -> None:
    """`sentinel outbox list|purge|retry` work against a running instance (through its
    API, since it holds the file) and against the file once it is stopped."""
    proc, api = start_sentinel(processes, setup.config, setup.state)
    events = flip(api, "a", "drain") + flip(api, "a", "ready")
    wait_until(lambda: outbox(api)["pending"] == 2, what="two pending events")

    def cli(*args: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "sentinel", "outbox", *args, "-c",
                               str(setup.config), "--json"], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)["sinks"]["ops"]
        return doc

    listed = cli("list")
    assert [e["id"] for e in listed["entries"]] == events
    assert listed["entries"][0]["last_error"].startswith("HTTP 503")
    assert [e["id"] for e in cli("purge", "--all", "--id", events[0])["entries"]] == [events[0]]
    assert processes.kill(proc, signal.SIGTERM) == 0
    assert [e["id"] for e in cli("list")["entries"]] == [events[1]]
    assert cli("retry")["entries"][0]["attempts"] == 0


def test_state_and_status_show_failing_deliveries_with_their_counts(
        setup: Setup, processes: Processes) -> None:
    """While every delivery fails, /v1/state and `sentinel status` call the webhook sink
    failing (not `ok`) with the receiver's last answer, the pending and dead-letter
    counts; once deliveries succeed it is ok again, the dead letter still counted."""
    _, api = start_sentinel(processes, setup.config, setup.state)

    def sink() -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(f"{api}/v1/state", timeout=5).json()["sinks"]["ops"]
        return doc

    (setup.control / "status").write_text("410")  # permanent: dead-lettered at once
    flip(api, "a", "drain")
    wait_until(lambda: sink()["deliveries"]["dead"] == 1, what="a dead letter")
    (setup.control / "status").write_text("503")  # retried: stays pending
    flip(api, "b", "drain")
    failing = wait_until(lambda: (s := sink())["deliveries"]["pending"] == 1
                         and "503" in (s["last_error"] or "") and s, what="a failing delivery")
    assert failing["ok"] is False
    assert failing["last_error"] == "HTTP 503"
    assert failing["deliveries"]["dead"] == 1
    assert failing["deliveries"]["failed_attempts"] >= 2
    done = subprocess.run([sys.executable, "-m", "sentinel", "status", "-c", str(setup.config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("sink ops:")]
    assert line.startswith("sink ops: FAILING: HTTP 503 (applied ")
    assert line.endswith("; deliveries: 1 pending, 1 dead)")

    (setup.control / "accept").touch()
    healthy = wait_until(lambda: (s := sink())["deliveries"]["pending"] == 0 and s,
                         what="the pending event delivered")
    assert (healthy["ok"], healthy["last_error"]) == (True, None)
    assert healthy["deliveries"]["dead"] == 1


def test_corrupt_outbox_is_a_clear_error_at_start(setup: Setup) -> None:
    """A garbage outbox file: `sentinel run` exits 1 naming the file, no traceback."""
    setup.state.mkdir()
    (setup.state / "outbox-ops.sqlite3").write_bytes(b"garbage, not SQLite " * 500)
    done = subprocess.run([sys.executable, "-m", "sentinel", "run", "-c", str(setup.config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "outbox-ops.sqlite3 is not a sound SQLite database" in done.stderr
    assert "Traceback" not in done.stderr


def test_second_instance_on_a_locked_outbox_is_refused(setup: Setup,
                                                       processes: Processes) -> None:
    """A second `sentinel run` on the same state_dir exits 1 saying the outbox is locked."""
    start_sentinel(processes, setup.config, setup.state)
    done = subprocess.run([sys.executable, "-m", "sentinel", "run", "-c", str(setup.config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "is locked by another process" in done.stderr
    assert "Traceback" not in done.stderr


def test_webhook_test_command_refuses_a_secret_without_whsec(setup: Setup) -> None:
    """`sentinel webhook test --secret hunter2`: one clear line, exit 2, nothing sent."""
    done = subprocess.run([sys.executable, "-m", "sentinel", "webhook", "test", setup.url,
                           "--secret", "hunter2"], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", "sentinel webhook test: a webhook secret must be whsec_ followed by base64 "
               "(the Standard Webhooks form)\n")
    assert setup.records() == []


def test_webhook_test_command_sends_a_verifiable_event(setup: Setup) -> None:
    """`sentinel webhook test URL --secret` gets a 2xx from a receiver that verifies it."""
    (setup.control / "accept").touch()
    done = subprocess.run([sys.executable, "-m", "sentinel", "webhook", "test", setup.url,
                           "--secret", SECRET], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    [record] = setup.records()
    assert Webhook(SECRET).verify(record["body"], record["headers"])["to"] == "test"
