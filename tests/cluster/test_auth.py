"""Members on an etcd with users and roles (real etcd, real time): a token etcd stops
taking is renewed for calls, watches and lease renewals alike, and a wrong password is
a clear error, retried at the backoff's pace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sentinel.cluster.etcd import EtcdClient
from tests.cluster.etcd_server import EtcdServer, running_etcd
from tests.cluster.helpers import Sessions, member
from tests.e2e.balancers import eventually

pytestmark = pytest.mark.e2e
PREFIX = "/sentinel/auth/"
ROOT = ("root", "r00t")
USER = ("sentinel", "s3cret")
# simple tokens expire after a second unused (and die with etcd); JWTs name the auth
# store's revision, so any change of users or roles outdates them
TOKENS = ("simple", "jwt")


def jwt_flags(base: Path) -> list[str]:
    """etcd's options for RS256 JWTs signed with a key made here."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = base / "jwt.key", base / "jwt.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return [f"--auth-token=jwt,pub-key={public},priv-key={private},sign-method=RS256,"
            "ttl=10m"]


@contextmanager
def auth_etcd(base: Path, tokens: str) -> Iterator[EtcdServer]:
    """An etcd with auth on: `root` and a `sentinel` user allowed PREFIX only."""
    (base / "keys").mkdir()
    flags = (["--auth-token=simple", "--auth-token-ttl=1"] if tokens == "simple"
             else jwt_flags(base / "keys"))
    with running_etcd(base / "etcd", flags=flags) as server:
        server.add_user(*USER, PREFIX)
        server.enable_auth(*ROOT)
        yield server


async def outdate(server: EtcdServer, tokens: str) -> None:
    """Make etcd refuse the tokens it has handed out so far, and wait until it does: a
    simple token by letting it expire, a JWT by changing a role (the auth store's
    revision moves past the one the JWT names)."""
    stale = server.token(*USER)  # as old as any the member holds
    if tokens == "jwt":
        server.as_root(ROOT, "role/add", {"name": f"other{trio.current_time()}"})
        await eventually(lambda: server.refuses(stale, PREFIX), what="the old token refused")
        return
    # each look restarts a simple token's TTL (1 s, checked each second): look seldom
    for _ in range(12):
        await trio.sleep(2.5)
        if server.refuses(stale, PREFIX):
            return
    raise AssertionError("etcd still takes a simple token unused for 30 s")


@pytest.mark.parametrize("tokens", TOKENS)
async def test_a_refused_token_is_renewed_for_a_watch_and_a_call(
        tmp_path: Path, tokens: str) -> None:
    """A client whose token etcd no longer takes opens a watch (authenticating again:
    the watch delivers), and later, refused again, makes a call that works."""
    with auth_etcd(tmp_path, tokens) as server:
        client = EtcdClient([server.url], timeout=5.0, user=USER[0], password=USER[1])
        writer = EtcdClient([server.url], timeout=5.0, user=USER[0], password=USER[1])
        try:
            await client.put(f"{PREFIX}k", b"1")
            await outdate(server, tokens)
            with trio.fail_after(10):
                async with client.watch(f"{PREFIX}k") as stream:
                    await writer.put(f"{PREFIX}k", b"2")
                    batch = await stream.__anext__()
            assert [e.kv.value for e in batch.events] == [b"2"]
            await outdate(server, tokens)
            await client.put(f"{PREFIX}k", b"3")
            assert client.statistics().errors == 0
        finally:
            await client.aclose()
            await writer.aclose()


@pytest.mark.parametrize("tokens", TOKENS)
async def test_a_member_keeps_working_when_its_token_is_refused(
        tmp_path: Path, tokens: str) -> None:
    """A member whose token etcd stops taking keeps its lease (renewals go on, no lapse),
    rewrites its record, and follows the members: one that joins afterwards shows, and
    after an etcd restart (watches opened again) so does another."""
    with auth_etcd(tmp_path, tokens) as server:
        options = {"user": USER[0], "password": USER[1], "lease_ttl": 2}
        m = member(server, PREFIX, "n1", **options)
        sessions = Sessions()
        async with trio.open_nursery() as nursery:
            await nursery.start(m.run, sessions)
            await eventually(lambda: m.statistics().ok and sessions.started,
                             what="registered")
            await outdate(server, tokens)
            renewed = m.statistics().renewals
            m.suspect("a test")
            n2 = member(server, PREFIX, "n2", **options)
            await nursery.start(n2.run)
            await eventually(lambda: (m.members.get("n1") and m.members["n1"].suspect
                                      == "a test" and "n2" in m.members),
                             what="n1's record rewritten, n2 listed")
            await eventually(lambda: m.statistics().renewals >= renewed + 2,
                             what="renewals going on")
            assert m.statistics().lapses == 0
            server.stop()
            server.start()
            if tokens == "jwt":
                await outdate(server, tokens)  # simple tokens did not outlive the restart
            n3 = member(server, PREFIX, "n3", **options)
            await nursery.start(n3.run)
            await eventually(lambda: "n3" in m.members and m.statistics().ok,
                             what="n3 listed after the restart")
            nursery.cancel_scope.cancel()


async def test_a_wrong_password_is_a_clear_error_retried_at_the_backoffs_pace(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password: the member says which user etcd refused and why, in its state
    and its log, without a traceback, and tries again at the backoff's pace, not in a
    tight loop."""
    with auth_etcd(tmp_path, "simple") as server:
        m = member(server, PREFIX, "n1", user=USER[0], password="wrong")
        async with trio.open_nursery() as nursery:
            await nursery.start(m.run)
            await eventually(lambda: "cannot authenticate" in m.statistics().error,
                             what="the refusal in the member's state")
            error = m.statistics().error
            assert "as 'sentinel'" in error
            assert "invalid user ID or password" in error
            assert "check cluster.user and cluster.password" in error
            calls = m.client.statistics().calls
            await trio.sleep(2.0)  # a window: a tight loop would make hundreds of calls
            assert m.client.statistics().calls - calls <= 12
            assert not m.statistics().ok
            nursery.cancel_scope.cancel()
        assert "cannot authenticate to etcd as 'sentinel'" in caplog.text
        assert "Traceback" not in caplog.text
