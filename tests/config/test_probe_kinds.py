"""The grpc, dns and agent probe sections and the `source` key: what loads, and each
mistake's positioned error."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from sentinel.config.model import AgentSpec, DnsSpec, GrpcSpec
from sentinel.sinks.registry import load_config
from tests.config import check_schema_verdict, error_lines, run_sentinel, write_config
from tests.snippets import config_snippets

HEAD = """\
services:
  web:
    backends: [127.0.0.1:80]
    probe:
"""


def load(tmp_path: Path, probe: str) -> object:
    """The web service's probe spec from a config whose probe section is `probe`."""
    path = write_config(tmp_path, HEAD + textwrap.indent(textwrap.dedent(probe), "      "))
    return load_config(path).services[0].probe.spec


def test_grpc_loads(tmp_path: Path) -> None:
    """A grpc section with every key, and the defaults ("" is the whole server)."""
    assert load(tmp_path, "type: grpc\nservice: shop.Cart\ntls: true\nsni: api.example\n"
                          "verify: false\n") == GrpcSpec("shop.Cart", True, "api.example", False)
    assert load(tmp_path, "type: grpc\nservice: ''\n") == GrpcSpec()


def test_dns_loads(tmp_path: Path) -> None:
    """A dns section: names upper-cased, addresses canonical, a string is a regex."""
    spec = load(tmp_path, "type: dns\nname: www.example\nqtype: aaaa\nexpect_rcode: nxdomain\n"
                          "expect_answer: ['2001:DB8::0001', 192.0.2.1]\n")
    assert spec == DnsSpec("www.example", "AAAA", "NXDOMAIN",
                           frozenset({"2001:db8::1", "192.0.2.1"}))
    spec = load(tmp_path, "type: dns\nname: _sip._tcp.example\nqtype: SRV\n"
                          "expect_answer: 'sip\\d\\.example'\n")
    assert isinstance(spec, DnsSpec)
    assert spec.expect_answer == re.compile(r"sip\d\.example")


def test_agent_loads(tmp_path: Path) -> None:
    """An agent section: the port, and the send text with its escapes as bytes."""
    assert load(tmp_path, "type: agent\nagent_port: 5555\nagent_send: 'web\\n'\n") == AgentSpec(
        5555, b"web\n")
    assert load(tmp_path, "type: agent\n") == AgentSpec()


def test_source_loads(tmp_path: Path) -> None:
    """`source` on network probes: any local address (all of 127.0.0.0/8 is), canonical."""
    for probe, source in (("type: tcp\nsource: 127.0.0.2\n", "127.0.0.2"),
                          ("type: http\nsource: '0:0::1'\n", "::1"),
                          ("type: dns\nname: a.example\nsource: 127.9.9.9\n", "127.9.9.9"),
                          ("type: https\n", None)):
        path = write_config(tmp_path, HEAD + textwrap.indent(probe, "      "))
        assert load_config(path).services[0].probe.source == source


