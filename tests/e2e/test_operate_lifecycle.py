"""The life of a `sentinel run` subprocess: restarts (clean and kill -9) and what survives them,
a corrupt state file, reloads with a good and a bad file (POST /v1/reload and SIGHUP), and
graceful stop (SIGTERM drains sinks, a second signal stops at once)."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from tests.e2e.helpers import (
    Processes,
    read_json,
    run_cli,
    signal_and_wait,
    wait_until,
)
from tests.e2e.site import Site, quiet_for, start_backends, states, summary, view
from tests.processes import alive

pytestmark = pytest.mark.e2e


def test_restart_with_the_same_config_emits_nothing_and_publishes_the_same_view(
        processes: Processes, site: Site) -> None:
    """After SIGTERM and a restart, an up, a down and a drained backend keep state and
    `since`, no event is emitted, seq stays, and the file sink writes the same view."""
    start_backends(processes, site, "web1", "web2")  # web3 never listens
    site.write({"web": ["web1", "web2", "web3"]})
    proc, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == {"web1": "up", "web2": "up", "web3": "down"},
               what="web3 down in the file")
    assert api.post("/v1/backends/web/web2/drain").status_code == 200
    wait_until(lambda: (site.doc_backends("web") or {}).get("web2") == "drain",
               what="the drain in the file")
    quiet_for(api, 6)
    before, api_before = view(read_json(site.doc)), view(api.state())
    assert before == api_before
    assert api.state()["seq"] == 2

    assert signal_and_wait(proc) == 0
    site.doc.unlink()
    _, api = site.start(processes)
    wait_until(lambda: site.doc.exists(), what="the file after the restart")
    quiet_for(api, 6)
    assert view(read_json(site.doc)) == before
    assert view(api.state()) == before
    assert (api.events(), api.state()["seq"]) == ([], 2)


def test_kill_9_then_restart_continues_seq_with_no_gap_and_no_reuse(
        processes: Processes, site: Site) -> None:
    """Events 1 and 2, then kill -9; a backend dies while sentinel is dead; the restarted
    instance reports that death as event 3 (and nothing else)."""
    backends = start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]})
    proc, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == {"web1": "up", "web2": "up"}, what="up")
    processes.kill(backends["web2"])
    wait_until(lambda: states(api, "web")["web2"] == "down", what="web2 down")
    backends.update(start_backends(processes, site, "web2"))
    # the events, not /v1/state: a decision shows there before its event is on disk
    events = wait_until(lambda: len(e := api.events()) >= 2 and e, what="web2's two events")
    assert [(e["seq"], e["to"]) for e in events] == [(1, "down"), (2, "up")]

    processes.kill(proc)  # SIGKILL: no chance to save anything on the way out
    assert (read_json(site.state_dir / "state.json") or {})["seq"] == 2
    processes.kill(backends["web1"])
    _, api = site.start(processes)
    wait_until(api.events, what="web1's event after restart")
    quiet_for(api, 4)
    assert states(api, "web")["web1"] == "down"
    assert [(e["seq"], e["backend"], e["from"], e["to"]) for e in api.events()] == [
        (3, "web1", "up", "down")]
    assert api.state()["seq"] == 3


def test_corrupt_state_file_is_set_aside_and_logged_and_sentinel_starts_fresh(
        processes: Processes, site: Site) -> None:
    """A state.json that is not JSON: renamed to state.json.corrupt-*, logged, seq starts at 0,
    and the next event writes a good state.json."""
    garbage = b'{"seq": 41, "backends": {"web": {'
    site.state_dir.mkdir()
    (site.state_dir / "state.json").write_bytes(garbage)
    start_backends(processes, site, "web1")
    site.write({"web": ["web1"]})
    _, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == {"web1": "up"}, what="web1 up")
    [aside] = site.state_dir.glob("state.json.corrupt-*")
    assert aside.read_bytes() == garbage
    log = processes.log("sentinel").read_text()
    assert re.search(r"ERROR sentinel\.engine\.statefile: state file .*state\.json unreadable "
                     rf".*moved aside to {re.escape(str(aside))}", log), log
    assert api.state()["seq"] == 0
    assert api.post("/v1/backends/web/web1/drain").json()["events"][0]["seq"] == 1
    saved = json.loads((site.state_dir / "state.json").read_text())
    assert (saved["seq"], saved["backends"]["web"]["web1"]["override"]) == (1, "drain")


def test_reload_adds_and_removes_backends_and_services_and_keeps_unchanged_state(
        processes: Processes, site: Site) -> None:
    """POST /v1/reload with a good file: web1 removed, web3 and service api added, web2
    (down) kept with its `since` and no event; then SIGHUP with changed probe settings
    (an expect_body nothing matches) and api removed: both take effect, logged."""
    start_backends(processes, site, "web1", "web3", "api1")  # web2 never listens
    site.write({"web": ["web1", "web2"]})
    proc, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == {"web1": "up", "web2": "down"},
               what="web2 down")
    since = api.backend("web", "web2")["since"]
    seq = api.state()["seq"]

    site.write({"web": ["web2", "web3"], "api": ["api1"]})
    answer = api.post("/v1/reload")
    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    assert states(api, "web") == {"web2": "down", "web3": "up"}
    assert api.backend("web", "web2")["since"] == since
    assert states(api, "api") == {"api1": "up"}
    wait_until(lambda: site.doc_backends("api") == {"api1": "up"}, what="api in the file")
    assert site.doc_backends("web") == {"web2": "down", "web3": "up"}
    quiet_for(api, 6)
    assert api.events(after=seq) == []
    assert api.backend("web", "web3")["last_probe"]["ok"] is True

    site.write({"web": ["web2", "web3"]}, expect_body="nope")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "api" not in api.state()["services"], what="api gone after SIGHUP")
    [event] = wait_until(lambda: api.events(after=seq), what="the new probe to fail web3")
    assert (event["backend"], event["from"], event["to"]) == ("web3", "up", "down")
    assert "body" in event["reason"], event
    assert api.backend("web", "web2")["since"] == since
    assert processes.log("sentinel").read_text().count("sentinel.engine.reload: reloaded ") == 2


def test_bad_reload_is_refused_with_the_check_errors_and_the_old_config_keeps_running(
        processes: Processes, site: Site) -> None:
    """POST /v1/reload with an invalid file: 400 with exactly `sentinel check`'s
    file:line:col errors; SIGHUP logs them; the old config keeps probing and acting."""
    backends = start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]})
    proc, api = site.start(processes)
    wait_until(lambda: states(api, "web") == {"web1": "up", "web2": "up"}, what="both up")
    good = site.config.read_text()
    site.config.write_text(good.replace(f"127.0.0.1:{site.ports['web2']}", "127.0.0.1:70000")
                           .replace("shutdown_timeout: 5s", "shutdown_timeout: later"))

    answer = api.post("/v1/reload")
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    check = run_cli("check", "-c", str(site.config))
    assert (check.returncode, check.stderr.splitlines()) == (2, errors)
    assert len(errors) == 2
    assert all(re.match(rf"{re.escape(str(site.config))}:\d+:\d+: "
                        r"(shutdown_timeout|services\.web\.backends\[1\])", e)
               for e in errors), errors
    assert answer.json()["ok"] is False

    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: processes.log("sentinel").read_text().count(errors[-1]) >= 2,
               what="the SIGHUP reload's errors in the log")  # once for POST, once for SIGHUP
    log = processes.log("sentinel").read_text()
    assert f"reload refused, keeping the running config: {errors[0]}" in log
    assert proc.poll() is None
    processes.kill(backends["web2"])
    events = wait_until(api.events, what="the old config to still act on a death")
    assert summary(events)[0][:3] == ("web2", "up", "down")
    assert states(api, "web") == {"web1": "up", "web2": "down"}


def test_sigterm_lets_an_in_flight_sink_command_finish_then_exits_0(
        processes: Processes, site: Site) -> None:
    """SIGTERM while an exec sink's command (1s) runs: sentinel waits for it, then exits 0."""
    out = site.root / "sink.out"
    script, pids = site.script("slow", f'sleep 1\necho "$1 $2" >> {out}')
    site.write({"web": ["web1"]}, shutdown="10s",
               sinks={"slow": f'{{type: exec, command: [{script}, "{{backend}}", "{{to}}"]}}'})
    start_backends(processes, site, "web1")
    proc, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == {"web1": "up"}, what="web1 up")
    assert api.post("/v1/backends/web/web1/drain").status_code == 200
    wait_until(lambda: pids.exists(), what="the sink command to start")
    assert signal_and_wait(proc) == 0, processes.log("sentinel").read_text()
    # exited a second after the command started (its PID file's time), however late
    # this test saw that file, and with the command's line written
    assert time.time() - pids.stat().st_mtime > 0.9, "sentinel did not wait for the command"
    assert out.read_text() == "web1 drain\n"
    log = processes.log("sentinel").read_text()
    assert "SIGTERM: stopping gracefully" in log
    assert "still pending" not in log


