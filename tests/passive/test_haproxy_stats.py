"""`show stat` counters to signals: the pure parser and delta, the mapping of servers
to backends through bindings, and the poller against a real HAProxy whose one server
accepts and closes every connection."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import trio

from sentinel.config.model import (
    BackendConfig,
    Config,
    PassiveConfig,
    ServiceConfig,
    SinkBinding,
    SinkConfig,
)
from sentinel.passive.base import Signal
from sentinel.passive.haproxy_stats import grown, parse_stat, poll_stats
from sentinel.passive.sources import haproxy_stats
from sentinel.sinks.haproxy.options import HAProxyBinding, HAProxyOptions
from tests.e2e.balancers import start_haproxy
from tests.e2e.helpers import (
    LOOPBACK,
    Processes,
    free_port,
    port_open,
    start_backend,
    wait_until,
)
from tests.e2e.traffic import fetch

HEADER = "# pxname,svname,qcur,econ,eresp,status,hrsp_5xx,\n"
CLOSER = Path(__file__).with_name("closing_server.py")


def stat(*rows: str) -> str:
    """A `show stat` answer with the given rows (pxname,svname,qcur,econ,eresp,status,5xx)."""
    return HEADER + "".join(f"{row},\n" for row in rows) + "\n"


def test_parse_stat_keeps_server_rows_and_reads_empty_cells_as_zero() -> None:
    """FRONTEND/BACKEND rows are left out; an empty hrsp_5xx (mode tcp) is 0."""
    text = stat("fe,FRONTEND,,,,OPEN,0", "web,s1,0,1,2,UP,3", "web,s2,0,0,0,UP,",
                "web,BACKEND,0,1,2,UP,3")
    assert parse_stat(text) == {("web", "s1"): {"econ": 1, "eresp": 2, "hrsp_5xx": 3},
                                ("web", "s2"): {"econ": 0, "eresp": 0, "hrsp_5xx": 0}}


@pytest.mark.parametrize(("text", "error"), [
    ("Unknown command\n", "not `show stat` output"),
    ("# pxname,svname\n", "lacks column(s) econ, eresp, hrsp_5xx")])
def test_parse_stat_refuses_what_is_not_show_stat(text: str, error: str) -> None:
    """Another answer (a permission error, an old HAProxy) is a ValueError naming it."""
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_stat(text)


def test_grown_names_what_grew_and_restarts_are_baselines() -> None:
    """Growth is reported per counter; a new server, or counters that fell (a reloaded
    HAProxy), give nothing."""
    before = parse_stat(stat("web,s1,0,1,0,UP,0", "web,s2,0,5,5,UP,5"))
    after = parse_stat(stat("web,s1,0,3,1,UP,2", "web,s2,0,0,0,UP,0", "web,s3,0,9,9,UP,9"))
    assert grown(before, after) == {
        ("web", "s1"): "2 connection errors (econ), 1 response error (eresp), "
                       "2 5xx responses (hrsp_5xx)"}
    assert grown(after, after) == {}


def test_servers_map_to_backends_through_bindings() -> None:
    """The binding's backend and server names are used; one poller per sink, at the
    shortest interval of the services reading it."""
    backends = (BackendConfig("b1", "127.0.0.1:1", "127.0.0.1", 1),
                BackendConfig("b2", "127.0.0.1:2", "127.0.0.1", 2))
    web = ServiceConfig("web", backends, sinks=(SinkBinding("lb", HAProxyBinding(
        backend="be_web", servers={"b1": "srv1"})),), passive=PassiveConfig(
        haproxy="lb", haproxy_interval=2.0))
    api = ServiceConfig("api", backends[:1], sinks=(SinkBinding("lb", HAProxyBinding()),),
                        passive=PassiveConfig(haproxy="lb", haproxy_interval=0.5))
    config = Config("x", "x", sinks=(SinkConfig("lb", "haproxy", HAProxyOptions("/s")),),
                    services=(web, api))
    [source] = haproxy_stats(config)
    assert (source.socket, source.interval) == ("/s", 0.5)
    assert source.servers == {("be_web", "srv1"): (("web", "b1"),),
                              ("be_web", "b2"): (("web", "b2"),),
                              ("api", "b1"): (("api", "b1"),)}


HTTP_SECTIONS = """\
frontend fe_web
    mode http
    bind {ip}:{port}
    default_backend web
backend web
    mode http
    balance roundrobin
    server good {ip}:{good}
    server bad {ip}:{bad}
"""


@pytest.mark.e2e
async def test_poller_reports_the_failing_server_of_a_real_haproxy(
        tmp_path: Path, processes: Processes) -> None:
    """Requests through a real HAProxy: the server that closes every connection grows
    its error counters and is reported; the healthy one is not."""
    good, bad, front = free_port(), free_port(), free_port()
    start_backend(processes, good, "good")
    processes.start([sys.executable, str(CLOSER), str(bad)], "closer")
    wait_until(lambda: port_open(bad), what="the closing backend")
    haproxy = start_haproxy(processes, tmp_path / "haproxy", [HTTP_SECTIONS.format(
        ip=LOOPBACK, port=front, good=good, bad=bad)])
    source = haproxy_stats(Config("x", "x", sinks=(SinkConfig("lb", "haproxy", HAProxyOptions(
        str(haproxy.socket))),), services=(ServiceConfig(
            "web", (BackendConfig("good", "", LOOPBACK, good),
                    BackendConfig("bad", "", LOOPBACK, bad)),
            sinks=(SinkBinding("lb", HAProxyBinding()),),
            passive=PassiveConfig(haproxy="lb", haproxy_interval=0.1)),)))[0]
    got: list[Signal] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(poll_stats, source, got.append)
        await trio.sleep(0.3)  # past the first read: the baseline
        with trio.fail_after(10):
            while not got:
                await trio.to_thread.run_sync(fetch, front)
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert {(s.service, s.backend, s.source) for s in got} == {
        ("web", "bad", "haproxy show stat")}
    assert "(eresp)" in got[0].error or "(econ)" in got[0].error
