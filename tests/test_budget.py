"""The detection budgets `sentinel check` prints (sentinel.budget): pinned for ordinary
settings of every breaker kind, so a faster simulation cannot change a number."""

from __future__ import annotations

import pytest

from sentinel.budget import compute_budget
from sentinel.config import (
    BackendConfig,
    BreakerConfig,
    CircuitBreakerConfig,
    NginxBreakerConfig,
    ProbeConfig,
    ServiceConfig,
    ThresholdBreakerConfig,
    Timing,
)


def service(timing: Timing, breaker: BreakerConfig) -> ServiceConfig:
    """One service with one backend, probed with `timing`, judged by `breaker`."""
    return ServiceConfig(name="s", backends=(BackendConfig("b", "h:1", "h", 1),),
                         probe=ProbeConfig(timing=timing), breaker=breaker)


# (id, timing, breaker, death -> removal, recovery -> return), as the simulation that ran
# every phase from t=0 computed them.
PINNED = [
    ("threshold-defaults", Timing(),
     ThresholdBreakerConfig(),
     7.0, 4.0),
    ("threshold-fast-down", Timing(fast_interval=0.2, down_interval=5),
     ThresholdBreakerConfig(),
     5.0, 5.2),
    ("threshold-jitter",
     Timing(interval=1, fast_interval=0.5, down_interval=3, timeout=0.5, jitter=0.2),
     ThresholdBreakerConfig(rise=3, fall=2),
     2.3, 4.8),
    ("nginx-defaults", Timing(),
     NginxBreakerConfig(),
     3.0, 11.0),
    ("nginx-sliding", Timing(interval=1, fast_interval=0.2, timeout=0.5),
     NginxBreakerConfig(max_fails=3, passes=2),
     2.5, 10.7),
    ("nginx-chained", Timing(interval=1, fast_interval=0.2, timeout=0.5),
     NginxBreakerConfig(max_fails=3, passes=2, window='chained'),
     2.5, 10.7),
    ("nginx-short-window", Timing(fast_interval=1),
     NginxBreakerConfig(max_fails=2, fail_timeout=1.5),
     4.0, 2.5),
    ("nginx-chained-short", Timing(fast_interval=1),
     NginxBreakerConfig(max_fails=2, fail_timeout=1.5, window='chained'),
     4.0, 2.5),
    ("nginx-down-interval", Timing(interval=1, down_interval=4, timeout=0.3, jitter=0.1),
     NginxBreakerConfig(max_fails=2, fail_timeout=3, passes=3),
     3.6, 8.8),
    ("nginx-max-fails-0", Timing(),
     NginxBreakerConfig(max_fails=0),
     None, 11.0),
    ("circuit-defaults", Timing(),
     CircuitBreakerConfig(),
     7.0, 65.0),
    ("circuit-fast", Timing(interval=0.5, fast_interval=0.1, timeout=0.1),
     CircuitBreakerConfig(window=5, min_calls=3, open_for=2, max_open_for=30, half_open_trials=2),
     1.3, 30.2),
    ("circuit-slow-call", Timing(interval=1, timeout=0.8),
     CircuitBreakerConfig(failure_rate=0.6, slow_call=0.5, slow_rate=0.5),
     9.0, 64.8),
    ("circuit-low-rate", Timing(interval=1, fast_interval=0.25, timeout=0.5, jitter=0.05),
     CircuitBreakerConfig(window=20, min_calls=10, failure_rate=0.1, open_for=3, max_open_for=3),
     2.05, 4.025),
    ("circuit-window-short", Timing(),
     CircuitBreakerConfig(window=1, min_calls=2),
     None, 65.0),
]


@pytest.mark.parametrize(("timing", "breaker", "to_down", "to_up"),
                         [case[1:] for case in PINNED], ids=[case[0] for case in PINNED])
def test_pinned_budgets(timing: Timing, breaker: BreakerConfig, to_down: float | None,
                        to_up: float | None) -> None:
    """Each ordinary config keeps the budget it had (to float noise)."""
    budget = compute_budget(service(timing, breaker))
    assert (budget.to_down, budget.to_up) == (
        pytest.approx(to_down, abs=1e-6) if to_down is not None else None,
        pytest.approx(to_up, abs=1e-6) if to_up is not None else None)
