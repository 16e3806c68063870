"""`file` sink: the whole /v1/state document, written atomically on every change.

For consul-template-style consumers that watch a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import trio

from sentinel.config.node import Node
from sentinel.config.sections import OUTPUT_FILE
from sentinel.config.tables import Field, Section
from sentinel.files import write_atomic
from sentinel.sinks.base import SinkContext, SinkKind, Update, unavailable


@dataclass(frozen=True, slots=True)
class FileOptions:
    """Where the document goes."""

    path: str


OPTIONS = Section(
    Field("path", OUTPUT_FILE, "where the state document is written",
          required="a file sink needs `path`"))


def parse_options(node: Node) -> FileOptions:
    """`{type: file, path: ...}`."""
    e = OPTIONS.parse(node)
    OPTIONS.require(node, e)
    return FileOptions(path=OPTIONS.get(e, "path"))


def parse_binding(node: Node) -> None:
    """A service's reference takes no options."""
    node.as_map(set())


class FileSink:
    """Writes the state document to one path."""

    def __init__(self, name: str, options: FileOptions, ctx: SinkContext) -> None:
        self.name = name
        self._path = options.path
        self._ctx = ctx

    async def apply(self, update: Update) -> None:
        """Write the current state document (it already holds `update.view`)."""
        data = json.dumps(self._ctx.state_document(), indent=2, sort_keys=True).encode() + b"\n"
        with unavailable(f"cannot write {self._path}"):  # retried with backoff, not a crash
            await trio.to_thread.run_sync(write_atomic, self._path, data)

    async def aclose(self) -> None:
        """Nothing to release."""


def _create(name: str, options: object, ctx: SinkContext) -> FileSink:
    assert isinstance(options, FileOptions)
    return FileSink(name, options, ctx)


KIND = SinkKind(name="file", parse_options=parse_options, parse_binding=parse_binding,
                create=_create, options=OPTIONS)
