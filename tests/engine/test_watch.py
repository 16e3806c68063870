"""The watched connection's policy (sentinel.engine.watch) on plain virtual times: when a
loss is a hint, idle closes reconnected quietly with backoff, one connect per interval."""

from __future__ import annotations

import math

from sentinel.engine.watch import QUIET, Phase, Watch


def watch(interval: float = 1.0, timeout: float = 0.5) -> Watch:
    """A watch whose backoff waits exactly `interval * 2**(n-1)` (no jitter)."""
    return Watch(interval, timeout, lambda n: interval * 2 ** (n - 1))


def held(w: Watch, at: float) -> Watch:
    """`w` connected at `at`."""
    w.connect(at)
    w.connected(at)
    return w


def test_a_crash_is_a_hint_once_the_reconnect_is_refused() -> None:
    """Closed after 3.2 s of holding: reconnect at once as a check; refused -> the hint
    names both; the next try is an interval after that connect, or later, and is no
    hint when refused again (the probes judge a down backend)."""
    w = held(watch(), 0.0)
    assert w.lost(3.2, "closed") is None
    assert (w.phase, w.due) == (Phase.WAITING, 3.2)
    w.connect(3.2)
    assert w.refused(3.2, "connection refused") == (
        "closed by the backend, then connection refused")
    assert w.due == 4.2
    w.connect(4.2)
    assert w.refused(4.2, "connection refused") is None  # one hint per loss


def test_the_first_connect_failing_is_no_hint() -> None:
    """A backend already down at start: the probes judge it; retries back off."""
    w = watch()
    assert w.due == -math.inf
    w.connect(0.0)
    assert w.refused(0.0, "connection refused") is None
    w.connect(w.due)
    assert w.refused(1.0, "connection refused") is None
    assert w.due == 3.0  # the second failure waits 2 s


def test_an_idle_close_is_reconnected_quietly_and_backs_off_when_it_repeats() -> None:
    """A server that closes idle connections after 5 s: the first close is checked at
    once (and passes); from the second short-lived one in a row the wait grows."""
    w = held(watch(), 0.0)
    assert w.lost(5.0, "closed") is None
    assert w.due == 5.0
    held(w, 5.0)
    assert w.lost(10.0, "closed") is None
    assert w.due == 11.0  # backoff(1)
    held(w, 11.0)
    assert w.lost(16.0, "closed") is None
    assert w.due == 18.0  # backoff(2)


def test_a_connection_kept_quiet_long_resets_the_backoff() -> None:
    """After QUIET seconds held, a close is checked at once again."""
    w = held(watch(), 0.0)
    for at in (5.0, 10.0):
        w.lost(at, "closed")
        held(w, w.due)
    opened = w.due
    assert w.lost(opened + QUIET, "closed") is None
    assert w.due == opened + QUIET


def test_a_young_connection_is_checked_at_once_then_one_connect_per_interval() -> None:
    """Closed 0.3 s after connecting: checked at once all the same (a crash does not wait
    for the connection to age). That check connects, so it was an idle close: the next
    close waits for the backoff and for an interval since the last connect."""
    w = Watch(2.0, 0.1, lambda n: 0.5 * 2 ** (n - 1))
    held(w, 10.0)
    assert w.lost(10.3, "closed") is None
    assert w.due == 10.3
    held(w, 10.3)
    assert w.lost(10.6, "closed") is None
    assert w.due == 12.3  # not 11.1 (the backoff alone): one connect per interval


def test_a_failed_check_ends_the_idle_close_backoff() -> None:
    """After idle closes, a check that is refused (the backend died and came back) resets
    the backoff: the next loss is checked at once."""
    w = held(watch(), 0.0)
    w.lost(5.0, "closed")
    held(w, 5.0)
    w.lost(10.0, "closed")
    w.connect(w.due)
    assert w.refused(w.due, "connection refused") is not None
    w.probe_passed(20.0)
    held(w, w.due)
    assert w.lost(22.0, "closed") is None
    assert w.due == 22.0


def test_a_check_closed_again_at_once_is_a_hint() -> None:
    """A dying process's listener took the check's connection, then it was closed too:
    within the timeout of reconnecting, that is a hint."""
    w = held(watch(), 0.0)
    w.lost(3.0, "closed")
    held(w, 3.0)
    assert w.lost(3.01, "reset") == "reset by the backend again right after reconnecting"
    assert w.phase is Phase.WAITING


def test_a_check_that_times_out_is_a_hint() -> None:
    """The connect after a loss is not answered within the timeout: a hint."""
    w = held(watch(), 0.0)
    w.lost(3.0, "closed")
    w.connect(3.0)
    assert w.due == 3.5  # given up then
    assert w.refused(3.5, "connect timed out") == (
        "closed by the backend, then connect timed out")


def test_a_passing_probe_brings_the_reconnect_forward() -> None:
    """Connects failing while the backend was down (retries backing off): once a probe
    passes, the watch reconnects at once (one per interval still)."""
    w = watch()
    for at in (0.0, 1.0, 3.0):
        w.connect(at)
        w.refused(at, "connection refused")
    assert w.due == 7.0
    w.probe_passed(3.5)
    assert w.due == 4.0
    w.probe_passed(4.5)  # no failures since: nothing moves
    assert w.due == 4.0
