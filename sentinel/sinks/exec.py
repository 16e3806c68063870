"""`exec` sink: runs a command per event, placeholders substituted per argument.

`{service}` `{backend}` `{address}` `{from}` `{to}` `{weight}` are replaced in
each argv element; nothing goes through a shell. A non-zero exit or a
timeout (which kills the whole process group) raises SinkRejected, and the
runner retries; events already run successfully are not run again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sentinel.config.node import Node
from sentinel.config.sections import COMMAND, parse_command
from sentinel.config.tables import Duration, Field, Rule, Section
from sentinel.errors import SinkRejected
from sentinel.model import Event
from sentinel.process import run_command
from sentinel.sinks.base import SinkContext, SinkKind, Update, unavailable

log = logging.getLogger(__name__)
PLACEHOLDERS = ("service", "backend", "address", "from", "to", "weight")


@dataclass(frozen=True, slots=True)
class ExecOptions:
    """The command template and its time limit."""

    command: tuple[str, ...]
    timeout: float = 10.0


OPTIONS = Section(
    Field("command", Rule(parse_command, COMMAND), "run per event, with "
          + " ".join(f"{{{p}}}" for p in PLACEHOLDERS) + " replaced in each argument",
          required="an exec sink needs `command`"),
    Field("timeout", Duration(), "a run taking longer is killed with its process group",
          ExecOptions(command=()).timeout))


def parse_options(node: Node) -> ExecOptions:
    """`{type: exec, command: [...], timeout: 10s}`."""
    e = OPTIONS.parse(node)
    OPTIONS.require(node, e)
    return ExecOptions(command=OPTIONS.get(e, "command"), timeout=OPTIONS.get(e, "timeout"))


def parse_binding(node: Node) -> None:
    """A service's reference takes no options."""
    node.as_map(set())


def render_argv(template: tuple[str, ...], event: Event) -> list[str]:
    """Substitute the event's fields into each argument (unknown braces stay as they are)."""
    values = {"service": event.service, "backend": event.backend, "address": event.address,
              "from": event.from_state, "to": event.to_state, "weight": str(event.weight)}
    out = []
    for arg in template:
        for key in PLACEHOLDERS:
            arg = arg.replace("{" + key + "}", values[key])
        out.append(arg)
    return out


class ExecSink:
    """Runs the command once per event, in order."""

    def __init__(self, name: str, options: ExecOptions) -> None:
        self.name = name
        self._options = options
        self._done_seq: dict[str, int] = {}  # per service: events up to this seq have run

    async def apply(self, update: Update) -> None:
        """Run the command for each event not yet run."""
        service = update.view.service
        for event in update.events:
            if event.seq <= self._done_seq.get(service, 0):
                continue
            argv = render_argv(self._options.command, event)
            with unavailable(argv[0]):
                outcome = await run_command(argv, time_limit=self._options.timeout)
            for stream, data in (("stdout", outcome.stdout), ("stderr", outcome.stderr)):
                if data.strip():
                    log.info("%s %s: %s", self.name, stream,
                             data.decode(errors="replace").strip()[:2000])
            if outcome.timed_out:
                raise SinkRejected(f"{argv[0]} timed out after {self._options.timeout:g}s")
            if outcome.returncode != 0:
                raise SinkRejected(f"{argv[0]}: {outcome.describe_exit()}")
            self._done_seq[service] = event.seq

    async def aclose(self) -> None:
        """Nothing to release."""


def _create(name: str, options: object, ctx: SinkContext) -> ExecSink:
    assert isinstance(options, ExecOptions)
    return ExecSink(name, options)


KIND = SinkKind(name="exec", parse_options=parse_options, parse_binding=parse_binding,
                create=_create, options=OPTIONS, scope="leader")
