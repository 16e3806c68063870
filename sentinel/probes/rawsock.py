"""Raw non-blocking sockets on Trio: the lean probe path's transport.

`trio.open_tcp_stream` runs happy eyeballs in a nursery and wraps the socket
in a stream: right for applications, but several times the CPU a health
check needs. Here a probe is one non-blocking socket: `connect_ex`, one
wait for writability, `SO_ERROR`, and for HTTP a `send` and a few `recv`s.

Probes close like HAProxy's: `SO_LINGER` 0, set when the socket is made,
makes `close()` send an RST, so the checker leaves no TIME_WAIT behind
(thousands of backends probed every second would otherwise pin tens of
thousands of sockets in TIME_WAIT).

A connect-only check also delays its ACK, as HAProxy's plain TCP check does
(`TCP_QUICKACK` off before `connect`): the SYN-ACK proves the port listens,
and the RST goes out before the handshake's last ACK, so the backend's
kernel drops the half-open connection and its application never sees it.
On loopback this cuts the checker's CPU per check by about a quarter.

A socket whose check ended connected can be used again (`disconnect`): a
`connect` to an AF_UNSPEC address resets the connection (an RST, as the close
would send) and leaves the socket unconnected, its options and source address
kept. The probe loop does that for every check that ran to its end
(`sentinel.engine.probeloop`): one system call, where closing and making a
new socket cost three (the close, the socket, its SO_LINGER) and the
kernel's work of freeing and allocating a socket. The reset leaves
ECONNRESET pending on the idle socket; the next `connect` clears it (the
kernel starts every TCP connect with no error), so it is never read: the
next check's readiness, `send` and `SO_ERROR` are its own. Python's
`connect` takes no
AF_UNSPEC address on an internet socket, hence a small ctypes binding to
libc's, as `sentinel.engine.timerfd` has for timers.

With a `source` address the socket is bound to it before connecting
(`IP_BIND_ADDRESS_NO_PORT`: the port is still picked at connect time, so
source-bound checks do not use up the local ports the way `bind(port 0)`
alone would).
"""

from __future__ import annotations

import _socket
import ctypes
import errno
import ipaddress
import os
import socket
import struct
from functools import lru_cache

import trio

Address = tuple[socket.AddressFamily, str]  # (family, IP) to connect to or from
_RST = struct.pack("ii", 1, 0)
RECV_SIZE = 65536

# No argtypes: an int and a buffer convert by themselves, a third faster than declared
# ones (this runs once per check), and errno is not needed (a failure just closes).
_connect = ctypes.CDLL(None).connect
_UNSPEC = ctypes.create_string_buffer(16)  # a sockaddr of family AF_UNSPEC (0)


@lru_cache(maxsize=65536)
def literal(host: str) -> Address | None:
    """The family of an IP literal and its canonical text, or None for a host name
    (resolved per check: `sentinel.probes.resolve`)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)


def open_socket(family: socket.AddressFamily, delay_ack: bool,
                source: Address | None = None) -> _socket.socket:
    """A non-blocking TCP socket (no separate fcntl) that closes with an RST;
    `delay_ack` for a connect-only check, `source` the local address to connect from
    (see the module docstring). Raises OSError; a source of the other address family
    is EAFNOSUPPORT."""
    # The C socket type: socket.socket's Python layer adds a call on open and on close.
    sock = _socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
        if delay_ack:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        if source is not None:
            bind_source(sock, family, source)
    except BaseException:
        sock.close()
        raise
    return sock


def disconnect(sock: _socket.socket) -> bool:
    """Reset `sock`'s connection (an RST) and leave it unconnected, to connect again
    (see the module docstring); False when it cannot be, and it is to be closed."""
    # ECONNRESET is left pending until the next connect clears it (module docstring).
    answer: int = _connect(sock.fileno(), _UNSPEC, 16)
    return answer == 0


def bind_source(sock: _socket.socket, family: socket.AddressFamily,
                source: Address) -> None:
    """Bind `sock` (of `family`) to the `source` address, its port left to connect."""
    if source[0] != family:
        versions = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
        raise OSError(errno.EAFNOSUPPORT, f"source address {source[1]} is "
                      f"{versions[source[0]]}; the backend's address is {versions[family]}")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((source[1], 0))


async def connect(address: Address, port: int, *,
                  delay_ack: bool = False,
                  source: Address | None = None) -> _socket.socket:
    """A socket connected to `address` (family, IP: resolved by the caller) and `port`,
    from `source` when given, non-blocking; raises OSError (with errno) on failure.

    The caller owns the socket and must close it, also on cancellation.
    """
    family, ip = address
    sock = open_socket(family, delay_ack, source)
    try:
        err = sock.connect_ex((ip, port))
        if err == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


async def send_all(sock: _socket.socket, data: bytes) -> None:
    """Send `data` (a probe request: usually one `send` call)."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[sent:]


async def recv_some(sock: _socket.socket) -> bytes:
    """The next bytes from the peer; b"" at EOF. Raises OSError on a reset."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(RECV_SIZE)
        except BlockingIOError:
            continue


class RawChannel:
    """A connected raw socket as a byte channel (`sentinel.probes.exchange.follow`),
    closed with an RST."""

    __slots__ = ("sock",)

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    async def send_all(self, data: bytes) -> None:
        """Send all of `data`."""
        await send_all(self.sock, data)

    async def receive_some(self) -> bytes:
        """The next bytes; b"" at EOF."""
        return await recv_some(self.sock)

    async def aclose(self) -> None:
        """Close with an RST (no TIME_WAIT)."""
        self.sock.close()
