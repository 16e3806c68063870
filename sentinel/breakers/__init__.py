"""Breakers: pure state machines turning probe results into UP/DOWN verdicts.

One file per kind, registered here by config type (`make_breaker`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from sentinel.breakers.base import Breaker, Change, Health, Transition
from sentinel.breakers.circuit import CircuitBreaker
from sentinel.breakers.nginx import NginxBreaker
from sentinel.breakers.threshold import ThresholdBreaker
from sentinel.config.model import (
    BreakerConfig,
    CircuitBreakerConfig,
    InitState,
    NginxBreakerConfig,
    ThresholdBreakerConfig,
)

__all__ = [
    "Breaker",
    "Change",
    "CircuitBreaker",
    "Health",
    "NginxBreaker",
    "ThresholdBreaker",
    "Transition",
    "make_breaker",
]

_BREAKERS: Final[dict[type[BreakerConfig], Callable[[Any, Health | InitState], Breaker]]] = {
    NginxBreakerConfig: NginxBreaker,
    ThresholdBreakerConfig: ThresholdBreaker,
    CircuitBreakerConfig: CircuitBreaker,
}


def make_breaker(config: BreakerConfig, initial: Health | InitState = Health.UP) -> Breaker:
    """A fresh breaker of the kind `config` describes, starting at `initial`.

    A Health restores a verdict from disk: `Health.DOWN` starts fully down (the
    first observation is a trial). An InitState is a backend's configured
    `init_state`, used when there is no saved verdict.
    """
    try:
        factory = _BREAKERS[type(config)]
    except KeyError:
        raise TypeError(f"no breaker for config type {type(config).__name__}") from None
    return factory(config, initial)
