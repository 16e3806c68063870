"""Sink capabilities are Protocols, checked once when a sink's runner is built."""

from __future__ import annotations

from pathlib import Path

from sentinel.sinks.base import Capabilities
from sentinel.sinks.memory import RecordingSink
from sentinel.sinks.nginx.options import NginxOptions
from sentinel.sinks.nginx.sink import NginxSink
from sentinel.sinks.runner import SinkRunner
from sentinel.sinks.webhook.options import WebhookOptions
from sentinel.sinks.webhook.outbox import Outbox
from sentinel.sinks.webhook.sink import WebhookSink


def names(can: Capabilities) -> set[str]:
    """The capabilities found."""
    return {name for name in Capabilities.__slots__ if getattr(can, name) is not None}


def test_a_plain_sink_has_no_capability() -> None:
    """A sink with only apply and aclose is found to have none."""
    assert names(SinkRunner(RecordingSink()).can) == set()


async def test_the_webhook_and_nginx_sinks_are_found_under_their_protocols(
        tmp_path: Path) -> None:
    """The webhook sink is durable, background, flushable, reports health, has an outbox
    and reports how far it delivered (a cluster leader records it); nginx converges in
    batches and is told its services; each capability is the sink itself."""
    webhook = WebhookSink("hook", WebhookOptions("http://127.0.0.1:9/", ("s3cret",)),
                          Outbox.open(tmp_path / "outbox.db"))
    can = SinkRunner(webhook).can
    assert names(can) == {"durable", "background", "flushable", "health", "outbox",
                           "progress"}
    assert can.durable is webhook
    await webhook.aclose()
    nginx = NginxSink("edge", NginxOptions(file=str(tmp_path / "up.conf")))
    assert names(SinkRunner(nginx).can) == {"batch", "bound"}
