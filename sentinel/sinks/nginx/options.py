"""Configuration of the `nginx` sink: its options, a service's binding, and the
upstream names nginx can parse.

    sinks:
      lb: {type: nginx, file: /etc/nginx/conf.d/sentinel.conf, context: http,
           mode: down, test: [nginx, -t], reload: [nginx, -s, reload],
           pid_file: /run/nginx.pid, verify_timeout: 5s, min_reload_interval: 1s}
    services:
      web:
        sinks:
          - {sink: lb, upstream: web_pool, params: "max_fails=0", directives: [...]}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sentinel.config.load import NameProblem
from sentinel.config.node import Node
from sentinel.config.sections import COMMAND, OUTPUT_FILE, default_command, parse_command
from sentinel.config.tables import Bool, Choice, Duration, Field, FilePath, Rule, Section, scalar
from sentinel.sinks.nginx.render import (
    CONTEXTS,
    MODES,
    UPSTREAM_NAME,
    UpstreamOptions,
    check_words,
)


@dataclass(frozen=True, slots=True)
class NginxOptions:
    """The `sinks.NAME` mapping of an nginx sink."""

    file: str
    context: str = "http"
    mode: str = "down"
    test: tuple[str, ...] = ("nginx", "-t")
    reload: tuple[str, ...] = ("nginx", "-s", "reload")
    pid_file: str | None = "/run/nginx.pid"  # None: `verify: false`
    verify_timeout: float = 5.0
    min_reload_interval: float = 1.0
    timeout: float = 10.0  # per command


def _words(node: Node) -> tuple[str, ...]:
    try:
        return check_words(node.as_str())
    except ValueError as exc:
        raise node.error(str(exc)) from None


def _upstream(node: Node) -> str:
    name = node.as_str()
    if not UPSTREAM_NAME.match(name):
        raise node.error(f"not a valid nginx upstream name: {name!r}")
    return name


def _directives(node: Node) -> tuple[str, ...]:
    items = node.as_list() if node.is_list else [node]
    return tuple(" ".join(_words(item)) for item in items)


_D = NginxOptions(file="")
_WORDS = {"type": "string", "not": {"pattern": r"[;{}#'\"\\]"}}  # words: no such character
OPTIONS = Section(
    Field("file", OUTPUT_FILE, "the file of upstream blocks sentinel writes (nginx.conf "
          "includes it)", required="an nginx sink needs `file`"),
    Field("context", Choice(CONTEXTS),
          "the nginx block that includes the file", _D.context),
    Field("mode", Choice(MODES),
          "down: a dead backend is listed as `down`; remove: it is left out", _D.mode),
    Field("test", Rule(parse_command, COMMAND), "checks the new file; on failure the "
          "previous one is put back", _D.test),
    Field("reload", Rule(parse_command, COMMAND), "makes nginx load the file", _D.reload),
    Field("pid_file", FilePath(), "nginx's master PID file, read to verify a reload",
          _D.pid_file),
    Field("verify", Bool(), "verify each reload by waiting for new workers", True),
    Field("verify_timeout", Duration(), "how long a reload may take to show new workers",
          _D.verify_timeout),
    Field("min_reload_interval", Duration(positive=False), "reloads at most this often; a "
          "burst of changes waits and is merged", _D.min_reload_interval),
    Field("timeout", Duration(), "per command", _D.timeout))
BINDING = Section(
    Field("upstream", Rule(_upstream, scalar({"type": "string",
                                              "pattern": UPSTREAM_NAME.pattern})),
          "the upstream's name (default: the service's)"),
    Field("params", Rule(_words, scalar(_WORDS)), "extra server parameters, such as "
          "max_fails=0 max_conns=100"),
    Field("directives", Rule(_directives, {"anyOf": [
        scalar(_WORDS), {"type": "array", "items": scalar(_WORDS)}]}),
          "lines inside the upstream block, such as least_conn"))


def parse_options(node: Node) -> NginxOptions:
    """`{type: nginx, file: ..., context: http|stream, mode: down|remove, test, reload, ...}`."""
    e = OPTIONS.parse(node)
    OPTIONS.require(node, e)
    verify = OPTIONS.get(e, "verify")
    return NginxOptions(
        file=OPTIONS.get(e, "file"), context=OPTIONS.get(e, "context"),
        mode=OPTIONS.get(e, "mode"),
        test=OPTIONS.get(e, "test") if "test" in e
        else default_command(node, "test", _D.test),
        reload=OPTIONS.get(e, "reload") if "reload" in e
        else default_command(node, "reload", _D.reload),
        pid_file=OPTIONS.get(e, "pid_file") if verify else None,
        verify_timeout=OPTIONS.get(e, "verify_timeout"),
        min_reload_interval=OPTIONS.get(e, "min_reload_interval"),
        timeout=OPTIONS.get(e, "timeout"))


def parse_binding(node: Node) -> UpstreamOptions:
    """`{sink: NAME, upstream: NAME, params: "max_fails=0 max_conns=100", directives: [...]}`."""
    e = BINDING.parse(node)
    return UpstreamOptions(name=BINDING.get(e, "upstream"), params=BINDING.get(e, "params", ()),
                           directives=BINDING.get(e, "directives", ()))


def check_names(binding: object, service: str, backends: Sequence[str]) -> list[NameProblem]:
    """The upstream is named after the service unless the binding sets `upstream:`; a name
    nginx cannot parse would fail `nginx -t` for every service in the file."""
    if isinstance(binding, UpstreamOptions) and binding.name is None and not UPSTREAM_NAME.match(
            service):
        return [(None, f"{service!r} is not a valid nginx upstream name (letters, digits and "
                       f"_.:-); set `upstream:` in the binding or rename the service")]
    return []
