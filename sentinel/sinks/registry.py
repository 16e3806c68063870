"""Sink kinds by their config name, and the config loader handed them. Each kind lives
in its own module."""

from __future__ import annotations

import os
from collections.abc import Mapping

from sentinel.config.load import load_file
from sentinel.config.model import Config
from sentinel.sinks import exec as exec_sink
from sentinel.sinks import file as file_sink
from sentinel.sinks.base import SinkKind
from sentinel.sinks.haproxy import sink as haproxy_sink
from sentinel.sinks.ipvs import sink as ipvs_sink
from sentinel.sinks.maglev import sink as maglev_sink
from sentinel.sinks.nginx import sink as nginx_sink
from sentinel.sinks.webhook import sink as webhook_sink

SINK_KINDS: dict[str, SinkKind] = {kind.name: kind for kind in (
    file_sink.KIND, exec_sink.KIND, nginx_sink.KIND, haproxy_sink.KIND, webhook_sink.KIND,
    ipvs_sink.KIND, maglev_sink.KIND)}


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at `path` (every built-in sink kind parses its
    own options); raise ConfigErrors listing every problem. `sentinel.load_config`."""
    return load_file(path, SINK_KINDS, env)
