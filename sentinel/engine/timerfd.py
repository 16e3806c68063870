"""A Linux timerfd: a timer that makes a file descriptor readable when it fires.

Why. The probe loop waits on its epoll object with a deadline (the next start or
timeout). Waiting under a Trio cancel scope costs a Trio wakeup plus, when the
deadline is what ends the wait, a `Cancelled` exception raised and caught: about
13 us of CPU per wake, against 6 for a plain `wait_readable`. A timerfd in the
loop's own epoll set turns the deadline into one more ready descriptor, so every
wake is a plain readiness wake. Python 3.11 has no `os.timerfd_create` (3.13
does), hence this small ctypes binding to libc.

Arming costs one `timerfd_settime` call; arming again (or disarming) also clears an
expiry that was not read, so the owner never needs to `read` the descriptor.
"""

from __future__ import annotations

import ctypes
import math
import os

CLOCK_MONOTONIC = 1  # <time.h>
TFD_NONBLOCK = os.O_NONBLOCK  # <sys/timerfd.h>: the same values as the O_ flags
TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)
_create = _libc.timerfd_create
_create.argtypes = [ctypes.c_int, ctypes.c_int]
_create.restype = ctypes.c_int
_settime = _libc.timerfd_settime
_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                     ctypes.c_void_p]
_settime.restype = ctypes.c_int


class Timer:
    """A one-shot monotonic timer behind a non-blocking file descriptor (`fd`)."""

    __slots__ = ("_spec", "_spec_ref", "fd")

    def __init__(self) -> None:
        fd = _create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd = fd
        self._spec = _Itimerspec()  # reused: one arming allocates nothing
        self._spec_ref = ctypes.byref(self._spec)

    def arm(self, delay: float) -> None:
        """Fire `delay` seconds from now (at once, for 0 or less); `math.inf` disarms.
        Either way an expiry not yet read is cleared."""
        value = self._spec.it_value
        if delay == math.inf:
            value.tv_sec = value.tv_nsec = 0  # a zero value disarms
        else:
            ns = int(delay * 1e9) if delay > 1e-9 else 1  # 0 would disarm; 1 ns: at once
            value.tv_sec, value.tv_nsec = divmod(ns, 1_000_000_000)
        if _settime(self.fd, 0, self._spec_ref, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)
