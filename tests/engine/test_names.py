"""The probe loop's resolver task on a virtual clock: names looked up as soon as a group
wants them, refreshed ahead of their TTL's end, negative answers held for theirs, silent
lookups retried, names no live group uses dropped."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from sentinel.config.model import ProbeConfig
from sentinel.engine.names import LOOKUP_LIMIT, NameKey, Names
from sentinel.engine.probegroups import ProbeGroup
from sentinel.errors import ResolveError
from tests.engine.fakes import ScriptedResolver

WEB = (socket.AF_INET, "10.0.0.1")


async def run_names(resolver: ScriptedResolver, host: str, seconds: float,
                    stop_group_at: float | None = None) -> tuple[Names, list[object]]:
    """Run a Names task wanting `host` for one group over `seconds` of virtual time; what
    `answer` gave at each tenth of a second, and the task's table at the end."""
    names = Names(lambda key: None)
    key: NameKey = (resolver, host)  # type: ignore[assignment]
    wanted = ProbeGroup((ProbeConfig(), host, 80, ""), [])
    seen: list[object] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(names.run)
        names.want(key, wanted)
        for tick in range(round(seconds * 10)):
            await trio.sleep_until(tick / 10 + 0.05)
            if stop_group_at is not None and trio.current_time() >= stop_group_at:
                wanted.stop()
            seen.append(names.answer(key, trio.current_time()))
        nursery.cancel_scope.cancel()
    return names, seen


async def test_a_name_is_looked_up_at_once_and_refreshed_ahead_of_its_ttl(
        autojump_clock: trio.testing.MockClock) -> None:
    """TTL 8 s, answers taking 0.1 s: asked at 0, then again (skipping the cache) a quarter
    of the lookup-plus-TTL before the answer lapses, so it never does; until the first
    answer there is none."""
    resolver = ScriptedResolver({"web.test": (0.1, 8.0, WEB)})
    _, seen = await run_names(resolver, "web.test", 20.0)
    assert [(t, fresh) for t, _, fresh in resolver.asked] == [
        (0.0, False), (pytest.approx(6.075), True), (pytest.approx(12.15), True),
        (pytest.approx(18.225), True)]
    assert seen[0] is None  # at 0.05, before the first answer
    assert set(seen[1:]) == {WEB}


async def test_a_long_ttl_is_refreshed_at_most_five_seconds_ahead(
        autojump_clock: trio.testing.MockClock) -> None:
    """TTL 60 s: the refresh starts 5 s before the end, not 15."""
    resolver = ScriptedResolver({"web.test": (0.0, 60.0, WEB)})
    await run_names(resolver, "web.test", 70.0)
    assert [t for t, _, _ in resolver.asked] == [0.0, 55.0]


async def test_a_negative_answer_holds_for_its_ttl(
        autojump_clock: trio.testing.MockClock) -> None:
    """NXDOMAIN (cached 5 s): checks get the reason until then, and the name is asked
    again when it expires."""
    reason = "resolve gone.test: no such name (NXDOMAIN)"
    resolver = ScriptedResolver({"gone.test": (0.0, 5.0, reason)})
    _, seen = await run_names(resolver, "gone.test", 12.0)
    assert [t for t, _, _ in resolver.asked] == [0.0, 5.0, 10.0]
    assert all(isinstance(a, ResolveError) and a.strerror == reason for a in seen)


async def test_a_silent_lookup_is_retried_and_gives_no_answer(
        autojump_clock: trio.testing.MockClock) -> None:
    """A name server that never answers: each lookup ends after LOOKUP_LIMIT and the next
    starts at once; checks meanwhile have no answer (they wait, then time out)."""
    resolver = ScriptedResolver({})
    _, seen = await run_names(resolver, "mute.test", 2 * LOOKUP_LIMIT + 1)
    assert [t for t, _, _ in resolver.asked] == [0.0, LOOKUP_LIMIT, 2 * LOOKUP_LIMIT]
    assert set(seen) == {None}


async def test_a_name_no_live_group_wants_is_dropped(
        autojump_clock: trio.testing.MockClock) -> None:
    """Once its group is stopped (a reload removed the backend), the name is not
    refreshed: dropped at the refresh it would have had."""
    resolver = ScriptedResolver({"web.test": (0.0, 8.0, WEB)})
    _, seen = await run_names(resolver, "web.test", 20.0, stop_group_at=1.0)
    assert [t for t, _, _ in resolver.asked] == [0.0]
    assert seen[-1] is None
