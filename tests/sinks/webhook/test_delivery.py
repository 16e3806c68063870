"""Deliveries to a real loopback receiver: retries, slow answers, Retry-After, dead
letters, per-backend order, bounds. Every accepted delivery is verified with the
`standardwebhooks` library."""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest
import trio

from tests.sinks.webhook.conftest import SECRET, MakeSink, event, until, update
from tests.sinks.webhook.receiver import Receiver, Reply, Request

FAST = {"initial_delay": 0.02, "max_delay": 0.1}


def attempts_of(seen: list[Request], request: Request) -> int:
    """How many earlier requests carried this request's webhook-id."""
    return sum(1 for r in seen if r.headers["webhook-id"] == request.headers["webhook-id"])


async def test_fails_first_attempts_then_delivers_same_id_and_bytes(
        make_sink: MakeSink, receiver: Receiver) -> None:
    """A receiver failing the first 2 attempts of every event (503, then a 500) still gets
    each event once accepted, signed validly, with the same id and body on every try."""
    receiver.script = lambda r, seen: Reply([503, 500, 200][min(attempts_of(seen, r), 2)])
    sink = await make_sink(receiver.url, **FAST)
    events = [event() for _ in range(4)]
    await sink.apply(update(*events))
    with trio.fail_after(10):
        await receiver.wait_for(4)
    assert [e["id"] for e in receiver.verified(SECRET)] == [e.id for e in events]
    by_id: dict[str, set[bytes]] = {}
    for r in receiver.requests:
        by_id.setdefault(r.headers["webhook-id"], set()).add(r.body)
    assert Counter(r.headers["webhook-id"] for r in receiver.requests) == {
        e.id: 3 for e in events}
    assert all(len(bodies) == 1 for bodies in by_id.values())
    with trio.fail_after(10):
        await sink.wait_flushed()
    stats = sink.statistics()
    assert (stats.delivered, stats.failed_attempts, stats.outbox.pending) == (4, 8, 0)


async def test_slow_answer_times_out_and_is_retried(make_sink: MakeSink,
                                                    receiver: Receiver) -> None:
    """An answer slower than `timeout` counts as a failure and the event is sent again
    (when the abandoned attempt ends is pinned on virtual time in test_timing.py)."""
    receiver.script = lambda r, seen: Reply(delay=3600.0 if not seen else 0.0)
    sink = await make_sink(receiver.url, timeout=0.2, **FAST)
    await sink.apply(update(event()))
    with trio.fail_after(10):
        await receiver.wait_for(1)  # a retry: the first request is never answered
    first, *again = receiver.requests
    assert again
    assert {r.headers["webhook-id"] for r in again} == {first.headers["webhook-id"]}
    assert all(r is not first for r in receiver.accepted())
    assert sink.statistics().last_error == "timed out after 0.2s"


async def test_429_retry_after_is_honoured(make_sink: MakeSink, receiver: Receiver) -> None:
    """A 429 with `Retry-After: 1` is retried no sooner than a second later, although the
    sink's own backoff would retry within 20 ms (exactly when: test_timing.py)."""
    receiver.script = lambda r, seen: (Reply(429, (("retry-after", "1"),)) if not seen
                                       else Reply())
    sink = await make_sink(receiver.url, **FAST)
    await sink.apply(update(event()))
    with trio.fail_after(10):
        await receiver.wait_for(1)
    gap = receiver.requests[1].at - receiver.requests[0].at
    assert gap >= 0.95
    assert receiver.verified(SECRET)


async def test_other_4xx_is_dead_lettered_and_the_next_event_goes_on(
        make_sink: MakeSink, receiver: Receiver) -> None:
    """A 410 is permanent: one attempt, a dead letter with the reason; the backend's next
    event is delivered after it."""
    first, second = event(), event()
    receiver.script = lambda r, seen: Reply(410 if r.event["id"] == first.id else 200)
    sink = await make_sink(receiver.url, **FAST)
    await sink.apply(update(first, second))
    with trio.fail_after(10):
        await receiver.wait_for(1)
        await sink.wait_flushed()
    [dead] = await sink.entries(dead=True, limit=10)
    assert (dead.event_id, dead.attempts, dead.last_error) == (first.id, 1, "HTTP 410")
    assert [e["id"] for e in receiver.verified(SECRET)] == [second.id]


async def test_per_backend_order_holds_under_random_failures(make_sink: MakeSink,
                                                             receiver: Receiver) -> None:
    """With 40% of answers failing at random, each backend's events are accepted in the
    order they were published, every one exactly once."""
    rng = random.Random(3)
    receiver.script = lambda r, seen: Reply(503 if rng.random() < 0.4 else 200)
    sink = await make_sink(receiver.url, concurrency=3, **FAST)
    events = [event(backend=f"b{i % 3}") for i in range(30)]
    for i in range(0, 30, 5):
        await sink.apply(update(*events[i:i + 5]))
    with trio.fail_after(20):
        await receiver.wait_for(30)
    accepted = receiver.verified(SECRET)
    for backend in ("b0", "b1", "b2"):
        seqs = [e["seq"] for e in accepted if e["backend"] == backend]
        assert seqs == [e.seq for e in events if e.backend == backend]


