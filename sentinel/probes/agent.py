"""HAProxy's agent-check: the answer line's words, their effects, and the probe that asks.

An agent is a small TCP server on (or beside) the backend. HAProxy connects
to `agent-port`, sends `agent-send` if set, and reads one line. Existing
agents plug in unchanged, so the line is read exactly as HAProxy reads it
(`tcpcheck_agent_expect_reply` in src/tcpcheck.c, `server_parse_weight_
change_request` and `server_parse_maxconn_change_request` in src/server.c):

- the line ends at the first CR or LF; closing before it ends is an
  incomplete line and changes nothing;
- words are split by spaces, tabs and commas, matched case-insensitively;
  `#` at the start of a word begins a description (the rest of the line);
- `up`, `down`, `fail`, `stopped`: the health (last one wins); `down`,
  `fail` and `stopped` mark the backend down at once, `up` back up;
- `ready`, `drain`, `maint`: the admin state (last one wins);
- `NN%` (a word starting with a digit and holding a `%`) or `weight:V`:
  the weight (last one wins). `NN%` and `weight:NN%` scale the configured
  weight (integer arithmetic, percentages above 25600 count as 25600) and
  cap the result at 256, HAProxy's highest weight, or at the configured
  weight where that is higher (sentinel's weights reach 65535; at or below
  256 this is HAProxy's rule exactly). `weight:N` sets 0..256 outright.
  A malformed value (`50%x`, `weight:300`) changes nothing and is reported
  as a warning. (`weight:` is HAProxy 3.1's; older HAProxy ignores it.)
- `maxconn:N`: recorded (any integer, as HAProxy takes it);
- any other word changes nothing; the first one is reported as an error.

Words the agent does not say leave their part of the state as it was:
`AgentState.apply` folds answers, one after another, the way HAProxy
keeps a server's admin state and weight. HAProxy's restriction of static
load-balancing algorithms (weights 0 and 100% only) has no counterpart
here.

As a `probe:` of its own (and in `sentinel probe agent://`), a check is
healthy unless the agent says `down`, `fail` or `stopped`, and an agent
that cannot be reached is a failure. Beside a health probe (HAProxy's
`agent-check` next to `check`, SPEC 9's `agent:` block) an unreachable
agent changes nothing instead: connectivity is the health probe's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import partial

from sentinel.config.model import AgentSpec, ProbeConfig
from sentinel.model import FailureKind, ProbeResult
from sentinel.probes import exchange as lean
from sentinel.probes.base import Target, classify, failed, source_address
from sentinel.probes.resolve import Resolver, default_resolver
from sentinel.probes.tcp import no_answer, quote

LINE_CAP = 16384  # HAProxy reads the answer into one check buffer (tune.bufsize)
WEIGHT_MAX = 256  # HAProxy's highest server weight (SRV_UWGHT_MAX)
PERCENT_MAX = 25600  # HAProxy clamps percentages here before scaling
HEALTH_WORDS = ("up", "down", "fail", "stopped")
DOWN_WORDS = ("down", "fail", "stopped")
ADMIN_WORDS = ("ready", "drain", "maint")
_SEPARATORS = " \t,"
_STRTOL = re.compile(r"\s*([+-]?\d+)")


@dataclass(frozen=True, slots=True)
class AgentAnswer:
    """One answer line, as HAProxy splits it: the last word of each kind, as written."""

    health: str | None = None  # up, down, fail, stopped (lower case)
    admin: str | None = None  # ready, drain, maint (lower case)
    weight: str | None = None  # the value: `75%` from `75%`, `12` from `weight:12`
    maxconn: str | None = None  # the value after `maxconn:`
    description: str = ""  # after `#`
    unknown: str | None = None  # the first word that is none of the above


def parse_line(line: str) -> AgentAnswer:
    """The words of one answer line (without its CR/LF)."""
    health = admin = weight = maxconn = unknown = None
    description = ""
    pos, end = 0, len(line)
    while pos < end:
        if line[pos] in _SEPARATORS:
            pos += 1
            continue
        if line[pos] == "#":
            description = line[pos + 1:].lstrip(" \t")
            break
        stop = pos + 1
        while stop < end and line[stop] not in _SEPARATORS:
            stop += 1
        word, lower = line[pos:stop], line[pos:stop].lower()
        pos = stop
        if lower in HEALTH_WORDS:
            health = lower
        elif lower in ADMIN_WORDS:
            admin = lower
        elif word[0].isascii() and word[0].isdigit() and "%" in word:
            weight = word
        elif lower.startswith("maxconn:"):
            maxconn = word[len("maxconn:"):]
        elif lower.startswith("weight:"):
            weight = word[len("weight:"):]
        elif unknown is None:
            unknown = word
    return AgentAnswer(health, admin, weight, maxconn, description, unknown)


def _strtol(text: str) -> tuple[int | None, str]:
    """C's strtol in base 10: the number and what follows it, or None when none leads."""
    m = _STRTOL.match(text)
    if m is None:
        return None, text
    return int(m.group(1)), text[m.end():]