def test_second_signal_stops_at_once_while_a_sink_command_hangs(
        processes: Processes, site: Site) -> None:
    """An exec sink running `sleep 600` (shutdown_timeout 120s): after SIGTERM probing stops
    and sentinel waits; a second signal (SIGINT) ends it long before the grace is over and
    kills the command."""
    script, pids = site.script("hang", "exec sleep 600")
    site.write({"web": ["web1"]}, shutdown="120s",
               sinks={"stuck": f'{{type: exec, command: [{script}], timeout: 300s}}'})
    start_backends(processes, site, "web1")
    proc, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == {"web1": "up"}, what="web1 up")
    assert api.post("/v1/backends/web/web1/drain").status_code == 200
    hung = wait_until(lambda: pids.exists() and int(pids.read_text().split()[0]),
                      what="the hanging command")
    processes.adopt(hung)

    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping gracefully" in processes.log("sentinel").read_text(),
               what="the first signal to be taken")
    probes = api.probes()
    time.sleep(1.0)  # two and a half probe intervals
    assert (api.probes(), proc.poll()) == (probes, None), "still probing, or not waiting"
    # a safety net a loaded machine cannot miss, yet far inside the 120 s grace
    assert signal_and_wait(proc, signal.SIGINT, timeout=30) == 0
    assert "second signal: stopping now" in processes.log("sentinel").read_text()
    wait_until(lambda: not alive(hung), timeout=15, what="the hanging command to be killed")