async def test_a_failing_backend_does_not_hold_up_the_others(make_sink: MakeSink,
                                                             receiver: Receiver) -> None:
    """Backend a's events keep failing; backend b's are delivered meanwhile."""
    receiver.script = lambda r, seen: Reply(503 if r.event["backend"] == "a" else 200)
    sink = await make_sink(receiver.url, **FAST)
    await sink.apply(update(*[event(backend=n) for n in "ababab"]))
    with trio.fail_after(10):
        while sink.statistics().delivered < 3:
            await receiver.arrived.wait()
    assert {e["backend"] for e in receiver.verified(SECRET)} == {"b"}
    assert sink.statistics().outbox.pending == 3


async def test_receiver_down_past_give_up_age_gives_dead_letters(make_sink: MakeSink,
                                                                 refused_port: int) -> None:
    """Nothing listens: after `give_up_after` every event is a dead letter saying why."""
    sink = await make_sink(f"http://127.0.0.1:{refused_port}/hook", give_up_after=0.3,
                           **FAST)
    await sink.apply(update(event(backend="a"), event(backend="a"), event(backend="b")))
    await until(sink, lambda s: s.outbox.dead >= 3, 0.05)
    dead = await sink.entries(dead=True, limit=10)
    assert all(e.last_error.startswith("gave up after") for e in dead)
    assert all("ConnectError" in e.last_error for e in dead)
    assert sink.statistics().outbox.pending == 0


async def test_over_max_pending_drops_are_counted_and_logged(
        make_sink: MakeSink, caplog: pytest.LogCaptureFixture, refused_port: int) -> None:
    """Past max_pending the oldest entries are dropped, counted and logged, never silent."""
    sink = await make_sink(f"http://127.0.0.1:{refused_port}/hook", max_pending=3,
                           initial_delay=60.0)
    with caplog.at_level(logging.WARNING, "sentinel.sinks.webhook"):
        await sink.apply(update(*[event() for _ in range(5)]))
    stats = sink.statistics()
    assert (stats.outbox.pending + stats.outbox.dead, stats.outbox.dropped) == (3, 2)
    assert "dropped 2 events" in caplog.text


async def test_retry_and_purge_reach_the_running_sink(make_sink: MakeSink,
                                                      receiver: Receiver) -> None:
    """A dead letter retried by the operator is delivered; a purged one is gone."""
    receiver.script = lambda r, seen: Reply(400 if len(seen) < 2 else 200)
    sink = await make_sink(receiver.url, **FAST)
    keep, drop = event(backend="a"), event(backend="b")
    await sink.apply(update(keep, drop))
    await until(sink, lambda s: s.outbox.dead >= 2, 0.02)
    assert [e.event_id for e in await sink.purge([drop.id], pending_too=False)] == [drop.id]
    assert [e.event_id for e in await sink.retry(None)] == [keep.id]
    with trio.fail_after(10):
        await receiver.wait_for(1)
    assert [e["id"] for e in receiver.verified(SECRET)] == [keep.id]


async def test_counts_kept_in_memory_match_the_outbox(make_sink: MakeSink,
                                                      receiver: Receiver) -> None:
    """statistics() reads no SQLite, yet its pending, dead and dropped counts agree with
    the outbox file through dead-lettering, a retry, a purge and the max_pending bound,
    and a restarted sink starts from the file's counts."""
    receiver.script = lambda r, seen: Reply(410)
    sink = await make_sink(receiver.url, max_pending=4, **FAST)

    async def agree() -> None:
        with trio.fail_after(10):
            await sink.wait_flushed()
        assert sink.statistics().outbox == sink.outbox.counts()

    await sink.apply(update(*[event(backend=f"b{i}") for i in range(3)]))
    stats = await until(sink, lambda s: s.outbox.dead == 3)
    assert stats.outbox.pending == 0
    await agree()
    receiver.script = lambda r, seen: Reply(503)
    await sink.retry(None)  # dead letters pending again, failing
    stats = await until(sink, lambda s: s.failed_attempts >= 4)
    assert (stats.outbox.pending, stats.outbox.dead) == (3, 0)
    await agree()
    await sink.purge([(await sink.entries(dead=None, limit=1))[0].event_id], pending_too=True)
    await agree()
    await sink.apply(update(*[event(backend=f"c{i}") for i in range(4)]))  # 6 > max_pending
    stats = sink.statistics()
    assert (stats.outbox.pending, stats.outbox.dropped) == (4, 2)
    await agree()
    restarted = await make_sink(receiver.url, start=False)
    assert restarted.statistics().outbox == sink.outbox.counts()
