"""Host-name resolution for probes: cancellable, bounded in time, cached for the TTL.

Why not `getaddrinfo`. Trio runs it in a worker thread from the pool that
state saves and sinks share; a resolver that never answers held those
threads (glibc's retries outlast any probe timeout, and an abandoned thread
keeps its slot until it returns), so a dead backend's down waited seconds
behind unrelated lookups. Here a lookup is dnspython's asynchronous resolver
on Trio's own sockets: no thread at all, cancelled at the check's deadline,
and the answer carries its TTL. A check of a name therefore spends at most
its own timeout on the name, and a lookup that runs out of it fails that
check as DNS, "resolve NAME timed out after 500ms".

What it does, in order:
- IP literals are returned as they are;
- names in the hosts file (/etc/hosts; re-read when it changes) come from
  there, as `files` before `dns` in nsswitch.conf has it; `localhost` and
  `*.localhost` are loopback even when the file does not say so (RFC 6761);
- otherwise the cache, then a query (name servers, search list and ndots
  from /etc/resolv.conf): A first, AAAA when the name has no A record, so a
  name with both is probed over IPv4.
Answers are cached for their TTL (at least MIN_TTL, at most MAX_TTL), a
missing name or a failing server for NEGATIVE_TTL; a lookup that timed out
is not cached, so the next check asks again. Concurrent checks of one name
share one query, and at most MAX_QUERIES run at once.

Per-task checks call `resolve` as they start. The probe loop cannot wait on
a lookup, so its resolver task (`sentinel.engine.names`) calls `lookup`
instead, which also says until when the answer holds, and refreshes names
ahead of the TTL's end (`fresh=True` skips the cache).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import trio

from sentinel.errors import ResolveError
from sentinel.probes import rawsock
from sentinel.probes.rawsock import Address

MIN_TTL = 1.0  # a TTL of 0 would mean one query per check
MAX_TTL = 3600.0
NEGATIVE_TTL = 5.0  # NXDOMAIN, no address, every server failing
MAX_QUERIES = 64  # lookups in flight at once (each holds a UDP socket)
HOSTS_CHECK = 1.0  # seconds between looks at the hosts file's mtime
LIFETIME = 30.0  # dnspython's own bound; the check's deadline is normally far shorter
HOSTS = Path("/etc/hosts")


@dataclass(slots=True)
class _Run:
    """The resolver's state within one Trio run (its clock and its tasks)."""

    cache: dict[str, tuple[float, Address | str]] = field(default_factory=dict)
    pending: dict[str, trio.Event] = field(default_factory=dict)
    queries: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(MAX_QUERIES))
    hosts: dict[str, Address] = field(default_factory=dict)
    hosts_mtime: float | None = None
    hosts_checked: float = -math.inf


