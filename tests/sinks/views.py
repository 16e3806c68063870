"""Service views and updates for sink tests, built from short specs."""

from __future__ import annotations

from sentinel.model import BackendView, Event, ServiceView, State
from sentinel.sinks.base import Update


def backend(name: str, port: int, state: State = State.UP, *, weight: int = 1,
            configured: int | None = None, backup: bool = False) -> BackendView:
    """A backend on 127.0.0.1:`port`; its published weight is 0 unless up."""
    return BackendView(name=name, address=f"127.0.0.1:{port}", host="127.0.0.1", port=port,
                       state=state, weight=weight if state is State.UP else 0,
                       configured_weight=configured or weight, backup=backup)


def view(service: str, *backends: BackendView) -> ServiceView:
    """A service view of `backends`."""
    return ServiceView(service, tuple(backends))


def update(service: str, *seqs: int, state: State = State.UP) -> Update:
    """A one-backend view of `service` carrying events numbered `seqs`."""
    backend = BackendView(name="b1", address="127.0.0.1:1", host="127.0.0.1", port=1,
                          state=state, weight=1 if state is State.UP else 0,
                          configured_weight=1)
    events = tuple(Event(id=f"id-{s}", seq=s, time="2026-01-01T00:00:00.000Z",
                         service=service, backend="b1", address="127.0.0.1:1",
                         from_state="up", to_state=state.value, weight=0, reason="test")
                   for s in seqs)
    return Update(ServiceView(service, (backend,)), events)
