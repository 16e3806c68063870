"""The passive sources a config asks for, and one task running them all.

One follower per nginx error log, whatever number of services name it (the
log is shared, the index spans their backends); one `show stat` poller per
haproxy sink, spanning the services that read it.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from sentinel.config.model import Config, ServiceConfig
from sentinel.passive.base import BackendIndex, Key, Signal
from sentinel.passive.haproxy_stats import Server, StatsSource, poll_stats
from sentinel.passive.nginx_log import follow
from sentinel.sinks.haproxy.options import HAProxyBinding, HAProxyOptions
from sentinel.sinks.nginx.render import UpstreamOptions


def nginx_logs(config: Config) -> dict[str, BackendIndex]:
    """Each nginx error log to follow, with the backends of the services naming it (and
    their nginx bindings' upstream names, for `no live upstreams`)."""
    readers: dict[str, list[ServiceConfig]] = {}
    for svc in config.services:
        if svc.passive is not None and svc.passive.nginx_error_log is not None:
            readers.setdefault(svc.passive.nginx_error_log, []).append(svc)
    out = {}
    for path, services in readers.items():
        upstreams = {b.options.name: svc.name for svc in services for b in svc.sinks
                     if isinstance(b.options, UpstreamOptions) and b.options.name}
        out[path] = BackendIndex(services, upstreams)
    return out


def haproxy_stats(config: Config) -> list[StatsSource]:
    """Each haproxy sink to read `show stat` from, with the servers of the services that
    read it mapped to their backends through those services' bindings."""
    sources = []
    for sink in config.sinks:
        readers = [svc for svc in config.services if svc.passive is not None
                   and svc.passive.haproxy == sink.name]
        if not readers or not isinstance(sink.options, HAProxyOptions):
            continue
        servers: dict[Server, list[Key]] = {}
        for svc in readers:
            binding = next((b.options for b in svc.sinks if b.sink == sink.name), None)
            names = binding if isinstance(binding, HAProxyBinding) else HAProxyBinding()
            for b in svc.backends:
                server = (names.backend or svc.name, names.servers.get(b.name, b.name))
                servers.setdefault(server, []).append((svc.name, b.name))
        interval = min(svc.passive.haproxy_interval for svc in readers if svc.passive)
        sources.append(StatsSource(sink.options.socket, sink.options.timeout, interval,
                                   {k: tuple(v) for k, v in servers.items()}))
    return sources


async def run_sources(config: Config, report: Callable[[Signal], None], *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                      ) -> None:
    """Run every passive source of `config` until cancelled; started once each has
    taken its starting point (the end of each log)."""
    async with trio.open_nursery() as nursery:
        for path, index in nginx_logs(config).items():
            await nursery.start(follow, path, index, report)
        for source in haproxy_stats(config):
            await nursery.start(poll_stats, source, report)
        task_status.started()