def new_weight(value: str, configured: int) -> tuple[int | None, str]:
    """The weight `value` asks for given the configured weight, or None and why not
    (HAProxy's `server_parse_weight_change_request`, messages included)."""
    if not value:
        return None, "Require <weight> or <weight%>."
    w, rest = _strtol(value)
    if w is None:
        return None, "Empty weight string empty or preceded by garbage"
    if rest == "%":
        if w < 0:
            return None, "Relative weight must be positive."
        return min(configured * min(w, PERCENT_MAX) // 100, max(WEIGHT_MAX, configured)), ""
    if not 0 <= w <= WEIGHT_MAX:
        return None, "Absolute weight can only be between 0 and 256 inclusive."
    if rest:
        return None, "Trailing garbage in weight string"
    return w, ""


def new_maxconn(value: str) -> tuple[int | None, str]:
    """The maxconn `value` sets, or None and why not (`server_parse_maxconn_change_request`)."""
    if not value:
        return None, "Require <maxconn>."
    v, rest = _strtol(value)
    if v is None:
        return None, "maxconn string empty or preceded by garbage"
    if rest:
        return None, "Trailing garbage in maxconn string"
    return v, ""


@dataclass(frozen=True, slots=True)
class AgentState:
    """What the agent's answers so far have set, as HAProxy keeps it per server."""

    configured_weight: int
    weight: int  # HAProxy's uweight
    admin: str = "ready"
    health: str | None = None  # the last health word said; None before any
    maxconn: int | None = None
    message: str = ""  # the check status text HAProxy would show for the last answer

    @classmethod
    def initial(cls, configured_weight: int) -> AgentState:
        """Before any answer: ready, at the configured weight."""
        return cls(configured_weight, configured_weight)

    @property
    def down(self) -> bool:
        """True while the agent's last health word is down, fail or stopped."""
        return self.health in DOWN_WORDS

    def apply(self, answer: AgentAnswer) -> AgentState:
        """The state after `answer`: admin state, then weight, then maxconn, then health,
        in HAProxy's order; what the answer does not say stays."""
        state = self if answer.admin is None else replace(self, admin=answer.admin)
        warning = ""
        if answer.weight is not None:
            weight, warning = new_weight(answer.weight, self.configured_weight)
            if weight is not None:
                state = replace(state, weight=weight)
        if answer.maxconn is not None:
            maxconn, note = new_maxconn(answer.maxconn)
            warning = warning or note
            if maxconn is not None:
                state = replace(state, maxconn=maxconn)
        if answer.health is not None:
            state = replace(state, health=answer.health)
        return replace(state, message=_message(answer, warning))


def _message(answer: AgentAnswer, warning: str) -> str:
    """HAProxy's check status text: the health word with the description (or, for `up`
    or no description, the first unknown word or warning); else the error or warning."""
    if answer.health is not None:
        note = answer.description
        if not note or answer.health == "up":
            note = answer.unknown or warning or note
        return f"via agent : {answer.health}" + (f" ({note})" if note else "")
    if answer.unknown:
        return f"agent reports an error : {answer.unknown}"
    if warning:
        return f"agent warns : {warning}"
    return ""


def describe(answer: AgentAnswer) -> str:
    """The answer's words for a result detail: `drain, weight 50%, maxconn 30`."""
    parts = [w for w in (answer.health, answer.admin) if w]
    if answer.weight is not None:
        parts.append(f"weight {answer.weight}")
    if answer.maxconn is not None:
        parts.append(f"maxconn {answer.maxconn}")
    if answer.unknown:
        parts.append(f"ignored {answer.unknown!r}")
    if answer.description:
        parts.append(f"# {answer.description}")
    return "agent: " + (", ".join(parts) if parts else "nothing said")


# -- asking the agent ---------------------------------------------------------------------

class AgentExchange(lean.Conversation):
    """One agent check (see `lean.Conversation`): send `agent_send`, read up to the
    line's end."""

    __slots__ = ("_timeout", "answer", "broken", "phase", "received")

    def __init__(self, timeout: float, connect: lean.Connect) -> None:
        """`connect` carries `agent_send`, if any (`Connect.then`)."""
        super().__init__(connect)
        self._timeout = timeout
        self.phase = "connect"
        self.received = bytearray()
        self.answer: AgentAnswer | None = None
        self.broken = ""

    def connected(self) -> None:
        """Connected: the agent speaks next (after our `agent_send`)."""
        self.phase = "answer"

    def sent(self) -> bool:
        """A line is always read."""
        return True

    def feed(self, data: bytes) -> bool:
        """Take bytes read; True once the line ended (or could not be one)."""
        start = len(self.received)
        self.received += data
        for i in range(start, len(self.received)):
            byte = self.received[i]
            if byte in b"\r\n":
                self.answer = parse_line(self.received[:i].decode("latin-1"))
                return True
            if byte == 0:  # HAProxy stops at a NUL and never sees the line end
                self.broken = f"NUL byte in the agent's line: got {quote(bytes(self.received))}"
                return True
        if len(self.received) >= LINE_CAP:
            self.broken = f"no line end in {LINE_CAP} bytes"
            return True
        return False

    def eof(self) -> None:
        """The agent closed before ending its line: HAProxy ignores such an answer."""
        got = f": got {quote(bytes(self.received))}" if self.received else ""
        self.broken = f"agent closed without ending its line{got}"

    def result(self, latency: float) -> ProbeResult:
        """Healthy unless the agent said down, fail or stopped."""
        if self.answer is None:
            return failed(FailureKind.PROTOCOL, self.broken, latency)
        if self.answer.health in DOWN_WORDS:
            detail = _message(self.answer, "")
            return failed(FailureKind.STATUS, detail, latency)
        return ProbeResult(ok=True, latency=latency, detail=describe(self.answer))

    def timed_out(self, latency: float) -> ProbeResult:
        """A TIMEOUT naming the phase and anything read."""
        return no_answer(self._timeout, self.phase, self.received, latency)

    def failed(self, exc: Exception, latency: float) -> ProbeResult:
        """Socket errors by the shared edge table."""
        return failed(*classify(exc), latency)


class AgentProbe:
    """Asks the agent at `agent_port` (default: the backend's port) per check."""

    def __init__(self, config: ProbeConfig, *, resolver: Resolver | None = None) -> None:
        if not isinstance(config.spec, AgentSpec):
            raise TypeError(f"AgentProbe needs an AgentSpec, got {type(config.spec).__name__}")
        self._spec = config.spec
        self.timeout = config.timing.timeout
        self.resolver = resolver or default_resolver()
        self.lean = True
        self._source = source_address(config)
        self._send = self._spec.agent_send or None
        self._connects: dict[int, lean.Connect] = {}

    def exchange(self, target: Target) -> AgentExchange:
        """A fresh exchange for one check of `target`'s agent (the probe loop follows
        these too)."""
        port = self._spec.agent_port or target.port
        connect = self._connects.get(port)
        if connect is None:
            connect = self._connects[port] = lean.Connect(port, source=self._source,
                                                          then=self._send)
        return AgentExchange(self.timeout, connect)

    async def ask(self, target: Target) -> tuple[AgentAnswer | None, ProbeResult]:
        """The agent's answer (None when there was none) and the check's result."""
        exchange = self.exchange(target)
        result = await lean.check(exchange, target.host, self.timeout, self.resolver,
                                  partial(lean.drive_raw, exchange))
        return exchange.answer, result

    async def check(self, target: Target) -> ProbeResult:
        """Probe `target` once; failures come back as a result, cancellation propagates."""
        return (await self.ask(target))[1]

    async def aclose(self) -> None:
        """Nothing is pooled; present for the Probe protocol."""
