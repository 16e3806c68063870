"""Shared pieces for webhook tests: a secret, events, sinks on a real outbox file."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import trio

from sentinel.model import Event, ServiceView
from sentinel.sinks.base import Update
from sentinel.sinks.webhook.options import WebhookOptions
from sentinel.sinks.webhook.outbox import Outbox
from sentinel.sinks.webhook.sink import DeliveryStatistics, WebhookSink, outbox_path
from sentinel.timefmt import rfc3339, uuid7
from tests.e2e.conftest import processes  # noqa: F401 - the e2e fixture, shared here
from tests.probes.conftest import refused_port  # noqa: F401 - shared here too
from tests.sinks.webhook.receiver import Receiver

SECRET = "whsec_" + base64.b64encode(b"sentinel-test-key-0123456789abcd").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
_seq = count(1)


def event(backend: str = "web1", to: str = "down", service: str = "web") -> Event:
    """A fresh event with a unique id and the next seq."""
    seq = next(_seq)
    return Event(id=uuid7(1_700_000_000_000 + seq), seq=seq, time=rfc3339(1.7e9),
                 service=service, backend=backend, address="127.0.0.1:1", from_state="up",
                 to_state=to, weight=0, reason="test")


def update(*events: Event) -> Update:
    """An update carrying `events` (the view does not matter to this sink)."""
    return Update(ServiceView(events[0].service if events else "web", ()), tuple(events))


MakeSink = Callable[..., Awaitable[WebhookSink]]


async def until(sink: WebhookSink, done: Callable[[DeliveryStatistics], bool],
                interval: float = 0.02, within: float = 10.0) -> DeliveryStatistics:
    """Poll the sink's statistics until `done` holds; TooSlowError after `within` seconds
    (of Trio's clock: virtual ones under a MockClock)."""
    with trio.fail_after(within):
        while not done(stats := sink.statistics()):  # noqa: ASYNC110 - polling counters
            await trio.sleep(interval)
    return stats


@pytest.fixture
async def make_sink(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[MakeSink]:
    """`await make_sink(url, **options)`: a webhook sink on tmp_path's outbox, delivering
    in the test's nursery; closed at the end."""
    sinks: list[WebhookSink] = []
    delivering = trio.CancelScope()

    async def deliver(sink: WebhookSink, *, task_status: trio.TaskStatus[None]) -> None:
        with delivering:
            await sink.run(task_status=task_status)

    async def make(url: str, *, start: bool = True, **options: Any) -> WebhookSink:
        extra = options.pop("sink_kwargs", {})
        opts = WebhookOptions(url=url, secrets=options.pop("secrets", (SECRET,)), **options)
        sink = WebhookSink("ops", opts, Outbox.open(outbox_path(tmp_path, "ops")), **extra)
        sinks.append(sink)
        if start:
            await nursery.start(deliver, sink)
        return sink

    yield make
    delivering.cancel()
    for sink in sinks:
        await sink.aclose()


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    """A receiver that accepts everything (tests replace `script` as needed)."""
    return await Receiver().start(nursery)
