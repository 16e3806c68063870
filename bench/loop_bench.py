"""Python's share of a check: the probe loop, the engine and telemetry, without I/O.

    .venv/bin/python bench/loop_bench.py [--n 5000] [--modes tcp http] [--seconds 10]

A real `Engine` (the configured tcp or http probe, an nginx breaker,
`Telemetry` with Prometheus metrics on, as `sentinel run` builds it) checks N
backends every second, on trio's MockClock, through a pretend poller whose
connects complete at once and whose peers answer `200` at once: every line of
Python a check runs, and no system call. CPU seconds (`time.process_time`)
over the checks of `--seconds` of virtual time, after 2 s of warm-up, give
the microseconds of Python per check: what `bench/scale_bench.py` reports as
user time, less the event loop's wakeups and the socket calls' own share.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import errno
import gc
import sys
import tempfile
import time
from pathlib import Path

import trio
import trio.testing
from probe_bench import CONFIG, EXTRA, RESPONSE, backend_lines

from sentinel import Engine, load_config
from sentinel.probes.rawsock import Address
from sentinel.telemetry.traces import Telemetry


class PretendSocket:
    """Connected as soon as asked; answers RESPONSE to whatever is sent, then EOF."""

    __slots__ = ("connecting", "fd", "interest", "network", "sent")

    def __init__(self, network: PretendNetwork, fd: int) -> None:
        self.fd, self.network, self.interest, self.sent = fd, network, 0, False
        self.connecting = False

    def fileno(self) -> int:
        """Its pretend descriptor."""
        return self.fd

    def connect_ex(self, address: tuple[str, int], /) -> int:
        """Under way, and connected when asked again (as on loopback)."""
        if self.connecting:
            return 0
        self.connecting = True
        return errno.EINPROGRESS

    def getsockopt(self, level: int, option: int, /) -> int:
        """No error."""
        return 0

    def send(self, data: bytes, /) -> int:
        """All of it."""
        self.sent = True
        return len(data)

    def recv(self, size: int, /) -> bytes:
        """The answer once a request came, then EOF."""
        if self.sent:
            self.sent = False
            return RESPONSE[:size]
        return b""

    def close(self) -> None:
        """Gone from the network."""
        self.network.sockets.pop(self.fd, None)


class PretendNetwork:
    """The probe loop's `Poller`: every watched socket is ready at every poll."""

    def __init__(self) -> None:
        self.sockets: dict[int, PretendSocket] = {}
        self._fd = 1000
        self._sleep = trio.CancelScope()  # the current `wait`'s

    def socket(self, family: object, delay_ack: bool, source: Address | None
               ) -> PretendSocket:
        """A new pretend socket."""
        self._fd += 1
        sock = self.sockets[self._fd] = PretendSocket(self, self._fd)
        return sock

    def reuse(self, sock: PretendSocket, family: object, source: Address | None) -> None:
        """Closed (a real poller would reset its connection and keep it)."""
        sock.close()

    def discard(self, sock: PretendSocket) -> None:
        """Closed."""
        sock.close()

    def arm(self, fd: int, events: int) -> None:
        """Watch `fd` (until `poll` reports it)."""
        self.sockets[fd].interest = events

    register = modify = arm

    def poll(self, max_events: int) -> list[tuple[int, int]]:
        """Every watched socket, ready for what it is watched for."""
        ready = [(fd, s.interest) for fd, s in self.sockets.items() if s.interest]
        return ready[:max_events]

    async def wait(self, deadline: float) -> None:
        """At once while any socket is watched; else until `deadline` (or a `hasten`)."""
        if any(s.interest for s in self.sockets.values()):
            await trio.lowlevel.checkpoint()
        else:
            with trio.move_on_at(deadline) as self._sleep:
                await trio.sleep_forever()

    def hasten(self, when: float) -> None:
        """Wake the current `wait` by `when`."""
        self._sleep.deadline = min(self._sleep.deadline, when)

    def close(self) -> None:
        """Nothing to release."""


def measure(mode: str, n: int, seconds: float) -> tuple[int, float]:
    """Checks run and CPU seconds spent over `seconds` of virtual time."""
    with tempfile.TemporaryDirectory(prefix="sentinel-loop-") as tmp:
        path = Path(tmp) / "sentinel.yaml"  # probe_bench's config; the API is never started
        path.write_text(CONFIG.format(state=Path(tmp) / "state", mode=mode,
                                      extra=EXTRA.get(mode, ""),
                                      backends=backend_lines(list(range(20000, 20000 + n)))))
        config = load_config(str(path))
        telemetry = Telemetry(config.telemetry, Path(config.state_dir))
        engine = Engine(config, observer=telemetry, poller=PretendNetwork)
        telemetry.watch(engine)
        gc.collect()
        gc.freeze()  # as `sentinel run` does
        out: list[tuple[int, float]] = []

        async def run() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.run)
                await trio.sleep(2)
                probes, cpu = engine.statistics().probes, time.process_time()
                await trio.sleep(seconds)
                out.append((engine.statistics().probes - probes, time.process_time() - cpu))
                engine.stop()

        trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
        gc.unfreeze()
        return out[0]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure each mode, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="backends (default 5000)")
    parser.add_argument("--modes", nargs="+", choices=["tcp", "http"], default=["tcp", "http"])
    parser.add_argument("--seconds", type=float, default=10.0, help="virtual seconds measured")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 20000 or not 1 <= args.seconds <= 120:
        parser.error("--n must be 1..20000 and --seconds 1..120")
    lines = ["| probe | backends | checks | CPU s | Python us/check |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for mode in args.modes:
        checks, cpu = measure(mode, args.n, args.seconds)
        print(f"{mode}: {checks} checks, {cpu / checks * 1e6:.1f} us/check", file=sys.stderr)
        lines.append(f"| {mode} | {args.n:,} | {checks:,} | {cpu:.2f} | "
                     f"{cpu / checks * 1e6:.1f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
