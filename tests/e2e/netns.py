"""A network namespace joined to this one by a veth pair, for tests that cut one process
off from one service (root only; removed by name at the end).

    this namespace: VETH  ROOT_IP/30  <----->  NAMESPACE: PEER  NS_IP/30, default route
                                                           via ROOT_IP

A process started through `wrap(argv)` (`ip netns exec NAME ...`, which execs
it: the PID is the process's own) reaches ROOT_IP and every other address of
this namespace through the pair, and nothing else. `block(ip, port)` makes
its TCP connections to ip:port fail at once (refused), as a firewall between
it and that service would; `unblock()` lifts every block.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence

from tests.e2e.helpers import require_binary, skip_or_fail


def _run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=10)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {done.stderr.strip()}")


class Netns:
    """One namespace and its veth pair; see the module docstring."""

    def __init__(self, name: str, root_ip: str, ns_ip: str) -> None:
        self.name = name
        self.root_ip = root_ip
        self.ns_ip = ns_ip
        self._veth = f"v{name}"[:15]
        self._peer = f"p{name}"[:15]

    def create(self) -> None:
        """The namespace, the pair, the addresses and the route."""
        ip = require_binary("ip")
        _run(ip, "netns", "add", self.name)
        _run(ip, "link", "add", self._veth, "type", "veth", "peer", "name", self._peer)
        _run(ip, "link", "set", self._peer, "netns", self.name)
        _run(ip, "addr", "add", f"{self.root_ip}/30", "dev", self._veth)
        _run(ip, "link", "set", self._veth, "up")
        inside = [ip, "netns", "exec", self.name, ip]
        _run(*inside, "link", "set", "lo", "up")
        _run(*inside, "addr", "add", f"{self.ns_ip}/30", "dev", self._peer)
        _run(*inside, "link", "set", self._peer, "up")
        _run(*inside, "route", "add", "default", "via", self.root_ip)
        nft = [ip, "netns", "exec", self.name, require_binary("nft")]
        _run(*nft, "add", "table", "inet", "cut")
        _run(*nft, "add", "chain", "inet", "cut", "out",
             "{ type filter hook output priority 0; }")

    def wrap(self, argv: Sequence[str] = ()) -> list[str]:
        """`argv` run inside the namespace."""
        return [require_binary("ip"), "netns", "exec", self.name, *argv]

    def block(self, ip: str, port: int) -> None:
        """TCP connections from inside to ip:port are refused from now on."""
        _run(*self.wrap([require_binary("nft")]), "add", "rule", "inet", "cut", "out",
             "ip", "daddr", ip, "tcp", "dport", str(port), "reject", "with", "tcp", "reset")

    def unblock(self) -> None:
        """Lift every block."""
        _run(*self.wrap([require_binary("nft")]), "flush", "chain", "inet", "cut", "out")

    def remove(self) -> None:
        """Delete the namespace (its end of the pair goes with it, and so the pair)."""
        with contextlib.suppress(AssertionError):
            _run(require_binary("ip"), "netns", "del", self.name)
        with contextlib.suppress(AssertionError):
            _run(require_binary("ip"), "link", "del", self._veth)


@contextlib.contextmanager
def netns(tag: str) -> Iterator[Netns]:
    """A fresh namespace named after `tag` and this process (skipped, or failed under
    CI=true, when not root)."""
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root")
    subnet = 64 + os.getpid() % 60  # 10.N.77.0/30: one per test process
    space = Netns(f"sn{os.getpid()}{tag}", f"10.{subnet}.77.1", f"10.{subnet}.77.2")
    try:
        space.create()
        yield space
    finally:
        space.remove()
