"""A service's `checks:` with `require`, and its `agent:` block: what loads, and each
mistake's positioned error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sentinel.config.model import AgentSpec, CheckConfig, ServiceConfig, Timing
from sentinel.sinks.registry import load_config
from tests.config import error_lines, write_config
from tests.snippets import config_snippets

HEAD = """\
services:
  web:
    backends: [127.0.0.1:80]
"""


def load(tmp_path: Path, service: str, head: str = HEAD) -> ServiceConfig:
    """The web service of a config whose service section ends with `service`."""
    path = write_config(tmp_path, head + textwrap.indent(textwrap.dedent(service), "    "))
    return load_config(path).services[0]


def test_checks_load_with_defaults_merged_under_each(tmp_path: Path) -> None:
    """Each check is a probe section of its own kind; the defaults' probe timing is merged
    under every entry; names default to the type; `require` is kept as a count."""
    head = "defaults:\n  probe: {interval: 1s, timeout: 300ms}\n" + HEAD
    svc = load(tmp_path, """\
        checks:
          - {type: http, path: /healthz}
          - {type: grpc, interval: 2s}
          - {type: tcp, name: raw}
        require: 2
        """, head)
    assert [(c.name, c.probe.type) for c in svc.checks] == [
        ("http", "http"), ("grpc", "grpc"), ("raw", "tcp")]
    assert svc.checks[0].probe.timing == Timing(1.0, 1.0, 1.0, 0.3)
    assert svc.checks[1].probe.timing == Timing(2.0, 2.0, 2.0, 0.3)
    assert svc.require == 2
    assert svc.probe == svc.checks[0].probe
    assert svc.entries == svc.checks


@pytest.mark.parametrize(("require", "count"), [("all", 3), ("any", 1), ("3", 3), (None, 3)])
def test_require_words(tmp_path: Path, require: str | None, count: int) -> None:
    """`all` (the default) is every check, `any` one, a number that many."""
    line = f"require: {require}\n" if require else ""
    svc = load(tmp_path, "checks: [{type: tcp}, {type: http}, {type: grpc}]\n" + line)
    assert svc.require == count


def test_one_probe_is_one_entry(tmp_path: Path) -> None:
    """A service with `probe:` has that probe as its only entry, named by its type."""
    svc = load(tmp_path, "probe: {type: http}\n")
    assert svc.checks == ()
    assert svc.entries == (CheckConfig("http", svc.probe),)


def test_agent_block_loads(tmp_path: Path) -> None:
    """`agent:` takes `port`/`send` or the agent probe's `agent_port`/`agent_send`, and
    its own interval and timeout."""
    svc = load(tmp_path, "agent: {port: 9777, send: 'web\\n', interval: 500ms}\n")
    assert svc.agent is not None
    assert svc.agent.spec == AgentSpec(9777, b"web\n")
    assert svc.agent.timing == Timing(0.5, 0.5, 0.5, 0.5)
    moved = load(tmp_path, "agent: {type: agent, agent_port: 9777, agent_send: x, "
                           "timeout: 200ms}\n")
    assert moved.agent is not None
    assert moved.agent.spec == AgentSpec(9777, b"x")
    assert moved.agent.timing.timeout == 0.2
    plain = load(tmp_path, "agent: {}\n").agent
    assert plain is not None
    assert (plain.spec, plain.timing) == (AgentSpec(), Timing(2.0, 2.0, 2.0, 1.0))
    sourced = load(tmp_path, "agent: {port: 9777, source: 127.0.0.2}\n").agent
    assert sourced is not None
    assert (sourced.source, plain.source) == ("127.0.0.2", None)


CASES = [
    ("probe-and-checks", "probe: {type: tcp}\nchecks: [{type: tcp}]\n",
     "5:5: services.web.checks: give either `probe` or `checks`, not both"),
    ("empty-checks", "checks: []\n",
     "4:13: services.web.checks: must list at least one check"),
    ("require-too-large", "checks: [{type: tcp}, {type: http}]\nrequire: 3\n",
     "5:14: services.web.require: require (3) is more than the 2 checks listed"),
    ("require-zero", "checks: [{type: tcp}]\nrequire: 0\n",
     "5:14: services.web.require: must be at least 1, got 0"),
    ("require-word", "checks: [{type: tcp}, {type: http}]\nrequire: most\n",
     "5:14: services.web.require: expected all, any or a number of checks, got 'most'"),
    ("require-without-checks", "probe: {type: tcp}\nrequire: any\n",
     "5:5: services.web.require: `require` applies to `checks:`; this service has one "
     "`probe`"),
    ("duplicate-names", "checks: [{type: tcp}, {type: tcp, send: x}]\n",
     "4:27: services.web.checks[1]: two checks named 'tcp': give each a `name`"),
    ("check-null", "checks: [{type: tcp}, null, {type: http}]\n",
     "4:27: services.web.checks[1]: an empty entry is no check: give a probe section "
     "({type: http, ...})"),
    ("check-not-a-map", "checks: [tcp]\n",
     "4:14: services.web.checks[0]: expected a mapping, got 'tcp'"),
    ("check-bad-key", "checks: [{type: grpc, expect_body: ok}]\n",
     "4:27: services.web.checks[0].expect_body: unknown key 'expect_body'; expected one of: "
     "down_interval, fast_interval, interval, jitter, service, sni, source, timeout, tls, type, "
     "verify"),
    ("agent-both-ports", "agent: {port: 1, agent_port: 2}\n",
     "4:22: services.web.agent.agent_port: `port` and `agent_port` are the same setting; "
     "give one"),
    ("agent-bad-type", "agent: {type: tcp}\n",
     "4:19: services.web.agent.type: an agent block is of type agent, got 'tcp'"),
    ("agent-fast-interval", "agent: {fast_interval: 1s}\n",
     "4:13: services.web.agent.fast_interval: unknown key 'fast_interval'; expected one of: "
     "agent_port, agent_send, interval, port, send, source, timeout, type"),
    ("agent-timeout", "agent: {interval: 1s, timeout: 2s}\n",
     "4:36: services.web.agent.timeout: timeout (2s) must not be longer than interval (1s)"),
]


@pytest.mark.parametrize(("service", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_error_line(tmp_path: Path, service: str, expected: str) -> None:
    """Each mistake is one `file:line:col: key.path: message` line."""
    path = write_config(tmp_path, HEAD + textwrap.indent(service, "    "))
    assert error_lines(path) == [f"{path}:{expected}"]


def test_doc_examples_load(tmp_path: Path) -> None:
    """The docs' composite-checks and agent-beside-a-probe examples are valid configs."""
    blocks = [block for _, block in config_snippets()]
    composite = next(b for b in blocks if "    checks:\n" in b)
    beside = next(b for b in blocks if "    agent: {port: 9777" in b)
    cart = load_config(write_config(tmp_path, composite, "checks.yaml")).services[0]
    assert ([c.name for c in cart.checks], cart.require) == (["http", "grpc", "redis"], 2)
    app = load_config(write_config(tmp_path, beside, "agent.yaml")).services[0]
    assert app.agent is not None
    assert (app.probe.type, app.agent.spec) == ("http", AgentSpec(9777, b"app\n"))
