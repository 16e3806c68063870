"""File descriptors: how many sentinel may hold, and who gets them.

An API connection flood (no token is needed to connect) once took every
descriptor: probes of healthy backends failed with "Too many open files" and
the state write crashed the process. So at start the soft RLIMIT_NOFILE is
raised as far as the hard limit allows, and the limit is split three ways:

- probes: at most `max_in_flight` checks hold a socket (or a script's pipes)
  at once (the engine's in-flight cap);
- a reserve of RESERVE for everything else that must not starve: state
  writes, sink files, commands and connections, the webhook outbox, trace
  exports, the log;
- the API: what is left, halved, at most API_MAX connections. Connections
  beyond it wait in the kernel's listen backlog (no descriptor of ours) until
  one closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from dataclasses import dataclass

log = logging.getLogger(__name__)
RESERVE = 64
API_MIN, API_MAX = 8, 1024


@dataclass(frozen=True, slots=True)
class FdBudget:
    """The descriptor limit and its split."""

    limit: int  # soft RLIMIT_NOFILE after raising it
    in_use: int  # open at start (interpreter, logs, the state dir's files)
    probes: int  # max_in_flight
    api: int  # API connections served at once

    def describe(self) -> str:
        """One line for the start-up log."""
        return (f"file descriptors: limit {self.limit}, {self.in_use} in use; probes "
                f"{self.probes}, API connections {self.api}, {RESERVE} reserved")


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (when it is finite); the soft limit
    in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):  # a sandbox may refuse; keep soft
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def budget(max_in_flight: int) -> FdBudget:
    """Raise the limit and split it (see the module docstring); warns when the limit
    leaves probes less than `max_in_flight` descriptors."""
    limit = raise_nofile()
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: count nothing, the reserve absorbs it
        in_use = 0
    spare = limit - in_use - RESERVE - max_in_flight
    if spare < 2 * API_MIN:
        log.warning("RLIMIT_NOFILE %d is low for max_in_flight %d (+%d reserved): raise the "
                    "hard limit (LimitNOFILE= under systemd) or lower max_in_flight", limit,
                    max_in_flight, RESERVE)
    return FdBudget(limit, in_use, max_in_flight, max(API_MIN, min(API_MAX, spare // 2)))
