"""Operating `sentinel run` as a real subprocess over real loopback backends: admin overrides
(API and `sentinel ctl`), auth, the panic guard, restarts (clean and kill -9), a corrupt state
file, reloads (good and bad, POST and SIGHUP) and graceful stop (SIGTERM, a second signal)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import Processes, read_json, run_cli, signal_and_wait, wait_until
from tests.e2e.site import Site, quiet_for, replay, start_backends, states, summary, view

pytestmark = pytest.mark.e2e


def test_overrides_through_api_and_ctl_show_everywhere_and_survive_a_restart(
        processes: Processes, site: Site) -> None:
    """drain via POST and maint via `sentinel ctl` (token from -c) publish at once with
    `admin: ...` events, show in /v1/state, `sentinel status` and the file sink, are
    persisted, and hold after a restart without new events; an unknown backend is 404/exit 1."""
    start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]})
    proc, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == {"web1": "up", "web2": "up"},
               what="both up in the file")

    response = api.post("/v1/backends/web/web1/drain")
    assert response.status_code == 200, response.text
    assert summary(response.json()["events"]) == [("web1", "up", "drain", "admin: drain")]
    ctl = run_cli("ctl", "maint", "web/web2", "-c", str(site.config))
    assert (ctl.returncode, ctl.stdout.strip()) == (0, "web/web2: maint (up -> maint)"), ctl
    assert states(api, "web") == {"web1": "drain", "web2": "maint"}
    assert (api.backend("web", "web1")["override"], api.backend("web", "web1")["weight"]) == (
        "drain", 0)
    wait_until(lambda: site.doc_backends("web") == {"web1": "drain", "web2": "maint"},
               what="the overrides in the file")
    table = run_cli("status", "-c", str(site.config))
    rows = {line.split()[1]: line.split()[3] for line in table.stdout.splitlines()
            if line.startswith("web ")}
    assert (table.returncode, rows) == (0, {"web1": "drain", "web2": "maint"}), table

    unknown = run_cli("ctl", "drain", "web/nope", "--api", api.url, "-c", str(site.config))
    assert unknown.returncode == 1
    assert "refused (404)" in unknown.stderr
    assert api.post("/v1/backends/nope/web1/drain").status_code == 404
    saved = read_json(site.state_dir / "state.json")
    assert saved is not None
    assert {n: b["override"] for n, b in saved["backends"]["web"].items()} == {
        "web1": "drain", "web2": "maint"}
    assert [e["seq"] for e in api.events()] == [1, 2]

    assert signal_and_wait(proc) == 0
    site.doc.unlink()
    _, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web"), what="the file after the restart")
    assert site.doc_backends("web") == {"web1": "drain", "web2": "maint"}
    assert states(api, "web") == {"web1": "drain", "web2": "maint"}
    probes = api.probes()
    wait_until(lambda: api.probes() >= probes + 4, what="a few probes after the restart")
    assert api.events() == []
    assert api.state()["seq"] == 2


def test_probes_go_on_under_maint_and_ready_publishes_the_probed_state_at_once(
        processes: Processes, site: Site) -> None:
    """A backend that dies while in maint stays maint (health down, no event); `ctl ready`
    publishes it down in the same request; `ready` on a healthy drained one brings it up."""
    backends = start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]})
    _, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == {"web1": "up", "web2": "up"},
               what="both up in the file")
    assert api.post("/v1/backends/web/web2/maint").status_code == 200
    assert api.post("/v1/backends/web/web1/drain").status_code == 200

    processes.kill(backends["web2"])
    wait_until(lambda: api.backend("web", "web2")["health"] == "down",
               what="web2's breaker to see it dead under maint")
    web2 = api.backend("web", "web2")
    assert (web2["state"], web2["last_probe"]["ok"]) == ("maint", False)
    assert [e["to"] for e in api.events()] == ["maint", "drain"]

    ready = run_cli("ctl", "ready", "web/web2", "--api", api.url, "-c", str(site.config))
    assert (ready.returncode, ready.stdout.strip()) == (0, "web/web2: ready (maint -> down)")
    assert states(api, "web") == {"web1": "drain", "web2": "down"}
    assert api.post("/v1/backends/web/web1/ready").status_code == 200
    assert states(api, "web") == {"web1": "up", "web2": "down"}
    assert summary(api.events(after=2)) == [("web2", "maint", "down", "admin: ready"),
                                            ("web1", "drain", "up", "admin: ready")]
    wait_until(lambda: site.doc_backends("web") == {"web1": "up", "web2": "down"},
               what="the file to follow")


def test_token_guards_posts_and_events_but_not_state_or_healthz_and_is_never_shown(
        processes: Processes, site: Site) -> None:
    """POSTs and /v1/events answer 401 without or with a wrong token and 200 with it;
    /healthz and /v1/state are open; the token is in no answer, log (debug) or file."""
    start_backends(processes, site, "web1")
    site.write({"web": ["web1"]})
    _, api = site.start(processes, options=["--log-level", "debug"])
    wait_until(lambda: site.doc_backends("web") == {"web1": "up"}, what="web1 up")
    guarded = [("POST", "/v1/backends/web/web1/drain"), ("POST", "/v1/reload"),
               ("GET", "/v1/events?after=0")]
    for method, path in guarded:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": site.token},
                        {"Authorization": f"Bearer {site.token}x"}):
            answer = httpx.request(method, api.url + path, headers=headers, timeout=5)
            assert answer.status_code == 401, (method, path, headers)
    answers = [httpx.request(m, api.url + p, headers=api.headers, timeout=10)
               for m, p in guarded]
    assert [a.status_code for a in answers] == [200, 200, 200]
    open_paths = [httpx.get(api.url + p, timeout=5) for p in ("/healthz", "/v1/state")]
    assert [a.status_code for a in open_paths] == [200, 200]

    shown = [a.text for a in answers + open_paths]
    files = [p for p in site.root.rglob("*") if p.is_file() and p.name != "token"]
    assert not [p for p in files if site.token.encode() in p.read_bytes()]  # logs included
    assert not [text for text in shown if site.token in text]
    assert "reloaded" in processes.log("sentinel").read_text()  # the log was scanned too


def test_non_loopback_listen_without_a_token_is_a_config_error(site: Site) -> None:
    """`api.listen: 0.0.0.0:0` with no token: `sentinel run` exits 2 naming file:line:col."""
    site.config.write_text(f"version: 1\nstate_dir: {site.state_dir}\n"
                           'api: {listen: "0.0.0.0:0"}\nservices: {}\n')
    result = run_cli("run", "-c", str(site.config), timeout=20)
    assert result.returncode == 2
    assert re.search(rf"^{re.escape(str(site.config))}:3:\d+: .*requires api.token",
                     result.stderr, re.M), result.stderr


def test_panic_with_every_backend_killed_keeps_min_up_published_and_ends_with_an_event(
        processes: Processes, site: Site) -> None:
    """min_up 33% of 3: with all three killed the file still lists one up with panic true
    and a `to: panic` event; another backend's return ends panic with its own event and
    the held one goes down then. A restart in panic emits nothing and republishes the same."""
    names = ["web1", "web2", "web3"]
    backends = start_backends(processes, site, *names)
    site.write({"web": names}, min_up="33%")
    proc, api = site.start(processes)
    wait_until(lambda: site.doc_backends("web") == dict.fromkeys(names, "up"), what="all up")
    for backend in backends.values():
        processes.kill(backend)

    def panicking() -> dict[str, Any] | None:
        doc = read_json(site.doc)
        web = doc["services"]["web"] if doc else None
        healths = [b["health"] for b in web["backends"]] if web else []
        return web if web and web["panic"] and healths == ["down"] * 3 else None

    web = wait_until(panicking, what="panic with all three down")
    held = [b["name"] for b in web["backends"] if b["state"] == "up"]
    assert (web["up"], len(held)) == (1, 1)
    assert api.state()["services"]["web"]["panic"] is True
    events = api.events()
    assert [(e["service"], e["backend"], e["from"], e["to"]) for e in events
            if e["to"] == "panic"] == [("web", "", "normal", "panic")]
    assert replay(names, events) == {b["name"]: b["state"] for b in web["backends"]}

    before = view(read_json(site.doc))  # a restart in panic changes nothing
    assert signal_and_wait(proc) == 0
    site.doc.unlink()
    proc, api = site.start(processes)
    wait_until(lambda: site.doc.exists(), what="the file after the restart")
    quiet_for(api, 6)
    assert (view(read_json(site.doc)), api.events()) == (before, [])

    back = next(n for n in names if n not in held)
    start_backends(processes, site, back)

    def panic_over() -> list[tuple[str, str, str]] | None:
        """The events since, once the one ending the panic is served (it is on disk after
        /v1/state shows the panic over)."""
        after = [(e["backend"], e["from"], e["to"]) for e in api.events(after=events[-1]["seq"])]
        return after if ("", "panic", "normal") in after else None

    after = wait_until(panic_over, what="panic to end")
    assert sorted(after) == sorted([(back, "down", "up"), (held[0], "up", "down"),
                                    ("", "panic", "normal")])
    assert after[-1] == ("", "panic", "normal")
    expected = {n: "up" if n == back else "down" for n in names}
    wait_until(lambda: site.doc_backends("web") == expected, what="the file after panic")
    assert read_json(site.doc)["services"]["web"]["panic"] is False  # type: ignore[index]
