"""The Maglev fill: the paper's population loop (NSDI 2016, Pseudocode 1) with
Katran's weighted rounds, made fast with NumPy. Pure; `sentinel.sinks.maglev.table` holds
the contract (hashes, keys, modes, files) and calls `populate`.

The population rules (turns, Katran's credit per round, quotas by largest
remainder) are stated once, in `sentinel.sinks.maglev.table`'s docstring.

The fill runs in NumPy. The serial algorithm walks the turns in order with
per-backend candidate buffers (permutation chunks minus the slots already
taken). With many backends per round it is faster to run each round as a
deferred acceptance in parallel: every backend of the round proposes its first
slot that is empty or held by a later backend of the same round, the earliest
proposer keeps each slot, the others propose again. With one common priority
order this converges to exactly the serial result (serial dictatorship is the
unique stable matching). In the table's tail, where a scan would walk many
positions to reach one of the few empty slots, each proposer instead jumps to
the acceptable slot fewest steps ahead: (slot - here) * skip^-1 mod M.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.int64]
_BIG = np.iinfo(np.int64).max
_ROUNDS_FOR_DA = 256  # average proposers per round above which deferred acceptance wins
_JUMP_AFTER = 64  # expected scan length above which the tail is solved by modular inverses


def quotas(weights: Array, size: int) -> Array:
    """Slots per backend: size * w / sum(w) rounded by largest remainder (ties: lower index)."""
    total = int(weights.sum())
    exact = weights * size
    base = exact // total
    short = size - int(base.sum())
    remainder = exact - base * total
    order = np.lexsort((np.arange(weights.size), -remainder))
    base[order[:short]] += 1
    return base


def schedule(weights: Array, size: int) -> Array:
    """The turns in claiming order, as `round * N + index` (so index = turn % N)."""
    n = weights.size
    counts = quotas(weights, size)
    top = int(weights.max())
    owner = np.repeat(np.arange(n, dtype=np.int64), counts)
    claim = np.arange(size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    w = weights[owner]
    rounds = ((claim + 1) * top + w - 1) // w - 1  # Katran: credit reaches `top`
    turns = rounds * n + owner
    span = int(turns.max()) + 1
    if span <= 8 * size:  # a bitmap sorts these distinct integers in linear time
        seen = np.zeros(span, dtype=bool)
        seen[turns] = True
        return np.flatnonzero(seen).astype(np.int64)
    return np.sort(turns)


def populate(offsets: Array, skips: Array, weights: Array, size: int) -> Array:
    """The paper's table: for each slot, the index of the backend owning it (-1 when
    no backend has weight)."""
    if not weights.size or int(weights.sum()) == 0:
        return np.full(size, -1, dtype=np.int64)
    turns = schedule(weights, size)
    n = weights.size
    rounds = int(turns[-1]) // n + 1
    if size >= _ROUNDS_FOR_DA * rounds:
        return _fill_rounds(offsets, skips, turns, n, size)
    return _fill_serial(offsets, skips, turns, n, size)


def _fill_serial(offsets: Array, skips: Array, turns: Array, n: int, size: int) -> Array:
    taken = bytearray(size)
    view = np.frombuffer(taken, dtype=np.uint8)
    off, skip = offsets.tolist(), skips.tolist()
    buffers: list[list[int]] = [[] for _ in range(n)]
    used = [0] * n  # next unread entry of each buffer
    generated = [0] * n  # next permutation position not yet in a buffer
    claims: list[int] = []
    empty = size
    for i in (turns % n).tolist():
        buf, p = buffers[i], used[i]
        while True:
            if p == len(buf):  # refill: enough positions for a few live candidates
                live = max(2, min(64, empty // (2 * n)))
                count = min(size - generated[i], -(-live * size // empty) + 1)
                pos = np.arange(generated[i], generated[i] + count, dtype=np.int64)
                slots = (off[i] + pos * skip[i]) % size
                buf = buffers[i] = slots[view[slots] == 0].tolist()
                generated[i] += count
                p = 0
                continue
            slot = buf[p]
            p += 1
            if not taken[slot]:
                break
        taken[slot] = 1
        claims.append(slot)
        used[i] = p
        empty -= 1
    table = np.empty(size, dtype=np.int64)
    table[np.array(claims, dtype=np.int64)] = turns % n
    return table


def _scan(base: Array, skip: Array, owner: Array, turn: Array, size: int,
          block: int) -> Array:
    """For proposers at slots `base` of their permutations (steps `skip`): the first slot
    from there on that is empty or held by a later turn than the proposer's."""
    steps = np.arange(block, dtype=np.int64)
    slot = np.empty(turn.size, dtype=np.int64)
    todo = np.arange(turn.size)
    while True:
        s = np.multiply.outer(skip, steps)
        s += base[:, None]
        s %= size
        ok = owner[s] > turn[:, None]
        first = ok.argmax(axis=1)
        row = np.arange(todo.size)
        slot[todo] = s[row, first]
        hit = ok[row, first]
        if hit.all():
            return slot
        miss = ~hit
        todo, skip, turn = todo[miss], skip[miss], turn[miss]
        base = (base[miss] + block * skip) % size


