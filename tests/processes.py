"""Watching processes a test's commands started: is one alive, wait for some to go.

Polling, with a bound: no event reports another process's child dying.
"""

from __future__ import annotations

from pathlib import Path

import trio


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (PID 1 may be slow to reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_gone(pids: list[int], within: float = 10.0) -> list[int]:
    """Wait up to `within` seconds for every one of `pids` to be gone (SIGKILL takes a
    moment to land); the ones still alive then."""
    with trio.move_on_after(within):
        while any(alive(p) for p in pids):  # noqa: ASYNC110 - nothing to wait on but PIDs
            await trio.sleep(0.02)
    return [p for p in pids if alive(p)]
