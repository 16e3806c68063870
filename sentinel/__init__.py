"""sentinel: a health-check and circuit-breaker sidecar on Trio.

The public API: `load_config(path) -> Config`, `Engine(config)` (`await engine.run()`),
and the exceptions, whose tree `sentinel.errors` draws. tests/test_exports.py pins it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sentinel.config.model import Config
    from sentinel.engine.engine import Engine
    from sentinel.errors import (
        BadFrame,
        BadRequest,
        ConfigError,
        ConfigErrors,
        EtcdCompacted,
        EtcdError,
        IllegalTransition,
        NoResponse,
        NotLeader,
        OutboxLocked,
        ProtocolError,
        ResolveError,
        SentinelError,
        SignatureError,
        SinkError,
        SinkRejected,
        SinkUnavailable,
        StartupError,
        StateError,
    )
    from sentinel.sinks.registry import load_config

# Resolved on first use (PEP 562): importing a pure core (a breaker, the Maglev table)
# must not import the engine and with it Trio (tests/test_layering.py).
_EXPORTS = {
    "load_config": "sentinel.sinks.registry",
    "Config": "sentinel.config.model",
    "Engine": "sentinel.engine.engine",
    "SentinelError": "sentinel.errors",
    "ConfigError": "sentinel.errors",
    "ConfigErrors": "sentinel.errors",
    "SinkError": "sentinel.errors",
    "SinkUnavailable": "sentinel.errors",
    "SinkRejected": "sentinel.errors",
    "StateError": "sentinel.errors",
    "OutboxLocked": "sentinel.errors",
    "StartupError": "sentinel.errors",
    "BadRequest": "sentinel.errors",
    "SignatureError": "sentinel.errors",
    "ProtocolError": "sentinel.errors",
    "NoResponse": "sentinel.errors",
    "BadFrame": "sentinel.errors",
    "ResolveError": "sentinel.errors",
    "IllegalTransition": "sentinel.errors",
    "EtcdError": "sentinel.errors",
    "EtcdCompacted": "sentinel.errors",
    "NotLeader": "sentinel.errors",
}

__all__ = [
    "BadFrame",
    "BadRequest",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "Engine",
    "EtcdCompacted",
    "EtcdError",
    "IllegalTransition",
    "NoResponse",
    "NotLeader",
    "OutboxLocked",
    "ProtocolError",
    "ResolveError",
    "SentinelError",
    "SignatureError",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "StartupError",
    "StateError",
    "__version__",
    "load_config",
]


def __getattr__(name: str) -> Any:
    """`sentinel.Engine` and the rest of the public API, imported when first used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sentinel' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The public API, for `dir(sentinel)` and completion."""
    return sorted(__all__)
