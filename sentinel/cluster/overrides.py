"""Admin overrides kept in etcd, so every member applies them and none forgets them.

    PREFIX/overrides/SERVICE/BACKEND = "drain" | "maint"

(SERVICE and BACKEND percent-encoded, as observations are.) No lease: an
override outlives the member that set it, and any member's restart. `ready`
deletes the key. Every member follows the prefix (`OverrideTable`, a
PrefixMirror): the leader applies overrides to the agreed view, the others
show them in /v1/state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote, unquote

import trio

from sentinel.cluster.etcd import EtcdClient
from sentinel.cluster.mirror import Changes, PrefixMirror
from sentinel.model import State

log = logging.getLogger(__name__)
BackendKey = tuple[str, str]  # (service, backend)
ACTIONS = {"drain": State.DRAIN, "maint": State.MAINT, "ready": None}


def override_key(prefix: str, service: str, backend: str) -> str:
    """Where the override of service/backend lives."""
    return f"{prefix}overrides/{quote(service, safe='')}/{quote(backend, safe='')}"


async def store_override(client: EtcdClient, prefix: str, service: str, backend: str,
                         action: str) -> int:
    """Record `action` (drain, maint, or ready to lift it) for every member; returns the
    store revision after it. EtcdError when etcd cannot take it."""
    key = override_key(prefix, service, backend)
    state = ACTIONS[action]
    if state is None:
        return await client.delete(key)
    return await client.put(key, state.value.encode())


class OverrideTable:
    """Every override in force, followed from etcd."""

    def __init__(self, client: EtcdClient, prefix: str, *,
                 on_change: Callable[[set[BackendKey]], None] | None = None,
                 check_every: float = 5.0) -> None:
        self.prefix = prefix
        self.overrides: dict[BackendKey, State] = {}
        self._on_change = on_change
        self.mirror = PrefixMirror(client, f"{prefix}overrides/", on_change=self._changed,
                                   check_every=check_every)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Follow the overrides until cancelled (see PrefixMirror.run)."""
        await self.mirror.run(task_status=task_status)

    def _changed(self, changes: Changes) -> None:
        touched: set[BackendKey] = set()
        base = f"{self.prefix}overrides/"
        for key, kv in changes.items():
            parts = key[len(base):].split("/")
            if len(parts) != 2 or not all(parts):
                log.warning("cluster: ignoring %s: not an override key", key)
                continue
            target = (unquote(parts[0]), unquote(parts[1]))
            if kv is None:
                self.overrides.pop(target, None)
            else:
                try:
                    state = State(kv.value.decode())
                    if state not in (State.DRAIN, State.MAINT):
                        raise ValueError(state)
                except ValueError:
                    log.warning("cluster: ignoring %s: %r is not drain or maint", key, kv.value)
                    continue
                self.overrides[target] = state
            touched.add(target)
        if touched and self._on_change is not None:
            self._on_change(touched)
