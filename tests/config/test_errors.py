"""One test per configuration error class: the exact `file:line:col: key.path: message`
line, from the loader and from `sentinel check` run as a real process (exit 2, the
line on stderr, no traceback)."""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sentinel.errors import ConfigErrors
from sentinel.sinks.registry import load_config
from tests.config import check_schema_verdict, run_sentinel, whole, write_config

UNSET_VAR = "SENTINEL_TEST_SURELY_UNSET"
TOP_KEYS = ("api, canaries, cluster, defaults, max_in_flight, services, shutdown_timeout, "
            "sinks, state_dir, suspect, telemetry, version")
SERVICE_KEYS = ("agent, backends, breaker, checks, dampen, init_state, min_up, passive, probe, "
                "require, sinks, slow_start")
HTTP_KEYS = ("down_interval, expect_body, expect_status, fast_interval, headers, host, "
             "interval, jitter, method, path, source, timeout, type, verify, watch")
DURATION = "expected a duration such as 250ms, 2s, 1m, 1h or a number of seconds"


@dataclass(frozen=True)
class Case:
    """A config with one mistake and the one error line it must produce.

    `{tmp}` in either text stands for the test's directory; `{file}` in
    `expected` for the config file's name as given to the loader. `loader_only`
    says why `sentinel schema` cannot refuse the mistake (empty: it does)."""

    id: str
    config: str
    expected: str
    loader_only: str = ""


ACROSS_FIELDS = "a rule across fields"
BOUND_SINK_KIND = "depends on the kind of the sink the service binds, defined elsewhere"
MACHINE = "about this machine: the program must exist and be executable here"
ESCAPES = "escapes are decoded by the loader"


