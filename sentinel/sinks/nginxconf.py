"""Rendering nginx `upstream` blocks from service views (pure; no I/O)."""

from __future__ import annotations

from collections.abc import Iterable

from sentinel.model import ServiceView, State


def render_upstream(view: ServiceView, *, name: str | None = None, mode: str = "down",
                    extra: str = "") -> str:
    """One `upstream NAME { ... }` block.

    A backend not up is marked `down` (mode "down": keeps hash-based
    upstreams stable) or left out (mode "remove"). Weights are the full
    configured weights: open-source nginx has no slow_start, and a reload per
    ramp step would cost more than it gives.
    """
    lines = [f"upstream {name or view.service} {{"]
    servers = 0
    for b in view.backends:
        up = b.state is State.UP
        if not up and mode == "remove":
            continue
        params = [f"weight={max(1, b.weight if up else b.configured_weight)}"]
        if b.backup:
            params.append("backup")
        if not up:
            params.append("down")
        if extra:
            params.append(extra)
        lines.append(f"    server {b.address} {' '.join(params)};")
        servers += 1
    if servers == 0:
        # nginx refuses an upstream with no servers; keep the block valid and closed.
        lines.append("    server 127.0.0.1:1 down;  # no backend available")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_file(views: Iterable[ServiceView], *, mode: str = "down", header: str = "") -> str:
    """Every service's upstream block, in name order, behind an optional comment header."""
    blocks = [render_upstream(v, mode=mode) for v in sorted(views, key=lambda v: v.service)]
    head = f"# {header}\n" if header else ""
    return head + "\n".join(blocks)