class Resolver:
    """Resolves host names for probes; see the module docstring. `nameservers` (IP, port)
    replaces /etc/resolv.conf (tests, a dedicated resolver); `hosts` the hosts file."""

    def __init__(self, nameservers: Sequence[tuple[str, int]] | None = None,
                 hosts: Path = HOSTS) -> None:
        self._nameservers = nameservers
        self._hosts_path = hosts
        self._dns: dns.asyncresolver.Resolver | None = None
        self._run: trio.lowlevel.RunVar[_Run] = trio.lowlevel.RunVar("sentinel.resolve")

    async def resolve(self, host: str, deadline: float) -> Address:
        """The address to connect to for `host`; ResolveError when it does not resolve,
        or not by `deadline` (Trio time)."""
        _, answer = await self.lookup(host, deadline)
        if isinstance(answer, str):
            raise ResolveError(socket.EAI_NONAME, answer)
        return answer

    async def lookup(self, host: str, deadline: float, *, fresh: bool = False
                     ) -> tuple[float, Address | str]:
        """Until when (Trio time) `host`'s answer holds, and the answer: its address, or
        why it has none (NXDOMAIN, failing servers). `fresh` skips the cache (a refresh
        ahead of the TTL's end). ResolveError when no answer came by `deadline`."""
        address = rawsock.literal(host)
        if address is not None:
            return math.inf, address
        start = trio.current_time()
        run = self._state()
        name = host.lower().rstrip(".")
        listed = self._from_hosts(run, name)
        if listed is not None:
            return start + HOSTS_CHECK, listed
        while True:
            cached = None if fresh else run.cache.get(name)
            if cached is not None and cached[0] > trio.current_time():
                return cached
            pending = run.pending.get(name)
            if pending is None:
                break
            with trio.move_on_at(deadline) as scope:  # another check is asking: share it
                await pending.wait()
            if scope.cancelled_caught:
                raise timed_out(host, deadline - start)
            fresh = False  # the query just shared is as fresh as it gets
        run.pending[name] = event = trio.Event()
        try:
            with trio.move_on_at(deadline):
                return await self._query(run, host, name)
            raise timed_out(host, deadline - start)
        finally:
            del run.pending[name]
            event.set()

    def _state(self) -> _Run:
        try:
            return self._run.get()
        except LookupError:
            state = _Run()
            self._run.set(state)
            return state

    async def _query(self, run: _Run, host: str, name: str
                     ) -> tuple[float, Address | str]:
        """Ask the name servers (A, then AAAA), cache the answer or the failure."""
        try:
            async with run.queries:
                resolver = self._resolver()
                answer = await resolver.resolve(name, dns.rdatatype.A, search=True,
                                                raise_on_no_answer=False, lifetime=LIFETIME)
                family = socket.AF_INET
                if answer.rrset is None:
                    answer = await resolver.resolve(answer.qname, dns.rdatatype.AAAA,
                                                    raise_on_no_answer=False,
                                                    lifetime=LIFETIME)
                    family = socket.AF_INET6
        except dns.resolver.NXDOMAIN:
            return self._cache(run, name, NEGATIVE_TTL, f"resolve {host}: no such name "
                               "(NXDOMAIN)")
        except dns.resolver.NoNameservers as exc:
            return self._cache(run, name, NEGATIVE_TTL, f"resolve {host}: no name server "
                               f"answered ({_first_error(exc)})")
        except dns.exception.Timeout:
            raise ResolveError(socket.EAI_AGAIN, f"resolve {host} timed out after "
                               f"{LIFETIME:.0f}s") from None
        except dns.exception.DNSException as exc:
            return self._cache(run, name, NEGATIVE_TTL, f"resolve {host}: {exc}")
        if answer.rrset is None:
            return self._cache(run, name, NEGATIVE_TTL,
                               f"resolve {host}: no address (no A or AAAA record)")
        ttl = min(max(float(answer.rrset.ttl), MIN_TTL), MAX_TTL)
        return self._cache(run, name, ttl, (family, str(answer.rrset[0].address)))

    def _cache(self, run: _Run, name: str, ttl: float, answer: Address | str
               ) -> tuple[float, Address | str]:
        entry = run.cache[name] = (trio.current_time() + ttl, answer)
        return entry

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self._dns is None:
            if self._nameservers is None:
                try:
                    self._dns = dns.asyncresolver.Resolver()  # reads /etc/resolv.conf
                except dns.resolver.NoResolverConfiguration:
                    raise ResolveError(socket.EAI_FAIL, "no name server configured in "
                                       "/etc/resolv.conf") from None
            else:
                self._dns = dns.asyncresolver.Resolver(configure=False)
                self._dns.nameservers = [dns.nameserver.Do53Nameserver(ip, port)
                                         for ip, port in self._nameservers]
        return self._dns

    def _from_hosts(self, run: _Run, name: str) -> Address | None:
        """`name` from the hosts file (re-read when its mtime changes), or loopback for
        localhost names the file does not list."""
        now = trio.current_time()
        if now - run.hosts_checked >= HOSTS_CHECK:
            run.hosts_checked = now
            try:
                mtime: float | None = os.stat(self._hosts_path).st_mtime
            except OSError:
                mtime = None
            if mtime != run.hosts_mtime:
                run.hosts_mtime = mtime
                run.hosts = read_hosts(self._hosts_path) if mtime is not None else {}
        listed = run.hosts.get(name)
        if listed is None and (name == "localhost" or name.endswith(".localhost")):
            return socket.AF_INET, "127.0.0.1"
        return listed


def read_hosts(path: Path) -> dict[str, Address]:
    """Name -> address from a hosts file: the first IPv4 address listed for a name, else
    its first IPv6 one (lines that do not parse are skipped, as the C library does)."""
    found: dict[str, Address] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        address = rawsock.literal(fields[0].split("%", 1)[0])
        if address is None:
            continue
        for name in fields[1:]:
            key = name.lower().rstrip(".")
            known = found.get(key)
            if known is None or (known[0] == socket.AF_INET6 and
                                 address[0] == socket.AF_INET):
                found[key] = address
    return found


def timed_out(host: str, budget: float) -> ResolveError:
    """The check's deadline came during the lookup of `host`, which had `budget` seconds
    (the check's timeout: a lookup starts with its check)."""
    return ResolveError(socket.EAI_AGAIN, f"resolve {host} timed out after "
                        f"{budget * 1000:.0f}ms")


def _first_error(exc: dns.resolver.NoNameservers) -> str:
    """The first server's complaint (SERVFAIL, REFUSED, ...) from dnspython's error."""
    for error in exc.kwargs.get("errors") or ():
        return f"{error[0]}: {error[3]}"
    return "all failed"


_default: Resolver | None = None


def default_resolver() -> Resolver:
    """The process's resolver (/etc/resolv.conf and /etc/hosts), made on first use."""
    global _default
    if _default is None:
        _default = Resolver()
    return _default
