"""Probe sharing: identical probes to the same address run once.

When several services (or several checks of one service) probe the same
host:port with the same probe settings, one task runs the probe and every
member check sees the result. Script probes are never shared: their
environment names the service and backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from sentinel.config.model import ProbeConfig
from sentinel.engine.backend import CheckSlot

if TYPE_CHECKING:
    from sentinel.probes.exchange import LeanProbe
    from sentinel.probes.rawsock import Address

GroupKey = tuple[ProbeConfig, str, int, str]


def group_key(probe: ProbeConfig, slot: CheckSlot) -> GroupKey:
    """What makes two checks the same probe (`probe`: the slot's config)."""
    backend = slot.backend
    owner = f"{backend.service}/{backend.config.name}" if probe.type == "script" else ""
    return (probe, backend.config.host, backend.config.port, owner)


class ProbeGroup:
    """The checks one probe task (or the probe loop) feeds, and the scope that stops it."""

    # The probe loop's: what its checks run (set as it is queued), and where they connect
    # (its host as an IP literal, None for a name: the loop's resolver task answers).
    probe: LeanProbe
    address: Address | None
    __slots__ = ("address", "instant", "key", "members", "nap", "probe", "queued", "scope",
                 "stopped")

    def __init__(self, key: GroupKey, members: list[CheckSlot]) -> None:
        self.key = key
        self.members = members
        self.scope = trio.CancelScope()
        self.stopped = False  # a plain flag: the probe loop checks it on every check
        self.nap: trio.CancelScope | None = None  # its task's wait for `due()`, if waiting
        self.queued: float | None = None  # the probe loop's: when its next check starts
        self.instant = True  # the probe loop's: its last connect completed within `connect`

    def hurry(self) -> None:
        """A member's `next_due` moved earlier: end its task's wait then (the probe loop's
        groups are hurried by the loop instead)."""
        if self.nap is not None:
            self.nap.deadline = min(self.nap.deadline, self.due())

    def stop(self) -> None:
        """Stop probing for this group (its task, or its place in the probe loop)."""
        self.stopped = True
        self.scope.cancel()

    def due(self) -> float:
        """The earliest time any member wants its next probe."""
        members = self.members
        if len(members) == 1:  # the common case, asked after every check
            due = members[0].next_due
            assert due is not None
            return due
        return min(m.next_due for m in members if m.next_due is not None)
