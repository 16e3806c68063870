"""Webhook delivery with the durable outbox on: events/s and transition -> delivery latency.

    .venv/bin/python bench/webhook_bench.py [--events 5000] [--backends 64] [--rate 200]

The receiver is a minimal asyncio HTTP/1.1 server in its own process (so it
does not share sentinel's CPU), recording when each webhook-id arrived. The
sending side is the real path: SinkRunner -> WebhookSink.apply (SQLite WAL,
synchronous=FULL commit) -> delivery task -> httpx POST, signed. Two runs:

- throughput: all events published at once over `--backends` backends;
  events/s = events / (last arrival - first publish);
- latency: events published at `--rate`/s (one at a time, like transitions);
  latency = arrival time - publish time (wall clock, same machine), p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import trio

from sentinel.model import Event, ServiceView
from sentinel.sinks.base import Update
from sentinel.sinks.runner import SinkRunner
from sentinel.sinks.webhook.options import WebhookOptions
from sentinel.sinks.webhook.outbox import Outbox
from sentinel.sinks.webhook.sink import WebhookSink, outbox_path
from sentinel.timefmt import rfc3339, uuid7

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


# -- the receiver (run as `webhook_bench.py --receiver PORT`) --------------------------


def serve_receiver(port: int) -> None:
    """Answer every POST 200 at once, noting arrival times; GET /dump returns them."""
    arrivals: dict[str, float] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                fields = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
                fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
                await reader.readexactly(int(fields.get(b"content-length", b"0")))
                body = b""
                if lines[0].startswith(b"GET /dump"):
                    body = json.dumps(arrivals).encode()
                else:
                    arrivals[fields[b"webhook-id"].decode()] = time.time()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the sending side -------------------------------------------------------------------


def make_event(seq: int, backends: int) -> Event:
    """Event number `seq`, spread over `backends` backends."""
    now = time.time()
    return Event(id=uuid7(int(now * 1000)), seq=seq, time=rfc3339(now), service="web",
                 backend=f"b{seq % backends}", address="127.0.0.1:1", from_state="up",
                 to_state="down" if seq % 2 else "up", weight=0, reason="bench")


async def run_once(url: str, state_dir: Path, events: int, backends: int,
                   rate: float | None) -> tuple[dict[str, float], dict[str, float]]:
    """Publish `events` (all at once, or at `rate`/s); return publish and arrival times."""
    options = WebhookOptions(url=url, secrets=(SECRET,), concurrency=16)
    sink = WebhookSink("bench", options, Outbox.open(outbox_path(state_dir, "bench")))
    runner = SinkRunner(sink)
    published: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        for seq in range(1, events + 1):
            event = make_event(seq, backends)
            published[event.id] = time.time()
            runner.publish(Update(ServiceView("web", ()), (event,)))
            if rate:
                await trio.sleep(1 / rate)
        with trio.fail_after(120):
            while sink.statistics().delivered < events:  # noqa: ASYNC110
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    await sink.aclose()
    async with httpx.AsyncClient() as client:
        arrivals: dict[str, float] = (await client.get(url.replace("/hook", "/dump"))).json()
    return published, arrivals


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> None:
    """Run both measurements and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--backends", type=int, default=64)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--latency-events", type=int, default=1000)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver is not None:
        serve_receiver(args.receiver)
        return
    rows = []
    for label, events, rate in (("burst (throughput)", args.events, None),
                                (f"{args.rate:g} events/s (latency)", args.latency_events,
                                 args.rate)):
        with tempfile.TemporaryDirectory() as tmp:
            port = _free_port()
            receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)])
            try:
                _wait_port(port)
                published, arrivals = trio.run(run_once, f"http://127.0.0.1:{port}/hook",
                                               Path(tmp), events, args.backends, rate)
            finally:
                receiver.kill()
                receiver.wait()
        latencies = [(arrivals[i] - t) * 1000 for i, t in published.items()]
        span = max(arrivals.values()) - min(published.values())
        rows.append((label, events, events / span, statistics.median(latencies),
                     pct(latencies, 0.99)))
    print(f"webhook delivery, durable outbox (SQLite WAL, synchronous=FULL), "
          f"{args.backends} backends, concurrency 16; {date.today()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print()
    print("| run | events | events/s delivered | latency p50 ms | latency p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, events, per_s, p50, p99 in rows:
        print(f"| {label} | {events} | {per_s:,.0f} | {p50:.1f} | {p99:.1f} |")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"receiver did not start on port {port}")


if __name__ == "__main__":
    main()