CASES = [
    Case("yaml-syntax", """\
        services:
          web:
            backends: [127.0.0.1:80
        """,
         "{file}:4:1: YAML syntax error: expected ',' or ']', but got '<stream end>' "
         "(while parsing a flow sequence started at 3:15)",
         loader_only="not YAML: there is no document to check"),
    Case("unknown-key-top", """\
        version: 1
        service:
          web: {}
        """,
         f"{{file}}:2:1: service: unknown key 'service'; expected one of: {TOP_KEYS}"),
    Case("state-dir-is-a-file", """\
        state_dir: {tmp}/check.sh
        """,
         "{file}:1:12: state_dir: is not a directory",
         loader_only="what is on the disk"),
    Case("state-dir-under-a-file", """\
        state_dir: {tmp}/check.sh/state
        """,
         "{file}:1:12: state_dir: cannot be made: {tmp}/check.sh is not a directory",
         loader_only="what is on the disk"),
    Case("token-and-token-file", """\
        api: {listen: 127.0.0.1:0, token: s3cret, token_file: ./t}
        """,
         "{file}:1:43: api.token_file: give `token` or `token_file`, not both",
         loader_only="a rule across two keys"),
    Case("haproxy-socket-port", """\
        sinks:
          lb: {type: haproxy, socket: "127.0.0.1:99999"}
        services:
          web:
            backends: [127.0.0.1:1]
            sinks: [lb]
        """,
         "{file}:2:31: sinks.lb.socket: port must be 1..65535, got 99999",
         loader_only="a port inside `host:port` text (the socket may also be a path)"),
    Case("blank-backend-name", """\
        services:
          web:
            backends: [{name: " ", address: 127.0.0.1:1}]
        """,
         "{file}:3:23: services.web.backends[0].name: a name must not be blank, got ' '"),
    Case("blank-service-name", """\
        services:
          "":
            backends: [127.0.0.1:1]
        """,
         "{file}:2:3: services.: a name must not be blank, got ''"),
    Case("blank-sink-name", """\
        sinks:
          " ": {type: file, path: ./view.json}
        services:
          web:
            backends: [127.0.0.1:1]
        """,
         "{file}:2:3: sinks. : a name must not be blank, got ' '"),
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
    Case("host-with-a-semicolon", """\
        services:
          web:
            backends: ["a;b:80"]
        """,
         "{file}:3:16: services.web.backends[0]: invalid host 'a;b': an IPv4 address or a DNS "
         "name (letters, digits and .-_)"),
    Case("duplicate-backend-name", """\
        services:
          web:
            backends:
              - {name: a, address: 127.0.0.1:80}
              - {name: a, address: 127.0.0.1:81}
        """,
         "{file}:5:16: services.web.backends[1].name: duplicate backend name 'a'",
         loader_only="names unique across the list (uniqueItems compares whole items)"),
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
         "{file}:6:18: services.web.sinks[1]: undefined sink 'edge' (defined: out)",
         loader_only="a reference to a sink defined elsewhere"),
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
         "{file}:4:30: services.db.probe.send: bad escape: truncated \\xXX escape",
         loader_only=ESCAPES),
    Case("send-escape-beyond-a-byte", """\
        services:
          db:
            backends: [127.0.0.1:6379]
            probe: {type: tcp, send: '\\u20ac'}
        """,
         "{file}:4:30: services.db.probe.send: escapes above \\xff are not bytes; "
         "write the text itself (sent as UTF-8) or \\xNN bytes",
         loader_only=ESCAPES),
    Case("script-command-missing", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: script, command: '{tmp}/nope --quick'}
        """,
         "{file}:4:36: services.web.probe.command: command not found: {tmp}/nope",
         loader_only=MACHINE),
    Case("script-command-not-executable", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: script, command: ['{tmp}/check.sh']}
        """,
         "{file}:4:36: services.web.probe.command: command is not executable: {tmp}/check.sh",
         loader_only=MACHINE),
    Case("exec-command-is-a-directory", """\
        sinks:
          run: {type: exec, command: ['{tmp}', '{service}']}
        """,
         "{file}:2:30: sinks.run.command: command is a directory: {tmp}",
         loader_only=MACHINE),
    Case("file-sink-path-is-a-directory", """\
        sinks:
          out: {type: file, path: '{tmp}/'}
        """,
         "{file}:2:27: sinks.out.path: is a directory",
         loader_only="what is on the disk"),
    Case("negative-max-fails", """\
        services:
          web:
            backends: [127.0.0.1:80]
            breaker: {kind: nginx, max_fails: -1}
        """,
         "{file}:4:39: services.web.breaker.max_fails: must be 0..1000, got -1"),
    Case("timeout-longer-than-interval", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {interval: 1s, timeout: 2s}
        """,
         "{file}:4:36: services.web.probe.timeout: timeout (2s) must not be longer than "
         "interval (1s)",
         loader_only=ACROSS_FIELDS),
    Case("missing-env-var", f"""\
        api:
          listen: 127.0.0.1:9900
          token: ${{{UNSET_VAR}}}
        """,
         f"{{file}}:3:10: api.token: environment variable {UNSET_VAR} is not set",
         loader_only="the environment is read when the file is loaded"),
    Case("non-loopback-listen-without-token", """\
        api:
          listen: 0.0.0.0:9900
        """,
         "{file}:2:11: api.listen: listening on non-loopback address 0.0.0.0 requires "
         "api.token or api.token_file",
         loader_only=ACROSS_FIELDS),
    Case("duplicate-yaml-key", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {interval: 1s}
            probe: {interval: 2s}
        """,
         "{file}:5:5: services.web.probe: duplicate key 'probe'",
         loader_only="a YAML parser keeps one of the two keys before a schema sees them"),
    Case("http-path-with-crlf", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: http, path: "/h HTTP/1.1\\r\\nX-Evil: 1"}
        """,
         "{file}:4:31: services.web.probe.path: a path must be printable ASCII without spaces; "
         "percent-encode the rest (%20), found ' '"),
    Case("http-path-not-latin1", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: http, path: /caf€}
        """,
         "{file}:4:31: services.web.probe.path: a path must be printable ASCII without spaces; "
         "percent-encode the rest (%20), found '€'"),
    Case("http-host-with-newline", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: https, host: "example.com\\n"}
        """,
         "{file}:4:32: services.web.probe.host: a Host header must be printable ASCII without "
         "spaces; percent-encode the rest (%20), found '\\n'"),
    Case("http-header-value-with-cr", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe:
              type: http
              headers: {X-Token: "abc\\rdef"}
        """,
         "{file}:6:26: services.web.probe.headers.X-Token: a header value must be printable "
         "ASCII (spaces and tabs allowed), found '\\r'"),
    Case("http-header-name-not-a-token", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe:
              type: http
              headers: {"X Token:": abc}
        """,
         "{file}:6:17: services.web.probe.headers.X Token:: a header name must be a token "
         "(letters, digits and !#$%&'*+-.^_`|~), got 'X Token:'"),
    Case("http-method-with-space", """\
        services:
          web:
            backends: [127.0.0.1:80]
            probe: {type: http, method: "GET /x"}
        """,
         "{file}:4:33: services.web.probe.method: a method must be a token "
         "(letters, digits and !#$%&'*+-.^_`|~), got 'GET /x'"),
    Case("nginx-upstream-name-from-the-service", """\
        sinks:
          edge: {type: nginx, file: ./up.conf, test: "true", reload: "true"}
        services:
          "web {1}":
            backends: [127.0.0.1:80]
            sinks: [edge]
        """,
         "{file}:4:3: services.web {1}: 'web {1}' is not a valid nginx upstream name (letters, "
         "digits and _.:-); set `upstream:` in the binding or rename the service (sink edge)",
         loader_only=BOUND_SINK_KIND),
    Case("haproxy-server-name-with-a-space", """\
        sinks:
          lb: {type: haproxy, socket: ./admin.sock}
        services:
          web:
            backends: [{name: web 1, address: 127.0.0.1:80}, 127.0.0.1:81]
            sinks: [lb]
        """,
         "{file}:5:23: services.web.backends[0].name: 'web 1' is not a valid HAProxy server "
         "name (letters, digits and _.:-); give the backend a `name:` or map it in the "
         "binding's `servers:` (sink lb)",
         loader_only=BOUND_SINK_KIND),
    Case("haproxy-server-name-from-an-ipv6-address", """\
        sinks:
          lb: {type: haproxy, socket: ./admin.sock}
        services:
          web:
            backends: ['[::1]:80']
            sinks: [{sink: lb, backend: web_be}]
        """,
         "{file}:5:16: services.web.backends[0]: '[::1]:80' is not a valid HAProxy server "
         "name (letters, digits and _.:-); give the backend a `name:` or map it in the "
         "binding's `servers:` (sink lb)",
         loader_only=BOUND_SINK_KIND),
    Case("haproxy-backend-name-from-the-service", """\
        sinks:
          lb: {type: haproxy, socket: ./admin.sock}
        services:
          web;drop:
            backends: [127.0.0.1:80]
            sinks: [lb]
        """,
         "{file}:4:3: services.web;drop: 'web;drop' is not a valid HAProxy backend name "
         "(letters, digits and _.:-); set `backend:` in the binding or rename the service "
         "(sink lb)",
         loader_only=BOUND_SINK_KIND),
    Case("haproxy-server-override-with-a-quote", """\
        sinks:
          lb: {type: haproxy, socket: ./admin.sock}
        services:
          web:
            backends: [127.0.0.1:80]
            sinks: [{sink: lb, servers: {127.0.0.1:80: "s'1"}}]
        """,
         "{file}:6:48: services.web.sinks[0].servers.127.0.0.1:80: not a HAProxy server name: "
         "\"s'1\" (letters, digits and _.:-)"),
    Case("webhook-secret-without-whsec", """\
        sinks:
          ops: {type: webhook, url: "http://127.0.0.1:9/hook", secret: hunter2}
        """,
         "{file}:2:64: sinks.ops.secret: a webhook secret must be whsec_ followed by base64 "
         "(the Standard Webhooks form)"),
    Case("empty-file-sink-path", """\
        sinks:
          doc: {type: file, path: ""}
        """,
         "{file}:2:27: sinks.doc.path: must not be empty"),
    Case("blank-nginx-file", """\
        sinks:
          edge: {type: nginx, file: "  ", test: "true", reload: "true"}
        """,
         "{file}:2:29: sinks.edge.file: must not be empty"),
    Case("webhook-url-without-a-host", """\
        sinks:
          ops: {type: webhook, url: "http://", secret: whsec_aGk=}
        """,
         "{file}:2:29: sinks.ops.url: expected an http:// or https:// URL with a host, "
         "got 'http://'"),
    Case("blank-token", """\
        api:
          listen: 0.0.0.0:9900
          token: "   "
        """,
         "{file}:3:10: api.token: the token is empty or blank"),
    Case("min-up-above-the-backend-count", """\
        defaults:
          min_up: 3
        services:
          web:
            backends: [127.0.0.1:80, 127.0.0.1:81]
        """,
         "{file}:2:11: defaults.min_up: min_up (3) is more than the 2 backends of service web",
         loader_only=ACROSS_FIELDS),
    Case("invalid-sink-is-not-also-undefined", """\
        sinks:
          lvs: {type: ipvs, command: "true", timeout: soon}
        services:
          web:
            backends: [127.0.0.1:80]
            sinks: [{sink: lvs, virtual: tcp:10.0.0.1:80}]
        """,
         f"{{file}}:2:47: sinks.lvs.timeout: {DURATION}, got 'soon'"),
    Case("binding-option-for-sink-without-options", """\
        sinks:
          out: {type: file, path: ./view.json}
        services:
          web:
            backends: [127.0.0.1:80]
            sinks: [{sink: out, upstream: web}]
        """,
         "{file}:6:25: services.web.sinks[0].upstream: unknown key 'upstream'; "
         "no keys are allowed here",
         loader_only=BOUND_SINK_KIND),
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
    path = write_config(tmp_path, whole(textwrap.dedent(case.config).replace("{tmp}", tmp)))
    expected = case.expected.replace("{tmp}", tmp)
    assert _errors(path) == [expected.replace("{file}", str(path))]
    assert _check(tmp_path) == [expected.replace("{file}", "sentinel.yaml")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_schema_refuses_what_it_can(case: Case, tmp_path: Path) -> None:
    """`sentinel schema` refuses each mistake it can express, pointing at the loader's key
    path or a parent of it; a case marked loader-only passes the schema (if the schema
    learns to refuse it, the mark must go)."""
    text = whole(textwrap.dedent(case.config).replace("{tmp}", str(tmp_path)))
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        assert case.loader_only
        return
    check_schema_verdict(document, case.expected.split(": ")[1], case.loader_only)


MISSING = ("services: missing: name at least one service to check (an empty or cut-short "
           "file checks nothing)")
NAMES_NONE = "services: names no service: name at least one service to check"


@pytest.mark.parametrize(("text", "expected"), [
    ("", f"sentinel.yaml:1:1: {MISSING}"),
    ("# nothing yet\n", f"sentinel.yaml:1:1: {MISSING}"),
    ("version: 1\nsinks:\n  f: {type: file, path: ./view.json}\n", f"sentinel.yaml:1:1: {MISSING}"),
    ("version: 1\nservices:\n", f"sentinel.yaml:2:1: {NAMES_NONE}"),
    ("version: 1\nservices: {}\n", f"sentinel.yaml:2:11: {NAMES_NONE}"),
], ids=["empty", "comment-only", "cut-short", "services-null", "services-empty"])
def test_a_file_that_names_no_service_is_refused(tmp_path: Path, text: str,
                                                  expected: str) -> None:
    """An empty file, or one cut short before its services, would run a sentinel that
    checks nothing (a reload into it stopped every check): `check` exits 2 saying so."""
    write_config(tmp_path, text)
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", expected + "\n")


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
        "sentinel.yaml:7:39: services.db.breaker.max_fails: must be 0..1000, got -1",
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
        f"{path}:2:36: defaults.breaker.fall: must be 1..1000, got 0"]


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


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_token_file_that_is_no_regular_file_is_refused_at_once(tmp_path: Path,
                                                                 kind: str) -> None:
    """`token_file:` naming a FIFO (whose open would wait for a writer: `check` and `run`
    hung) or a directory is an error at the key, at once."""
    token = tmp_path / "token"
    if kind == "fifo":
        os.mkfifo(token)
    else:
        token.mkdir()
    write_config(tmp_path, whole("api: {listen: 127.0.0.1:0, token_file: ./token}\n"))
    done = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("sentinel.yaml:1:40: api.token_file: cannot read token "
                                  "file: "), done.stderr
