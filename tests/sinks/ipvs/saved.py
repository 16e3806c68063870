"""Reading `ipvsadm -Sn` (the save format): a second view of the same table, against
which the sink's own parser of `ipvsadm -Ln` is checked. The sink never reads it."""

from __future__ import annotations

from dataclasses import replace

from sentinel.sinks.ipvs.table import (
    _PROTOCOL_OPTION,
    FORWARDS,
    RealServer,
    ServiceEntry,
    ServiceSpec,
    Table,
    Virtual,
    parse_flags,
    split_address,
)

_OPTION_PROTOCOL = {v: k for k, v in _PROTOCOL_OPTION.items()}


def parse_save(text: str) -> Table:
    """Parse `ipvsadm -Sn` (no thresholds and no counters: those read as 0)."""
    table: Table = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        try:
            virtual, options = _saved_virtual(words[1:])
            if words[0] == "-A":
                spec = ServiceSpec(
                    scheduler=options.get("-s", "wlc"),
                    flags=parse_flags(options.get("-s", "wlc"),
                                      options["-b"].split(",") if "-b" in options else ()),
                    persistent=int(options["-p"]) if "-p" in options else None,
                    netmask=options.get("-M"), one_packet="-o" in options,
                    pe=options.get("--pe"))
                table[virtual] = ServiceEntry(virtual, spec)
            elif words[0] == "-a":
                address, port = split_address(options["-r"])
                forward = next(name for name, flag in FORWARDS.items() if flag in options)
                real = RealServer(address, port, forward, int(options.get("-w", "1")),
                                  int(options.get("-x", "0")), int(options.get("-y", "0")))
                entry = table[virtual]
                table[virtual] = replace(entry, reals={**entry.reals, real.key: real})
            else:
                raise ValueError(f"unexpected {words[0]!r}")
        except (ValueError, IndexError, KeyError, StopIteration) as exc:
            raise ValueError(f"cannot parse ipvsadm -S's line {number} {line.strip()!r}: "
                             f"{exc!r}") from None
    return table


def _saved_virtual(words: list[str]) -> tuple[Virtual, dict[str, str]]:
    options: dict[str, str] = {}
    flags = {"-g", "-m", "-i", "-o", "-6"}
    index = 0
    while index < len(words):
        word = words[index]
        if word in flags:
            options[word] = ""
            index += 1
        else:
            options[word] = words[index + 1]
            index += 2
    for option, protocol in _OPTION_PROTOCOL.items():
        if option in options:
            if protocol == "fwmark":
                return Virtual("fwmark", fwmark=int(options[option]),
                               ipv6="-6" in options), options
            address, port = split_address(options[option])
            return Virtual(protocol, address, port, ipv6=":" in address), options
    raise ValueError("no service named")
