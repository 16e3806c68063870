"""`sentinel probe` with grpc://, grpcs://, dns:// and agent:// URLs: what each builds, and
the real command against real servers (exit 0 healthy, 1 unhealthy, 2 bad URL)."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.cli.probe import parse_probe_url
from sentinel.config.model import AgentSpec, DnsSpec, GrpcSpec
from sentinel.errors import ConfigError
from tests.config import run_sentinel

from .conftest import ReferenceServer


@pytest.mark.parametrize(("url", "kind", "spec", "port"), [
    ("grpc://10.0.0.5:50051/shop.Cart", "grpc", GrpcSpec("shop.Cart"), 50051),
    ("grpc://10.0.0.5:50051", "grpc", GrpcSpec(""), 50051),
    ("grpcs://api.example:443/", "grpc", GrpcSpec("", tls=True), 443),
    ("dns://10.0.0.53/www.example?qtype=aaaa", "dns", DnsSpec("www.example", "AAAA"), 53),
    ("dns://10.0.0.53:5353/www.example", "dns", DnsSpec("www.example"), 5353),
    ("agent://10.0.0.5:5555", "agent", AgentSpec(), 5555),
])
def test_urls(url: str, kind: str, spec: object, port: int) -> None:
    """Each URL gives the probe a config section would, aimed at its host and port."""
    config, target = parse_probe_url(url, 2.0)
    assert (config.type, config.spec, config.timing.timeout) == (kind, spec, 2.0)
    assert target.port == port


@pytest.mark.parametrize(("url", "message"), [
    ("dns://10.0.0.53/www.example?qtype=AAA", "unknown query type 'AAA'"),
    ("dns://10.0.0.53", "no name to query"),
    ("agent://10.0.0.5", "an agent URL needs a port"),
    ("grpc://10.0.0.5/x", "a grpc URL needs a port"),
])
def test_bad_urls(url: str, message: str) -> None:
    """A bad URL is a ConfigError saying what is wrong."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_probe_url(url, 1.0)


def test_probe_grpc(grpc_server: ReferenceServer, tmp_path: Path) -> None:
    """`sentinel probe grpc://...`: SERVING exits 0, NOT_SERVING exits 1 naming it."""
    url = f"grpc://127.0.0.1:{grpc_server.port}/web"
    grpc_server.command("set web SERVING")
    done = run_sentinel("probe", url, "--timeout", "3s", cwd=tmp_path)
    assert (done.returncode, done.stdout.startswith(f"{url}: healthy in ")) == (0, True), done
    grpc_server.command("set web NOT_SERVING")
    done = run_sentinel("probe", url, "--timeout", "3s", cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stdout.startswith(f"{url}: unhealthy (body): service 'web' is NOT_SERVING in ")


def test_probe_dns(dnsmasq: int, tmp_path: Path) -> None:
    """`sentinel probe dns://...`: an answer exits 0, NXDOMAIN exits 1, a bad qtype 2."""
    base = f"dns://127.0.0.1:{dnsmasq}"
    assert run_sentinel("probe", f"{base}/ok.test?qtype=A", cwd=tmp_path).returncode == 0
    done = run_sentinel("probe", f"{base}/missing.test", cwd=tmp_path)
    assert done.returncode == 1, done
    assert "unhealthy (status): rcode NXDOMAIN, expected NOERROR" in done.stdout
    done = run_sentinel("probe", f"{base}/ok.test?qtype=AAA", cwd=tmp_path)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr


@pytest.fixture
def agent_port() -> Iterator[int]:
    """An agent answering `drain 50%` to every connection, in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                conn.sendall(b"drain 50%\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=5)


def test_probe_agent(agent_port: int, tmp_path: Path) -> None:
    """`sentinel probe agent://...` prints what the agent said."""
    url = f"agent://127.0.0.1:{agent_port}"
    done = run_sentinel("probe", url, cwd=tmp_path)
    assert done.returncode == 0, done
    assert re.fullmatch(rf"{re.escape(url)}: healthy in [\d.]+ms \(agent: drain, weight 50%\)\n",
                        done.stdout), done.stdout
