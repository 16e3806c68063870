"""`sinks.base.unavailable`: the one mapping of a sink failing to reach its target."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from sentinel.errors import SinkRejected, SinkUnavailable
from sentinel.sinks.base import unavailable


async def test_an_os_error_becomes_sink_unavailable_naming_the_target() -> None:
    """The OSError's strerror follows the target; the OSError stays the cause."""
    cause = FileNotFoundError(errno.ENOENT, "No such file or directory")
    with pytest.raises(SinkUnavailable) as caught, unavailable("reload command nginx"):
        raise cause
    assert str(caught.value) == "reload command nginx: No such file or directory"
    assert caught.value.__cause__ is cause


async def test_a_timeout_error_is_mapped_by_its_text() -> None:
    """A command's own time limit, raised as TimeoutError, reads as what it says."""
    with pytest.raises(SinkUnavailable, match=r"^ipvsadm -R: timed out after 2s$"), \
            unavailable("ipvsadm -R"):
        raise TimeoutError("timed out after 2s")


async def test_a_broken_connection_is_unavailable_too() -> None:
    """trio's BrokenResourceError (a peer gone mid-send) is mapped like an OSError."""
    with pytest.raises(SinkUnavailable, match=r"^haproxy socket /run/h\.sock: gone$"), \
            unavailable("haproxy socket /run/h.sock"):
        raise trio.BrokenResourceError("gone")


async def test_the_time_limit_cuts_the_block_off(
        autojump_clock: trio.testing.MockClock) -> None:
    """Past `time_limit` the block is cancelled and the error says how long it waited."""
    start = trio.current_time()
    with pytest.raises(SinkUnavailable, match=r"^haproxy socket h:1: no answer within 2s$"), \
            unavailable("haproxy socket h:1", time_limit=2.0):
        await trio.sleep_forever()
    assert trio.current_time() - start == 2.0


async def test_other_errors_pass_through() -> None:
    """A refusal raised inside is not a reach failure: it leaves the block unchanged."""
    with pytest.raises(SinkRejected, match="too long"), unavailable("x"):
        raise SinkRejected("too long")
