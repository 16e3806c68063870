"""Sink kinds by their config name. Each kind lives in its own module."""

from __future__ import annotations

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
