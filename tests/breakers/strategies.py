"""Hypothesis strategies for the breaker tests: probe sequences and breaker configs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from sentinel.breakers import Health
from sentinel.config.model import (
    BreakerConfig,
    CircuitBreakerConfig,
    NginxBreakerConfig,
    ThresholdBreakerConfig,
)


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe result fed to a breaker: its outcome, time and latency."""

    ok: bool
    at: float
    latency: float


@st.composite
def probes(draw: st.DrawFn) -> list[Probe]:
    """Results at non-decreasing times, on a half-second grid so window edges are hit exactly."""
    steps = draw(
        st.lists(
            st.tuples(st.booleans(), st.integers(0, 30), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
            max_size=80,
        )
    )
    out, now = [], 0.0
    for ok, half_seconds, latency in steps:
        now += half_seconds / 2
        out.append(Probe(ok, now, latency))
    return out


healths = st.sampled_from([Health.UP, Health.DOWN])
thresholds = st.builds(ThresholdBreakerConfig, rise=st.integers(1, 5), fall=st.integers(1, 5))
nginxes = st.builds(
    NginxBreakerConfig,
    max_fails=st.integers(0, 5),
    fail_timeout=st.sampled_from([0.0, 1.0, 2.5, 10.0]),
    passes=st.integers(1, 3),
    window=st.sampled_from(["sliding", "chained"]),
)
circuits = st.builds(
    CircuitBreakerConfig,
    window=st.sampled_from([1.0, 5.0, 10.0]),
    min_calls=st.integers(1, 6),
    failure_rate=st.sampled_from([0.25, 0.5, 1.0]),
    slow_call=st.sampled_from([None, 1.0]),
    slow_rate=st.sampled_from([0.5, 1.0]),
    open_for=st.sampled_from([0.5, 2.0, 5.0]),
    max_open_for=st.sampled_from([5.0, 20.0]),
    half_open_trials=st.integers(1, 4),
)
any_config: st.SearchStrategy[BreakerConfig] = st.one_of(thresholds, nginxes, circuits)


def run_lengths(seq: Sequence[Probe]) -> list[int]:
    """For each probe, how many results equal to it end at it (itself included)."""
    out: list[int] = []
    for i, p in enumerate(seq):
        out.append(out[-1] + 1 if i and seq[i - 1].ok == p.ok else 1)
    return out
