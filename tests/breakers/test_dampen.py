"""Flap damping: BGP-style penalty, suppression and release."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import httpx
import pytest

from sentinel.breakers.dampen import Damper
from sentinel.config.model import DampenConfig
from tests.config import write_config
from tests.e2e.helpers import sentinel_running

CFG = DampenConfig(half_life=60.0, suppress=2000.0, reuse=750.0, max_suppress=240.0)


def test_single_flap_does_not_suppress() -> None:
    """One flap adds 1000, below the suppress threshold: the backend is not held down."""
    d = Damper(CFG)
    assert d.flap(0.0) is False
    assert d.penalty == pytest.approx(1000.0)
    assert d.update(1.0) is False


def test_three_quick_flaps_suppress_then_release_below_reuse() -> None:
    """Flaps 10 s apart cross 2000 on the third; it is released when decayed below 750."""
    d = Damper(CFG)
    d.flap(0.0)
    assert d.flap(10.0) is False
    assert d.flap(20.0) is True
    assert d.suppressed
    peak = d.penalty
    # penalty * 2^(-t/60) < 750  <=>  t > 60 * log2(peak / 750)
    release = 20.0 + 60.0 * math.log2(peak / 750.0)
    assert d.update(release - 0.5) is True
    assert d.update(release + 0.5) is False


def test_penalty_capped_by_max_suppress() -> None:
    """However often it flaps, a backend is released max_suppress after its last flap."""
    d = Damper(CFG)
    for i in range(50):
        d.flap(float(i))
    assert d.update(49.0 + 240.0 - 1.0) is True
    assert d.update(49.0 + 240.0 + 0.01) is False


def test_a_max_suppress_of_thousands_of_half_lives_needs_no_cap() -> None:
    """`half_life: 1s, max_suppress: 1h` (3,600 half-lives: a cap beyond any float) damps
    as usual: suppressed at the third quick flap, released once decayed below reuse."""
    d = Damper(DampenConfig(half_life=1.0, suppress=2000.0, reuse=750.0, max_suppress=3600.0))
    assert [d.flap(t) for t in (0.0, 0.1, 0.2)] == [False, False, True]
    release = 0.2 + math.log2(d.penalty / 750.0)
    assert d.update(release - 0.05) is True
    assert d.update(release + 0.05) is False


@pytest.mark.e2e
def test_sentinel_runs_with_a_max_suppress_of_thousands_of_half_lives(tmp_path: Path) -> None:
    """`sentinel run` with `dampen: {half_life: 1s, max_suppress: 1h}` starts and serves
    its state (math.pow overflowed and it crashed at start with a traceback)."""
    config = write_config(tmp_path, textwrap.dedent("""\
        state_dir: ./state
        api: {listen: 127.0.0.1:0}
        services:
          web:
            backends: [127.0.0.1:1]
            probe: {interval: 1h}
            dampen: {half_life: 1s, max_suppress: 1h}
        """))
    with sentinel_running(tmp_path, config) as url:
        state = httpx.get(f"{url}/v1/state", timeout=10.0)
    assert state.status_code == 200
    assert [b["name"] for b in state.json()["services"]["web"]["backends"]] == ["127.0.0.1:1"]
