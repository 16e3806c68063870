"""Three `sentinel run` processes agreeing through a real etcd (SPEC 12, issue 14).

Each member has its own file and Maglev sinks; the webhook sink (leader
scope) posts to one receiver process shared by all. Backends are real
processes; faults are real: a backend or the leader killed with SIGKILL, one
member cut off from one backend by a firewall rule in its own network
namespace, etcd stopped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.etcd_server import running_etcd
from tests.e2e.cluster_site import LEASE_TTL, ClusterSite, Member
from tests.e2e.helpers import Processes, require_binary, run_cli, wait_until
from tests.e2e.netns import netns
from tests.telemetry.helpers import parse_metrics, sample

pytestmark = pytest.mark.e2e
# etcd revokes expired leases on a 500 ms tick; then a watch, a campaign's transaction
# and /v1/state over HTTP, on a loaded machine
MARGIN = 2.0


@contextmanager
def open_site(tmp_path: Path, processes: Processes, namespaced: Sequence[str] = ()
              ) -> Iterator[ClusterSite]:
    """etcd and a site (not started); members in `namespaced` get a namespace each."""
    with ExitStack() as stack:
        spaces = {name: stack.enter_context(netns(name)) for name in namespaced}
        host = next(iter(spaces.values())).root_ip if spaces else "127.0.0.1"
        if len(spaces) > 1:
            raise NotImplementedError("one namespaced member: its gateway is the host")
        etcd = stack.enter_context(running_etcd(tmp_path / "etcd", host=host))
        yield ClusterSite(tmp_path, processes, etcd, host=host, namespaces=spaces)


def delivered(site: ClusterSite) -> dict[int, set[str]]:
    """{seq: the webhook-ids it was delivered under}."""
    out: dict[int, set[str]] = {}
    for d in site.deliveries():
        assert d["id"] == d["event"]["id"]  # webhook-id is the event id
        out.setdefault(d["event"]["seq"], set()).add(d["id"])
    return out


def delivery_mark(site: ClusterSite) -> int:
    """The seq the leader recorded as delivered by the webhook sink (-1: none yet)."""
    key = base64.b64encode(b"/sentinel/e2e/delivered/ops").decode()
    answer = httpx.post(f"{site.etcd.url}/v3/kv/range", json={"key": key}, timeout=5).json()
    kvs = answer.get("kvs", [])
    return int(base64.b64decode(kvs[0]["value"])) if kvs else -1


def events(member: Member) -> list[tuple[int, str, str]]:
    """(seq, backend, to) of the events its API holds (GET /v1/events)."""
    doc = httpx.get(f"{member.url}/v1/events", timeout=5,
                    headers={"Authorization": "Bearer cluster-e2e-token"}).json()
    return [(e["seq"], e["backend"], e["to"]) for e in doc["events"]]


def backend_entry(member: Member, name: str) -> dict[str, Any]:
    """A backend's entry in the member's /v1/state."""
    return dict(next(b for b in member.state()["services"]["web"]["backends"]
                     if b["name"] == name))


def turn_gaps(site: ClusterSite, interval: float) -> dict[str, float]:
    """{backend: how far apart in each interval its two probers last checked it}, each
    member's own last probe of the backends it probes (from /v1/state)."""
    seen: dict[str, list[float]] = {}
    for m in site.live():
        for b in m.state()["services"]["web"]["backends"]:
            if m.name in b["probers"] and b["last_probe"] is not None:
                at = datetime.fromisoformat(b["last_probe"]["time"]).timestamp()
                seen.setdefault(b["name"], []).append(at % interval)
    return {name: min(abs(a - b), interval - abs(a - b))
            for name, (a, b) in ((n, t) for n, t in seen.items() if len(t) == 2)}


