"""Service views for sink tests, built from short specs."""

from __future__ import annotations

from sentinel.model import BackendView, ServiceView, State


def backend(name: str, port: int, state: State = State.UP, *, weight: int = 1,
            configured: int | None = None, backup: bool = False) -> BackendView:
    """A backend on 127.0.0.1:`port`; its published weight is 0 unless up."""
    return BackendView(name=name, address=f"127.0.0.1:{port}", host="127.0.0.1", port=port,
                       state=state, weight=weight if state is State.UP else 0,
                       configured_weight=configured or weight, backup=backup)


def view(service: str, *backends: BackendView) -> ServiceView:
    """A service view of `backends`."""
    return ServiceView(service, tuple(backends))
