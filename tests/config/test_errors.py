"""One test per configuration error class: the exact `file:line:col: key.path: message`
line, from the loader and from `sentinel check` run as a real process (exit 2, the
line on stderr, no traceback)."""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from sentinel.configload import load_config
from sentinel.errors import ConfigErrors
from tests.config import run_sentinel, write_config

UNSET_VAR = "SENTINEL_TEST_SURELY_UNSET"
TOP_KEYS = ("api, canaries, defaults, max_in_flight, services, shutdown_timeout, sinks, "
            "state_dir, suspect, telemetry, version")
SERVICE_KEYS = ("backends, breaker, dampen, init_state, min_up, passive, probe, sinks, "
                "slow_start")
HTTP_KEYS = ("down_interval, expect_body, expect_status, fast_interval, headers, host, "
             "interval, jitter, method, path, timeout, type, verify")
DURATION = "expected a duration such as 250ms, 2s, 1m, 1h or a number of seconds"


@dataclass(frozen=True)
class Case:
    """A config with one mistake and the one error line it must produce.

    `{tmp}` in either text stands for the test's directory; `{file}` in
    `expected` for the config file's name as given to the loader."""

    id: str
    config: str
    expected: str


CASES = [
    Case("yaml-syntax", """\
        services:
          web:
            backends: [127.0.0.1:80
        """,
         "{file}:4:1: YAML syntax error: expected ',' or ']', but got '<stream end>' "
         "(while parsing a flow sequence started at 3:15)"),
    Case("unknown-key-top", """\
        version: 1
        service:
          web: {}
        """,
         f"{{file}}:2:1: service: unknown key 'service'; expected one of: {TOP_KEYS}"),
    Case("unknown-key-service", """\
        services:
          web:
            backends: [127.0.0.1:80]
            bogus: 1
        """,
         "{file}:4:5: services.web.bogus: unknown key 'bogus'; "
         f"expected one of: {SERVICE_KEYS}"),
    Case("unknown-key-probe", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe:
              type: http
              paht: /healthz
        """,
         f"{{file}}:6:7: services.web.probe.paht: unknown key 'paht'; "
         f"expected one of: {HTTP_KEYS}"),
    Case("wrong-type", """\
        services:
          web:
            backends:
              - {address: 127.0.0.1:80, weight: heavy}
        """,
         "{file}:4:41: services.web.backends[0].weight: expected an integer, got 'heavy'"),
    Case("port-out-of-range", """\
        services:
          web:
            backends:
              - 127.0.0.1:80
              - {name: web2, address: 10.0.0.12:70000}
        """,
         "{file}:5:31: services.web.backends[1].address: port must be 1..65535, got 70000"),
    Case("duplicate-backend-name", """\
        services:
          web:
            backends:
              - {name: a, address: 127.0.0.1:80}
              - {name: a, address: 127.0.0.1:81}
        """,
         "{file}:5:16: services.web.backends[1].name: duplicate backend name 'a'"),
    Case("bad-duration", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {interval: 2 parsecs}
        """,
         f"{{file}}:4:23: services.web.probe.interval: {DURATION}, got '2 parsecs'"),
    Case("infinite-duration", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {interval: .inf}
        """,
         "{file}:4:23: services.web.probe.interval: must be a finite duration, got inf"),
    Case("undefined-sink", """\
        sinks:
          out: {type: file, path: ./view.json}
        services:
          web:
            backends: [127.0.0.1:80]
            sinks: [out, edge]
        """,
         "{file}:6:18: services.web.sinks[1]: undefined sink 'edge' (defined: out)"),
    Case("empty-backend-list", """\
        services:
          web:
            backends: []
        """,
         "{file}:3:15: services.web.backends: must list at least one backend"),
    Case("invalid-regex-expect-body", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: http, expect_body: '(unclosed'}
        """,
         "{file}:4:38: services.web.probe.expect_body: invalid regex '(unclosed': "
         "missing ), unterminated subpattern at position 0"),
    Case("invalid-regex-tcp-expect", """\
        services:
          db:
            backends: [127.0.0.1:6379]
            probe:
              type: tcp
              send: 'PING\\r\\n'
              expect: '[z-a]'
        """,
         "{file}:7:15: services.db.probe.expect: invalid regex '[z-a]': "
         "bad character range z-a at position 1"),
    Case("bad-send-escape", """\
        services:
          db:
            backends: [127.0.0.1:6379]
            probe: {type: tcp, send: 'PING\\x'}
        """,
         "{file}:4:30: services.db.probe.send: bad escape: truncated \\xXX escape"),
    Case("send-escape-beyond-a-byte", """\
        services:
          db:
            backends: [127.0.0.1:6379]
            probe: {type: tcp, send: '\\u20ac'}
        """,
         "{file}:4:30: services.db.probe.send: escapes above \\xff are not bytes; "
         "write the text itself (sent as UTF-8) or \\xNN bytes"),
    Case("script-command-missing", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: script, command: '{tmp}/nope --quick'}
        """,
         "{file}:4:36: services.web.probe.command: command not found: {tmp}/nope"),
    Case("script-command-not-executable", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: script, command: ['{tmp}/check.sh']}
        """,
         "{file}:4:36: services.web.probe.command: command is not executable: {tmp}/check.sh"),
    Case("negative-max-fails", """\
        services:
          web:
            backends: [127.0.0.1:80]
            breaker: {kind: nginx, max_fails: -1}
        """,
         "{file}:4:39: services.web.breaker.max_fails: must be at least 0, got -1"),
    Case("timeout-longer-than-interval", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {interval: 1s, timeout: 2s}
        """,
         "{file}:4:36: services.web.probe.timeout: timeout (2s) must not be longer than "
         "interval (1s)"),
    Case("missing-env-var", f"""\
        api:
          listen: 127.0.0.1:9900
          token: ${{{UNSET_VAR}}}
        """,
         f"{{file}}:3:10: api.token: environment variable {UNSET_VAR} is not set"),
    Case("non-loopback-listen-without-token", """\
        api:
          listen: 0.0.0.0:9900
        """,
         "{file}:2:11: api.listen: listening on non-loopback address 0.0.0.0 requires "
         "api.token or api.token_file"),
    Case("duplicate-yaml-key", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {interval: 1s}
            probe: {interval: 2s}
        """,
         "{file}:5:5: services.web.probe: duplicate key 'probe'"),
    Case("binding-option-for-sink-without-options", """\
        sinks:
          out: {type: file, path: ./view.json}
        services:
          web:
            backends: [127.0.0.1:80]
            sinks: [{sink: out, upstream: web}]
        """,
         "{file}:6:25: services.web.sinks[0].upstream: unknown key 'upstream'; "
         "no keys are allowed here"),
]


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != UNSET_VAR}


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, env=_environ())
    return [str(e) for e in caught.value.errors]