def test_a_dead_backend_goes_down_everywhere_at_one_seq(tmp_path: Path,
                                                        processes: Processes) -> None:
    """The two probers of each backend take turns, half an interval apart (100 of 200 ms;
    starts batched up to 45 ms early). Kill a backend: all three file sinks show it down
    at the same seq, the Maglev tables are the same bytes on every member, and the
    receiver gets exactly one delivery of the event; each member's /metrics says who
    leads and what it probes, in a form promtool accepts."""
    with open_site(tmp_path, processes) as site:
        site.start()

        def taking_turns() -> bool:  # most on the dot, none close (random turns: 0-100 ms)
            gaps = turn_gaps(site, 0.2)
            return (gaps.keys() == set(site.backends) and min(gaps.values()) >= 0.03
                    and sum(gap >= 0.08 for gap in gaps.values()) >= 4)

        wait_until(taking_turns, what="each backend's probers checking it in turns")
        before = {m.maglev() for m in site.live()}
        assert len(before) == 1
        site.kill_backend("web2")
        site.wait_all(lambda m: m.states()["web2"] == "down", what="web2 down everywhere")
        assert {m.view()["seq"] for m in site.live()} == {1}  # type: ignore[index]
        site.wait_all(lambda m: m.maglev() not in before, what="the tables rebuilt")
        assert len({m.maglev() for m in site.live()}) == 1

        def sidecar(m: Member) -> dict[str, Any]:
            return dict(json.loads((m.state_dir / "maglev" / "web.json").read_text()))

        # the sink writes the table, then its sidecar: wait for the sidecar of that table
        site.wait_all(lambda m: sidecar(m)["sha256"] == hashlib.sha256(
            m.maglev() or b"").hexdigest(), what="the sidecars of the new tables")
        sidecars = [sidecar(m) for m in site.live()]
        assert len({(s["sha256"], tuple(s["backends"])) for s in sidecars}) == 1
        assert "web2" not in [b for s in sidecars for b in s["backends"]
                              if s["weights"][s["backends"].index(b)]]
        wait_until(lambda: delivery_mark(site) >= 1, what="the delivery recorded")
        assert delivered(site) == {1: {site.deliveries()[0]["id"]}}
        assert [d["event"]["backend"] for d in site.deliveries()] == ["web2"]
        scrapes = {m.name: httpx.get(f"{m.url}/metrics", timeout=5).text for m in site.live()}
        samples = {name: parse_metrics(text) for name, text in scrapes.items()}
        assert sum(sample(s, "sentinel_cluster_leader") or 0 for s in samples.values()) == 1
        assert all(sample(s, "sentinel_cluster_ok") == 1 and
                   sample(s, "sentinel_cluster_members") == 3 for s in samples.values())
        assert sum(sample(s, "sentinel_cluster_probed_backends") or 0
                   for s in samples.values()) == 12  # 6 backends, 2 probers each
        checked = subprocess.run([require_binary("promtool"), "check", "metrics"],
                                 input=scrapes["n1"], capture_output=True, text=True,
                                 timeout=60, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_leader_killed_a_new_one_resumes_without_loss_or_repeat(
        tmp_path: Path, processes: Processes) -> None:
    """SIGKILL the leader while the receiver refuses its delivery: a new leader within
    the lease, the backends reassigned to the two left, the refused event delivered by
    the new leader under its id, no event lost or numbered twice, nothing flapping."""
    with open_site(tmp_path, processes) as site:
        site.start()
        site.kill_backend("web2")
        site.wait_all(lambda m: m.states()["web2"] == "down", what="web2 down")
        wait_until(lambda: delivery_mark(site) >= 1, what="event 1 delivered")
        (tmp_path / "receiver" / "accept").unlink()  # the receiver answers 503 from now
        site.kill_backend("web4")
        site.wait_all(lambda m: m.states()["web4"] == "down", what="web4 down")
        wait_until(lambda: any(json.loads(line)["status"] == 503 for line in
                               (tmp_path / "deliveries.jsonl").read_text().splitlines()),
                   what="the leader's refused attempt")
        old = site.leader()
        killed = time.monotonic()
        processes.kill(old.proc)  # type: ignore[arg-type]  # SIGKILL, its lease left to lapse
        first = wait_until(lambda: next((m for m in site.live()
                                         if m.state()["cluster"]["leading"]), None),
                           what="a member leading")
        took = time.monotonic() - killed
        assert took <= LEASE_TTL + MARGIN, f"a new leader {took:.2f}s after the kill"
        new = site.leader()
        assert new.name == first.name != old.name
        site.wait_all(lambda m: len(m.state()["cluster"]["members"]) == 2,
                      what="two members left")
        site.wait_all(lambda m: all(set(b["probers"]) <= {x.name for x in site.live()}
                                    and b["probers"]
                                    for b in m.state()["services"]["web"]["backends"]),
                      what="every backend reassigned to the living")
        (tmp_path / "receiver" / "accept").touch()
        site.start_backend("web2")
        site.wait_all(lambda m: m.states()["web2"] == "up", what="web2 up again")
        wait_until(lambda: set(delivered(site)) == {1, 2, 3}, timeout=20,
                   what="every event delivered")
        assert all(len(ids) == 1 for ids in delivered(site).values())
        for member in site.live():
            assert events(member) == [(1, "web2", "down"), (2, "web4", "down"),
                                      (3, "web2", "up")]


def test_a_member_killed_its_backends_move_without_an_event(
        tmp_path: Path, processes: Processes) -> None:
    """SIGKILL a member that does not lead: within the lease its backends go to the two
    left, who probe them and say up; no event anywhere, no delivery."""
    with open_site(tmp_path, processes) as site:
        site.start()
        leader = site.leader()
        victim = next(m for m in site.live() if m is not leader)
        moved = [b["name"] for b in leader.state()["services"]["web"]["backends"]
                 if victim.name in b["probers"]]
        assert moved
        killed = time.monotonic()
        processes.kill(victim.proc)  # type: ignore[arg-type]  # SIGKILL: its lease lapses
        left = {m.name for m in site.live()}

        def reassigned(m: Member) -> bool:
            return all(set(b["probers"]) == left
                       for b in m.state()["services"]["web"]["backends"])

        site.wait_all(reassigned, what="every backend probed by the two left")
        took = time.monotonic() - killed
        assert took <= LEASE_TTL + MARGIN, f"reassigned {took:.2f}s after the kill"
        site.wait_all(lambda m: all(backend_entry(m, name)["observers"].keys() == left
                                    for name in moved), what="the moved backends reported")
        for member in site.live():
            assert member.states() == dict.fromkeys(site.backends, "up")
            assert events(member) == []
        assert site.deliveries() == []


def test_a_member_cut_off_from_one_backend_takes_it_down_nowhere(
        tmp_path: Path, processes: Processes) -> None:
    """n3 runs in its own network namespace; a firewall rule there refuses its
    connections to one backend it probes: n3 sees that backend fail, the other prober
    does not, and it stays up in every member's sinks; no event, no delivery."""
    with open_site(tmp_path, processes, namespaced=["n3"]) as site:
        site.start()
        n1, n3 = site.members["n1"], site.members["n3"]
        target = next(b["name"] for b in n1.state()["services"]["web"]["backends"]
                      if "n3" in b["probers"])
        site.namespaces["n3"].block(site.host, site.backends[target])
        wait_until(lambda: backend_entry(n1, target)["observers"].get("n3") == "down",
                   what=f"n3's down observation of {target} at n1")
        leader = site.leader()
        wait_until(lambda: backend_entry(leader, target)["observers"].get("n3") == "down",
                   what="the leader to hold it")
        assert backend_entry(n3, target)["last_probe"]["ok"] is False
        site.kill_backend("web6" if target != "web6" else "web5")  # a real failure after it
        gone = "web6" if target != "web6" else "web5"
        site.wait_all(lambda m: m.states()[gone] == "down", what=f"{gone} down")
        for member in site.live():
            assert member.states()[target] == "up"
            assert events(member) == [(1, gone, "down")]


def test_etcd_stopped_sinks_stay_then_catch_up(tmp_path: Path,
                                               processes: Processes) -> None:
    """With etcd stopped the members say cluster.ok false and keep their sinks as they
    were, even when a backend dies meanwhile; when etcd returns they agree on it."""
    with open_site(tmp_path, processes) as site:
        site.start()
        site.etcd.stop()
        site.wait_all(lambda m: m.state()["cluster"]["ok"] is False, what="cluster.ok false")
        assert all(m.state()["cluster"]["error"] for m in site.live())
        site.kill_backend("web3")
        probers = backend_entry(site.members["n1"], "web3")["probers"]
        wait_until(lambda: all((backend_entry(site.members[p], "web3")["last_probe"] or {})
                               .get("ok") is False and
                               backend_entry(site.members[p], "web3")["fails"] >= 2
                               for p in probers), what="web3's probers see it fail")
        assert all(m.states() == dict.fromkeys(site.backends, "up") for m in site.live())
        site.etcd.start()
        site.wait_all(lambda m: m.states()["web3"] == "down"
                      and m.state()["cluster"]["ok"], timeout=30,
                      what="caught up: web3 down, cluster ok")
        assert {m.view()["seq"] for m in site.live()} == {1}  # type: ignore[index]


def test_a_drain_through_one_member_shows_on_all(tmp_path: Path,
                                                 processes: Processes) -> None:
    """POST drain to a member that does not lead: all three file sinks show it, and
    `sentinel status` there shows the cluster and who probes it; ready through the
    leader lifts it everywhere."""
    with open_site(tmp_path, processes) as site:
        site.start()
        leader = site.leader()
        one = next(m for m in site.live() if m is not leader)
        other = leader
        answer = one.post("/v1/backends/web/web5/drain")
        assert answer.status_code == 200, answer.text
        assert [(e["backend"], e["to"]) for e in answer.json()["events"]] == [
            ("web5", "drain")]
        site.wait_all(lambda m: m.states()["web5"] == "drain", what="drained on all")
        shown = run_cli("status", "--api", one.url)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0] == (f"cluster: node {one.name}, leader {leader.name}; ok; members "
                            f"n1 n2 n3; probers 2, quorum 2")
        assert lines[1].split()[-1] == "PROBERS"
        web5 = next(line for line in lines if " web5 " in line)
        assert " drain " in web5
        assert sorted(web5.split()[-2:]) == sorted(
            f"{p}:up" for p in backend_entry(one, "web5")["probers"])
        assert other.post("/v1/backends/web/web5/ready").status_code == 200
        site.wait_all(lambda m: m.states()["web5"] == "up", what="ready on all")
        assert [(e[1], e[2]) for e in events(one)] == [("web5", "drain"), ("web5", "up")]

