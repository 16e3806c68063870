"""Hypothesis properties: breakers never flap faster than their thresholds allow."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sentinel.breakers import Change, Health, make_breaker
from sentinel.breakers.base import Breaker
from sentinel.breakers.circuit import CircuitBreaker
from sentinel.breakers.nginx import NginxBreaker
from sentinel.breakers.threshold import ThresholdBreaker
from sentinel.config.model import (
    BreakerConfig,
    CircuitBreakerConfig,
    NginxBreakerConfig,
    ThresholdBreakerConfig,
)
from sentinel.config.node import load_yaml
from sentinel.config.sections import BREAKER, parse_breaker
from tests.breakers.strategies import (
    Probe,
    any_config,
    circuits,
    healths,
    nginxes,
    probes,
    run_lengths,
    thresholds,
)


@given(thresholds, healths, probes())
def test_threshold_changes_only_after_a_full_run(
    config: ThresholdBreakerConfig, initial: Health, seq: list[Probe]
) -> None:
    """threshold goes down only after fall failures in a row and up only after rise successes."""
    b = ThresholdBreaker(config, initial)
    for p, run in zip(seq, run_lengths(seq), strict=True):
        t = b.observe(p.ok, p.at)
        if t.change is Change.CHANGED:
            assert run >= (config.rise if p.ok else config.fall)
        if run >= config.fall and not p.ok:
            assert b.health is Health.DOWN
        if run >= config.rise and p.ok:
            assert b.health is Health.UP


@given(nginxes, probes())
def test_nginx_needs_max_fails_failures(config: NginxBreakerConfig, seq: list[Probe]) -> None:
    """nginx goes down only after max_fails failures: within fail_timeout (sliding), since up."""
    b = NginxBreaker(config)
    since_up = 0
    for i, p in enumerate(seq):
        since_up += not p.ok
        t = b.observe(p.ok, p.at)
        if t.change is Change.CHANGED and t.health is Health.DOWN:
            assert config.max_fails > 0
            assert since_up >= config.max_fails
            if config.window == "sliding":
                window = [q for q in seq[: i + 1] if p.at - q.at <= config.fail_timeout]
                assert sum(not q.ok for q in window) >= config.max_fails
        if t.change is Change.CHANGED and t.health is Health.UP:
            since_up = 0


@given(circuits, probes())
def test_circuit_opens_only_with_min_calls_and_stays_open_bounded(
    config: CircuitBreakerConfig, seq: list[Probe]
) -> None:
    """A circuit opens only with min_calls calls in its window, and never for over max_open_for."""
    b = CircuitBreaker(config)
    for i, p in enumerate(seq):
        t = b.observe(p.ok, p.at, p.latency)
        if t.change is Change.CHANGED and t.health is Health.DOWN:
            in_window = [q for q in seq[: i + 1] if p.at - q.at <= config.window]
            assert len(in_window) >= config.min_calls
        retry_at = b.retry_at()
        if retry_at is not None and retry_at > p.at:
            assert retry_at - p.at <= config.max_open_for


@given(any_config, healths, probes())
def test_changed_means_flipped(config: BreakerConfig, initial: Health, seq: list[Probe]) -> None:
    """Every breaker returns CHANGED exactly when its health flips, and reports its own health."""
    b: Breaker = make_breaker(config, initial)
    for p in seq:
        before = b.health
        t = b.observe(p.ok, p.at, p.latency)
        assert t.health is b.health
        assert (t.change is Change.CHANGED) == (b.health is not before)
        if t.change is Change.UNCHANGED and t.health is Health.UP:
            assert t.reason == ""


@given(st.one_of(nginxes, circuits), healths, probes())
def test_results_before_retry_at_change_nothing(
    config: BreakerConfig, initial: Health, seq: list[Probe]
) -> None:
    """While down, a result before retry_at() is UNCHANGED with no reason and moves nothing."""
    b = make_breaker(config, initial)
    for p in seq:
        retry_at, progress = b.retry_at(), b.progress()
        down = b.health is Health.DOWN
        t = b.observe(p.ok, p.at, p.latency)
        if down and retry_at is not None and p.at < retry_at:
            assert t.change is Change.UNCHANGED
            assert t.reason == ""
            assert (b.retry_at(), b.progress()) == (retry_at, progress)


@given(thresholds, probes())
def test_threshold_retry_at_is_always_none(
    config: ThresholdBreakerConfig, seq: list[Probe]
) -> None:
    """The threshold kind never sets retry_at."""
    b = ThresholdBreaker(config)
    for p in seq:
        b.observe(p.ok, p.at)
        assert b.retry_at() is None


def test_every_kind_name_builds_its_breaker() -> None:
    """The config loader and make_breaker agree: each `kind:` builds the matching breaker."""
    expected = {"nginx": NginxBreaker, "threshold": ThresholdBreaker, "circuit": CircuitBreaker}
    assert set(BREAKER.variants) == set(expected)
    for name, breaker in expected.items():
        config = parse_breaker(load_yaml(f"{{kind: {name}}}", "sentinel.yaml"))
        assert isinstance(make_breaker(config), breaker)
