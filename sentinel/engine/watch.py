"""Watched connections (SPEC 9, `watch: true`): when to connect, and what a lost
connection means, sans I/O.

Theory of operation
-------------------
A crashed process's kernel closes its sockets at once; a probe finds that only at
its next interval. So a watched backend has one idle connection held open: no
payload, no TCP keepalive unless asked for, nothing for the backend to log but one
long connection. When the backend closes or resets it, that is a hint, never a
verdict (the probe decides): sentinel reconnects at once, as a check. Refused (or
timed out, or closed again within the probe's timeout: a dying process's listener
may still take a connection), the backend is probed at once and at
`fast_interval` until its breaker settles (`Watch.lost`/`refused` return the
hint's text). Accepted, the close was the server's own: an idle timeout, reconnected
quietly.

Servers that close idle connections would make this a connection every few
seconds, so those reconnects back off: once the server has closed a connection
younger than QUIET and accepted the check, the next loss waits before its check
(`Backoff` from `interval` up to QUIET, jittered), and never reconnects sooner than
`interval` after the last connect; a connection that stays up QUIET resets it, as
does a check that fails. The first loss after a stable connection is checked at
once, however young the connection: that is the crash the watch is for. A connect
refused while the backend is down is retried with the same backoff, and at once
(within the one-per-interval rate) when a probe passes again (`probe_passed`), so a
restarted backend is watched again promptly.

Timeline, interval 1s, timeout 0.5s; a backend that closes idle connections after
5 s, then one that crashes::

    t=0     connect; connected            held
    t=5     closed by the backend         reconnect now, as a check
    t=5     connected                     the close was the server's: an idle close
    t=10    closed again                  reconnect after 0.5-1 s (then 1-2 s, 2-4 s, ...
                                          up to 60 s, while the closes go on)
    ...
    t=0     connect; connected            (a backend that keeps idle connections)
    t=3.2   closed (the process crashed)  reconnect now, as a check: refused -> hint
                                          "closed by the backend, then connection
                                          refused": probe now; retry at 4.2 or later
    t=9     a probe passes (restarted)    reconnect now; connected
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

QUIET = 60.0  # a connection the server kept this long resets the backoff


class Phase(Enum):
    """Where one watched connection stands."""

    WAITING = "waiting"  # no connection; connect at `due`
    CONNECTING = "connecting"  # a connect in flight, given up at `due`
    HELD = "held"  # connected and idle


class Watch:
    """One backend's watched connection (see the module docstring). The shell calls
    `connect` when `due` has come, and reports what the socket did. `backoff(n)` is the
    wait before retry `n` (the shell's jittered `Backoff` from `interval` to QUIET)."""

    __slots__ = ("_backoff", "_checking", "_fails", "_last_attempt", "_lost_age", "_opened",
                 "_strikes", "due", "interval", "phase", "timeout")

    def __init__(self, interval: float, timeout: float, backoff: Callable[[int], float]
                 ) -> None:
        self.interval = interval
        self.timeout = timeout
        self._backoff = backoff
        self.phase = Phase.WAITING
        self.due = -math.inf  # connect at once
        self._last_attempt = -math.inf
        self._opened = 0.0
        self._checking = False  # this connect (and its first `timeout`) follows a loss
        self._lost_age = 0.0  # how long the connection lost before it had lived
        self._strikes = 0  # idle closes in a row of connections younger than QUIET
        self._fails = 0  # connects in a row that failed

    def connect(self, now: float) -> None:
        """The shell starts a connect (`due` has come); it is given up at the new `due`."""
        self.phase = Phase.CONNECTING
        self._last_attempt = now
        self.due = now + self.timeout

    def connected(self, now: float) -> None:
        """The connect succeeded: held. After a loss, that loss was the server's own
        (an idle close)."""
        if self._checking:
            self._strikes = self._strikes + 1 if self._lost_age < QUIET else 0
        self.phase = Phase.HELD
        self._opened = now
        self._fails = 0
        self.due = math.inf

    def refused(self, now: float, error: str) -> str | None:
        """The connect failed (`error`: refused, unreachable, timed out). The hint's text
        when it was the check after a loss, else None (the probes judge a down backend)."""
        hint = f"closed by the backend, then {error}" if self._checking else None
        return self._failed(now, hint)

    def lost(self, now: float, how: str) -> str | None:
        """The backend closed or reset the held connection (`how`: "closed", "reset").
        Usually None: reconnect as a check at `due` (at once, unless the backend has
        been closing idle connections); the hint's text when the check's own connection
        did not hold."""
        age = now - self._opened
        if self._checking and age < self.timeout:
            return self._failed(now, f"{how} by the backend again right after reconnecting")
        self._checking = True
        self._lost_age = age
        self.phase = Phase.WAITING
        self.due = now
        if self._strikes:
            self.due = max(now + self._backoff(self._strikes), self._last_attempt + self.interval)
        return None

    def probe_passed(self, now: float) -> None:
        """A probe of the backend passed: if connects were failing, try again now (within
        the one-per-interval rate)."""
        if self.phase is Phase.WAITING and self._fails:
            self._fails = 0
            self.due = max(now, self._last_attempt + self.interval)

    def _failed(self, now: float, hint: str | None) -> str | None:
        self._strikes = 0  # whatever closed the connection, it was no idle close
        self._lost_age = math.inf  # nor is the next connect's success one
        self._checking = False  # one hint per loss: retries while it is down are quiet
        self.phase = Phase.WAITING
        self._fails += 1
        self.due = max(now + self._backoff(self._fails),
                       self._last_attempt + self.interval)
        return hint
