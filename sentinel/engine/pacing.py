"""How well the probe schedule is kept: probe lateness, event-loop lag, and checks the
checker could not make for its own reasons (local errors)."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from sentinel.engine.slots import Slots
from sentinel.engine.watching import WatchStatistics
from sentinel.throttle import Throttle

log = logging.getLogger(__name__)
LATENESS_SAMPLES = 8192  # recent probes whose start lateness the percentiles cover
# Event-loop lag is the oversleep of a timer. Each wake costs 60-90 us of CPU with the
# caches cold after the sleep (1-2 us per check at 1,000 backends when it woke 10 times a
# second); a stall shorter than the tick shows only when a tick falls inside it, and the
# lateness percentiles show what probes felt of any stall.
LAG_TICK = 0.5
LAG_SAMPLES = 120  # one minute of loop-lag ticks
LATE_WARNING = 0.1  # seconds: a p99 lateness past this is warned about
LOCAL_LOG_EVERY = 10.0  # seconds between log lines about one kind of local error


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """A snapshot of the probe scheduler's health."""

    probes: int
    in_flight: int
    max_in_flight: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    local_errors: int = 0  # checks not made for the checker's own reasons (never fed)
    last_local_error: str = ""
    lateness_sum: float = 0.0  # seconds, over every probe since start (Prometheus summary)
    loop_lag_ticks: int = 0
    loop_lag_sum: float = 0.0  # seconds, over every tick since start
    watch: WatchStatistics | None = None  # watched connections (`watch:`), if any

    def to_json(self) -> dict[str, object]:
        """The `engine` object of the state document (`watch` only where it is used)."""
        watch = ({"watch": self.watch.to_json()} if self.watch is not None
                 and self.watch.watched else {})
        return {"probes": self.probes, "in_flight": self.in_flight,
                "local_errors": self.local_errors,
                "last_local_error": self.last_local_error or None,
                "max_in_flight": self.max_in_flight,
                "lateness_ms": {"p50": round(self.lateness_p50_ms, 3),
                                "p99": round(self.lateness_p99_ms, 3),
                                "max": round(self.lateness_max_ms, 3)},
                "loop_lag_ms": {"p99": round(self.loop_lag_p99_ms, 3),
                                "max": round(self.loop_lag_max_ms, 3)}, **watch}


class Pacing:
    """Lateness of probe starts against their schedule, and event-loop lag."""

    def __init__(self) -> None:
        self._lateness: deque[float] = deque(maxlen=LATENESS_SAMPLES)
        # The number of each sample (counted from 1, as `probes`) later than LATE_WARNING:
        # those still in the window say whether p99 is past it without sorting the window
        self._late: deque[int] = deque()
        self._loop_lag: deque[float] = deque(maxlen=LAG_SAMPLES)
        self.probes = 0
        self.local_errors = 0
        self._last_local = ""
        self._local_log = Throttle(every=LOCAL_LOG_EVERY)
        self._lateness_sum = 0.0
        self._lag_ticks = 0
        self._lag_sum = 0.0

    def probes_started(self, lateness: Sequence[float]) -> None:
        """Count probes that started these many seconds after they were due (the probe
        loop reports each pass's at once)."""
        if not lateness:
            return
        self._lateness.extend(lateness)
        # an early start (the probe loop starts checks due within 5 ms together) is on
        # time, as in the percentiles; the probe loop reports it as 0 (min and max run in
        # C: the common pass, every check on time, takes no loop in Python)
        total = sum(lateness)
        if min(lateness) < 0.0:
            total = sum(late for late in lateness if late > 0.0)
        self._lateness_sum += total
        first = self.probes + 1
        self.probes += len(lateness)
        if max(lateness) > LATE_WARNING:
            self._late.extend(first + i for i, late in enumerate(lateness)
                              if late > LATE_WARNING)
            self._forget_late()

    def _forget_late(self) -> None:
        """Drop the numbers of late samples the window has let go."""
        late, oldest = self._late, self.probes - len(self._lateness) + 1
        while late and late[0] < oldest:
            late.popleft()

    def local_error(self, backend: str, error: str) -> None:
        """Count a check of `backend` that the checker could not make for its own reasons
        (`error`, a LOCAL failure); logged at most every LOCAL_LOG_EVERY seconds per kind."""
        self.local_errors += 1
        self._last_local = error
        held = self._local_log.allow(error, trio.current_time())
        if held is not None:
            more = f" ({held} more since the last report)" if held else ""
            log.warning("check of %s not made: %s%s; not counted against any backend: "
                        "look at sentinel's file-descriptor limit, its connections and "
                        "this host's resources", backend, error, more)

    def statistics(self, in_flight: Slots,
                   watch: WatchStatistics | None = None) -> EngineStatistics:
        """Probe count, probes in flight, lateness and loop-lag percentiles, local errors,
        and `watch` (the probe loop's watched connections) as given."""
        late = percentiles(self._lateness)
        lag = percentiles(self._loop_lag)
        return EngineStatistics(self.probes, in_flight.borrowed_tokens,
                                int(in_flight.total_tokens), late[0.5], late[0.99],
                                late[1.0], lag[0.99], lag[1.0], self.local_errors,
                                self._last_local, self._lateness_sum, self._lag_ticks,
                                self._lag_sum, watch)

    def running_late(self) -> bool:
        """Whether the p99 lateness (as `statistics` computes it) is past LATE_WARNING: as
        many of the window's samples are that late as lie at or above its p99 rank."""
        self._forget_late()
        window = len(self._lateness)
        return window > 0 and len(self._late) >= window - min(window - 1, int(0.99 * window))

    async def watch_lag(self, in_flight: Slots) -> None:
        """Measure event-loop lag (oversleep of a LAG_TICK sleep) and warn when probes run
        late."""
        last_warning = -math.inf
        while True:
            before = trio.current_time()
            await trio.sleep(LAG_TICK)
            now = trio.current_time()
            lag = now - before - LAG_TICK
            self._loop_lag.append(lag)
            self._lag_ticks += 1
            self._lag_sum += lag
            if self.running_late() and now - last_warning > 30:
                stats = self.statistics(in_flight)  # sorted only to say how late
                last_warning = now
                log.warning("probes are running late: p99 %.0fms, max %.0fms behind schedule "
                            "(event-loop lag p99 %.0fms, %d probes in flight of %d allowed)",
                            stats.lateness_p99_ms, stats.lateness_max_ms, stats.loop_lag_p99_ms,
                            in_flight.borrowed_tokens, in_flight.total_tokens)


def percentiles(samples: deque[float]) -> dict[float, float]:
    """p50, p99 and max of `samples` (seconds) in milliseconds; zeros when empty."""
    ordered = sorted(samples)
    if not ordered:
        return {0.5: 0.0, 0.99: 0.0, 1.0: 0.0}
    return {p: max(0.0, ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000)
            for p in (0.5, 0.99, 1.0)}