CASES = [
    ("grpc-expect-body", "type: grpc\nexpect_body: ok\n",
     "6:7: services.web.probe.expect_body: unknown key 'expect_body'; expected one of: "
     "down_interval, fast_interval, interval, jitter, service, sni, source, timeout, tls, type, "
     "verify"),
    ("grpc-service-not-text", "type: grpc\nservice: [a]\n",
     "6:16: services.web.probe.service: expected a gRPC service name, got a list"),
    ("dns-no-name", "type: dns\nqtype: A\n",
     "5:7: services.web.probe: a dns probe needs `name` (the name to query)"),
    ("dns-unknown-qtype", "type: dns\nname: example.com\nqtype: AAA\n",
     "7:14: services.web.probe.qtype: unknown query type 'AAA'; expected a record type such "
     "as A, AAAA, CNAME, MX, NS, SOA, SRV, TXT"),
    ("dns-meta-qtype", "type: dns\nname: example.com\nqtype: AXFR\n",
     "7:14: services.web.probe.qtype: AXFR is not a record type a probe can ask for"),
    ("dns-bad-rcode", "type: dns\nname: example.com\nexpect_rcode: NOTOK\n",
     "7:21: services.web.probe.expect_rcode: unknown rcode 'NOTOK'; expected one of "
     "NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ..."),
    ("dns-bad-name", f"type: dns\nname: {'x' * 64}.example\n",
     f"6:13: services.web.probe.name: not a DNS name: '{'x' * 64}.example' "
     "(A DNS label is > 63 octets long.)"),
    ("dns-bad-address", "type: dns\nname: a.example\nexpect_answer: [192.0.2.1, web]\n",
     "7:34: services.web.probe.expect_answer[1]: expected an IPv4 or IPv6 address, got 'web'"),
    ("dns-bad-regex", "type: dns\nname: a.example\nexpect_answer: '(['\n",
     "7:22: services.web.probe.expect_answer: invalid regex '([': unterminated character "
     "set at position 1"),
    ("agent-port", "type: agent\nagent_port: 70000\n",
     "6:19: services.web.probe.agent_port: must be 1..65535, got 70000"),
    ("agent-send-escape", "type: agent\nagent_send: 'x\\x4'\n",
     "6:19: services.web.probe.agent_send: bad escape: truncated \\xXX escape"),
    ("agent-with-send", "type: agent\nsend: 'x'\n",
     "6:7: services.web.probe.send: unknown key 'send'; expected one of: agent_port, "
     "agent_send, down_interval, fast_interval, interval, jitter, source, timeout, type"),
    ("source-not-local", "type: tcp\nsource: 192.0.2.77\n",
     "6:15: services.web.probe.source: 192.0.2.77 is not an address of this host (binding to "
     "it failed: Cannot assign requested address)"),
    ("source-not-an-address", "type: agent\nsource: web1\n",
     "6:15: services.web.probe.source: expected an IP address of this host, got 'web1'"),
    ("script-source", "type: script\ncommand: 'true'\nsource: 127.0.0.2\n",
     "7:7: services.web.probe.source: unknown key 'source'; expected one of: command, "
     "down_interval, fast_interval, interval, jitter, timeout, type"),
]


# Why `sentinel schema` cannot refuse a case; the schema refuses the others.
LOADER_ONLY = {
    "dns-unknown-qtype": "the record types are dnspython's, in any case",
    "dns-meta-qtype": "the record types are dnspython's, in any case",
    "dns-bad-rcode": "the rcodes are dnspython's, in any case",
    "dns-bad-name": "the length of each label of a DNS name",
    "agent-send-escape": "escapes are decoded by the loader",
    "source-not-local": "whether an address belongs to this host",
}


@pytest.mark.parametrize(("probe", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_error_line(tmp_path: Path, probe: str, expected: str) -> None:
    """Each mistake is one `file:line:col: key.path: message` line."""
    path = write_config(tmp_path, HEAD + textwrap.indent(probe, "      "))
    assert error_lines(path) == [f"{path}:{expected}"]


@pytest.mark.parametrize(("case", "probe", "expected"), CASES, ids=[c[0] for c in CASES])
def test_schema_refuses_what_it_can(case: str, probe: str, expected: str) -> None:
    """The schema refuses each mistake at its key path, unless only the loader can see it."""
    document = yaml.safe_load(HEAD + textwrap.indent(probe, "      "))
    check_schema_verdict(document, expected.split(": ")[1], LOADER_ONLY.get(case, ""))


def test_check_exits_2(tmp_path: Path) -> None:
    """`sentinel check` prints the line and exits 2, no traceback."""
    write_config(tmp_path, HEAD + "      type: dns\n      name: a.example\n      qtype: AAA\n")
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("sentinel.yaml:7:14: services.web.probe.qtype: unknown")
    assert "Traceback" not in done.stderr


def test_doc_examples_load(tmp_path: Path) -> None:
    """The docs' grpc, dns and agent examples are valid configs of their kind."""
    blocks = [block for _, block in config_snippets()]
    found = {}
    for kind in ("grpc", "dns", "agent"):
        block = next(b for b in blocks if re.search(rf"type: {kind}\b", b))
        config = load_config(write_config(tmp_path, block, f"{kind}.yaml"))
        found[kind] = config.services[0].probe.type
    assert found == {"grpc": "grpc", "dns": "dns", "agent": "agent"}