def _check(tmp_path: Path) -> list[str]:
    """`sentinel check -c sentinel.yaml` in tmp_path: exit 2, nothing on stdout, no
    traceback; the stderr lines."""
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path, env=_environ())
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    return done.stderr.splitlines()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_line(case: Case, tmp_path: Path) -> None:
    """Each error class names file:line:col and the key path, in the loader and in `check`."""
    (tmp_path / "check.sh").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "check.sh").chmod(0o644)
    tmp = str(tmp_path)
    path = write_config(tmp_path, textwrap.dedent(case.config).replace("{tmp}", tmp))
    expected = case.expected.replace("{tmp}", tmp)
    assert _errors(path) == [expected.replace("{file}", str(path))]
    assert _check(tmp_path) == [expected.replace("{file}", "sentinel.yaml")]


def test_every_error_reported_sorted_by_line(tmp_path: Path) -> None:
    """Errors in several sections all come out in one pass, ordered by line, not by the
    order the sections are validated in (api and sinks before services)."""
    write_config(tmp_path, textwrap.dedent("""\
        services:
          web:
            backends: [127.0.0.1:70000]
            probe: {interval: 2 parsecs}
          db:
            backends: []
            breaker: {kind: nginx, max_fails: -1}
        sinks:
          out: {type: file}
        api:
          listen: 0.0.0.0:9900
        """))
    assert _check(tmp_path) == [
        "sentinel.yaml:3:16: services.web.backends[0]: port must be 1..65535, got 70000",
        f"sentinel.yaml:4:23: services.web.probe.interval: {DURATION}, got '2 parsecs'",
        "sentinel.yaml:6:15: services.db.backends: must list at least one backend",
        "sentinel.yaml:7:39: services.db.breaker.max_fails: must be at least 0, got -1",
        "sentinel.yaml:9:8: sinks.out: a file sink needs `path`",
        "sentinel.yaml:11:11: api.listen: listening on non-loopback address 0.0.0.0 "
        "requires api.token or api.token_file",
    ]


def test_bad_default_reported_once(tmp_path: Path) -> None:
    """A mistake in `defaults` is merged under every service but reported once, at the
    default's own line."""
    path = write_config(tmp_path, textwrap.dedent("""\
        defaults:
          breaker: {kind: threshold, fall: 0}
        services:
          a: {backends: [127.0.0.1:80]}
          b: {backends: [127.0.0.1:81]}
        """))
    assert _errors(path) == [
        f"{path}:2:36: defaults.breaker.fall: must be at least 1, got 0"]


def test_state_dir_error_does_not_hide_others(tmp_path: Path) -> None:
    """A wrong `state_dir` is collected like any other error, not raised alone."""
    path = write_config(tmp_path, textwrap.dedent("""\
        state_dir: [a]
        services:
          a: {backends: [127.0.0.1:0]}
        """))
    assert _errors(path) == [
        f"{path}:1:12: state_dir: expected a string, got a list",
        f"{path}:3:18: services.a.backends[0]: port must be 1..65535, got 0",
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing config file is one plain error line and exit 2."""
    assert _check(tmp_path) == ["sentinel.yaml: cannot read: No such file or directory"]