def _jump(base: Array, inverse: Array, owner: Array, turn: Array, size: int) -> Array:
    """What `_scan` finds, computed from the few acceptable slots left (the table's tail):
    the one fewest permutation steps ahead, (slot - base) * skip^-1 mod size."""
    candidates = np.flatnonzero(owner > turn.min())
    steps = np.subtract.outer(candidates, base).T * inverse[:, None] % size
    steps[owner[candidates] <= turn[:, None]] = size
    found: Array = candidates[steps.argmin(axis=1)]
    return found


def _inverses(skips: Array, size: int) -> Array:
    """skip^-1 mod size (prime) as skip^(size-2), by vectorised square-and-multiply."""
    result, base, exponent = np.ones_like(skips), skips % size, size - 2
    while exponent:
        if exponent & 1:
            result = result * base % size
        base = base * base % size
        exponent >>= 1
    return result


def _fill_rounds(offsets: Array, skips: Array, turns: Array, n: int, size: int) -> Array:
    who_all = turns % n
    ends = [*(np.flatnonzero(np.diff(turns // n)) + 1).tolist(), turns.size]
    cur = offsets.copy()  # each backend's slot at its current permutation position
    owner = np.full(size, _BIG, dtype=np.int64)  # the turn holding each slot
    best = np.full(size, _BIG, dtype=np.int64)  # scratch for picking the earliest proposer
    inverse: Array | None = None
    filled = start = 0
    for end in ends:
        members = who_all[start:end]
        turn, who = turns[start:end], members
        start = end
        while True:
            expected = -(-size // (size - filled))  # positions to the next empty slot
            candidates = size - filled + members.size - turn.size  # empty or held this round
            if expected > _JUMP_AFTER and candidates < expected:
                inverse = _inverses(skips, size) if inverse is None else inverse
                slot = _jump(cur[who], inverse[who], owner, turn, size)
            else:
                block = max(1, min(expected, 262144 // turn.size))
                slot = _scan(cur[who], skips[who], owner, turn, size, block)
            cur[who] = slot
            np.minimum.at(best, slot, turn)
            won = best[slot] == turn
            best[slot] = _BIG
            if won.all():  # no two proposers met: the common case
                taken, losers = slot, turn[:0]
                previous = owner[slot]
                owner[slot] = turn
            else:
                taken, losers = slot[won], turn[~won]
                previous = owner[taken]
                owner[taken] = turn[won]
            displaced = previous[previous != _BIG]
            filled += taken.size - displaced.size
            if not (losers.size or displaced.size):
                break
            turn = np.concatenate([losers, displaced])
            who = turn % n
            cur[who] = (cur[who] + skips[who]) % size  # past the slot it lost
        cur[members] = (cur[members] + skips[members]) % size
    return owner % n
