"""A slow, obviously-correct oracle: the paper's Pseudocode 1 with Katran's weighted
rounds, written from the text and not from sentinel.sinks.maglev.table."""

from __future__ import annotations


def largest_remainder(weights: list[int], size: int) -> list[int]:
    """size * w / sum(w) rounded so the parts add up to `size`; ties to the lower index."""
    total = sum(weights)
    base = [w * size // total for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(weights[i] * size % total), i))
    for i in remainders[: size - sum(base)]:
        base[i] += 1
    return base


def reference_table(offsets: list[int], skips: list[int], weights: list[int],
                     size: int) -> list[int]:
    """Backends take turns; each round every backend gains its weight in credit and, once
    the credit reaches the largest weight, claims the next empty slot of its permutation
    (offset + j * skip) mod size, until it holds its quota."""
    n = len(offsets)
    quota = largest_remainder(weights, size)
    top = max(weights)
    entry = [-1] * size
    nxt, credit, held = [0] * n, [0] * n, [0] * n
    filled = 0
    while True:
        for i in range(n):
            if held[i] == quota[i]:
                continue
            credit[i] += weights[i]
            if credit[i] < top:
                continue
            credit[i] -= top
            c = (offsets[i] + nxt[i] * skips[i]) % size
            while entry[c] >= 0:
                nxt[i] += 1
                c = (offsets[i] + nxt[i] * skips[i]) % size
            entry[c] = i
            nxt[i] += 1
            held[i] += 1
            filled += 1
            if filled == size:
                return entry
