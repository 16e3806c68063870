"""The systemd notify protocol (sd_notify(3)), spoken directly: no libsystemd binding,
no new dependency.

Under `Type=notify` systemd hands the service the address of a unix datagram
socket in `$NOTIFY_SOCKET` (a path, or an abstract name written with a
leading `@`) and reads newline-separated `KEY=value` assignments from it:

    READY=1          start-up is done (sentinel: API listening, first probe round made)
    EXTEND_TIMEOUT_USEC=N  start-up may take N us more than TimeoutStartSec allows (the
                     first round spreads backends over their interval, which may be long)
    RELOADING=1      a reload begins; systemd 253+ wants MONOTONIC_USEC=<CLOCK_MONOTONIC
                     in microseconds> in the same datagram; READY=1 ends the reload
    STOPPING=1       a stop begins
    STATUS=...       the line `systemctl status` shows
    WATCHDOG=1       still alive: with `WatchdogSec=` systemd sets WATCHDOG_USEC (and
                     WATCHDOG_PID) and kills the service when no ping arrives that long

Pings come from a Trio task every half of WATCHDOG_USEC (sd_watchdog_enabled(3)'s
advice), so they stop when the event loop stops turning: a wedged sentinel is
restarted, a busy but running one is not. Without `$NOTIFY_SOCKET` (not under
systemd) every call does nothing. A datagram that cannot be sent is logged, never
raised: losing systemd's ear must not stop the checker.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

import trio

log = logging.getLogger(__name__)
ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | None:
    """The socket address `$NOTIFY_SOCKET` names: an absolute path, or `@name` for the
    abstract namespace (a leading NUL byte); None for anything else (systemd 254's
    `vsock:` addresses included)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return value if value.startswith("/") else None


def watchdog_interval(usec: str | None, watchdog_pid: str | None, pid: int) -> float | None:
    """Seconds between pings for WATCHDOG_USEC (half of it), or None when no watchdog is
    asked of this process: unset, not a positive integer, or WATCHDOG_PID names another
    process (the variables were inherited, as sd_watchdog_enabled(3) checks)."""
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if watchdog_pid and watchdog_pid != str(pid):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    """Sends notify messages to systemd; does nothing when not run by systemd."""

    def __init__(self, address: str | None = None, watchdog: float | None = None) -> None:
        """`address` as `socket_address` returns it; `watchdog`: seconds between pings."""
        self.address = address
        self.watchdog_every = watchdog
        self._ready = False
        self._sock: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None,
                         pid: int | None = None) -> Notifier:
        """A notifier for the socket and watchdog systemd passed in `environ`
        (os.environ). The variables are removed, as sd_notify's `unset_environment`
        does, so script probes and exec sinks do not inherit them."""
        env = os.environ if environ is None else environ
        raw, usec, wpid = (env.pop(key, None) for key in ENV_KEYS)
        address = socket_address(raw) if raw else None
        if raw and address is None:
            log.warning("NOTIFY_SOCKET=%s: not a path or @abstract name; not notifying "
                        "systemd", raw)
        interval = watchdog_interval(usec, wpid, os.getpid() if pid is None else pid)
        return cls(address, interval if address is not None else None)

    def send(self, *assignments: str) -> None:
        """One datagram of `KEY=value` lines."""
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)  # a full queue must not stall the event loop
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            if not self._failing:  # once per outage, not once per watchdog ping
                log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"),
                            exc.strerror or exc)
            self._failing = True
        else:
            self._failing = False

    def status(self, text: str) -> None:
        """Set the line `systemctl status` shows."""
        self.send(f"STATUS={text}")

    def starting(self, status: str, within: float) -> None:
        """Start-up goes on for up to `within` seconds from now."""
        self.send(f"EXTEND_TIMEOUT_USEC={round(within * 1_000_000)}", f"STATUS={status}")

    def ready(self, status: str) -> None:
        """Start-up (or a reload) is done."""
        self._ready = True
        self.send("READY=1", f"STATUS={status}")

    def reloading(self, status: str) -> None:
        """A reload begins (ignored before READY: systemd is still waiting for start-up)."""
        if self._ready:
            # systemd matches the reload by CLOCK_MONOTONIC, which trio's clock is not
            # (it carries a random offset)
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def reloaded(self, status: str) -> None:
        """A reload ended (applied or refused): READY=1 again, once start-up was."""
        if self._ready:
            self.send("READY=1", f"STATUS={status}")
        else:
            self.status(status)

    def stopping(self, status: str) -> None:
        """A stop begins."""
        self.send("STOPPING=1", f"STATUS={status}")

    async def watchdog(self) -> None:
        """Ping every half of WATCHDOG_USEC until cancelled (returns at once when systemd
        asked for no watchdog)."""
        if self.watchdog_every is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_every)

    def close(self) -> None:
        """Close the socket (a later send opens it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
