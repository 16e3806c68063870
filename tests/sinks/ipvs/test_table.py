"""The pure IPVS table code: parsing ipvsadm's listings, the minimal diff, drift, drains."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.sinks.ipvs.table import (
    DesiredService,
    RealServer,
    ServiceEntry,
    ServiceSpec,
    Virtual,
    diff,
    drain_finished,
    drift,
    parse_flags,
    parse_listing,
    parse_thresholds,
    parse_virtual,
)
from tests.sinks.ipvs.saved import parse_save

SAMPLES = Path(__file__).with_name("samples")
WEB = Virtual("tcp", "10.0.0.1", 80)


def sample(name: str) -> str:
    """A captured ipvsadm output (see samples/README.md)."""
    return (SAMPLES / name).read_text()


def table_with_thresholds() -> dict[Virtual, ServiceEntry]:
    """The sample table as the sink reads it: -Ln merged with -Ln --thresholds."""
    return parse_thresholds(sample("thresholds.txt"), parse_listing(sample("listing.txt")))


def real(address: str, port: int, weight: int, forward: str = "dr", upper: int = 0,
         lower: int = 0) -> RealServer:
    """A real server with the given settings."""
    return RealServer(address, port, forward, weight, upper, lower)


def test_virtual_forms() -> None:
    """tcp/udp/sctp with IPv4 or bracketed IPv6, fwmark with an optional /ipv6."""
    assert parse_virtual("tcp:10.0.0.1:80") == WEB
    six = parse_virtual("udp:[2001:DB8:0::1]:53")
    assert (six.address, six.ipv6, six.argv()) == ("2001:db8::1", True,
                                                   ("-u", "[2001:db8::1]:53"))
    assert parse_virtual("fwmark:7").argv() == ("-f", "7")
    assert parse_virtual("fwmark:7/ipv6").argv() == ("-f", "7", "-6")
    assert str(parse_virtual("sctp:10.0.0.1:9")) == "sctp:10.0.0.1:9"


@pytest.mark.parametrize("text", ["http:1.2.3.4:80", "tcp:1.2.3.4", "tcp:host:80",
                                  "tcp:1.2.3.4:0", "fwmark:0", "fwmark:x", "fwmark:7/ipv5",
                                  "tcp:[::1:80"])
def test_virtual_rejects(text: str) -> None:
    """Anything but an IP literal with a port, or a positive mark, is refused."""
    with pytest.raises(ValueError, match=r"expected|port|not an IP"):
        parse_virtual(text)


def test_listing_services() -> None:
    """Every service line: scheduler, flags, persistence, netmask, ops, IPv6 fwmark."""
    table = parse_listing(sample("listing.txt"))
    assert table[WEB].spec == ServiceSpec("wlc", persistent=300)
    assert table[Virtual("tcp", "10.0.0.2", 80)].spec.flags == frozenset({1, 3})
    assert table[Virtual("udp", "10.0.0.3", 53)].spec.one_packet
    mh = table[Virtual("udp", "2001:db8::1", 53, ipv6=True)].spec
    assert (mh.scheduler, mh.flags) == ("mh", frozenset({1, 2}))
    assert table[Virtual("tcp", "2001:db8::2", 443, ipv6=True)].spec.netmask == "64"
    sh = table[Virtual("fwmark", fwmark=7)].spec
    assert (sh.flags, sh.persistent, sh.netmask) == (frozenset({2}), 60, "255.255.255.0")
    assert table[Virtual("fwmark", fwmark=8, ipv6=True)].reals == {}


def test_listing_reals_and_thresholds() -> None:
    """Forwarding names map to dr/nat/tun; counters come from -Ln, thresholds merged in."""
    table = table_with_thresholds()
    reals = table[WEB].reals
    assert reals[("127.0.0.2", 80)] == real("127.0.0.2", 80, 3, "dr", 100, 50)
    busy = reals[("127.0.0.3", 80)]
    assert (busy.weight, busy.active, busy.inactive) == (0, 2, 7)
    tunnelled = table[Virtual("tcp", "10.0.0.2", 80)].reals[("127.0.0.4", 80)]
    assert tunnelled.forward == "tun"
    six = table[Virtual("tcp", "2001:db8::2", 443, ipv6=True)].reals
    assert six[("::1", 8443)] == real("::1", 8443, 4, "nat", 10, 5)
    assert six[("127.0.0.1", 443)].forward == "tun"


def test_single_service_listing_has_no_banner() -> None:
    """`ipvsadm -L -n -t VIP:PORT` (no version line) parses the same."""
    text = "\n".join(sample("listing.txt").splitlines()[1:3] + sample(
        "listing.txt").splitlines()[3:7])
    assert list(parse_listing(text)) == [WEB]


def test_listing_garbage_names_the_line() -> None:
    """An unexpected line is a ValueError quoting it and its number."""
    with pytest.raises(ValueError, match=r"line 2 'TCP  10.0.0.1:80 wlc frobnicate'"):
        parse_listing("Prot LocalAddress:Port Scheduler Flags\nTCP  10.0.0.1:80 wlc frobnicate")
    with pytest.raises(ValueError, match="before any service"):
        parse_listing("  -> 127.0.0.1:80 Route 1 0 0")


def test_save_agrees_with_listing() -> None:
    """`ipvsadm -Sn` gives the same services and real servers (it shows no thresholds
    and no counters, which read as 0)."""
    saved = parse_save(sample("save.txt"))
    listed = parse_listing(sample("listing.txt"))
    assert saved.keys() == listed.keys()
    for virtual, entry in listed.items():
        assert saved[virtual].spec == entry.spec
        assert saved[virtual].reals.keys() == entry.reals.keys()
        for key, one in entry.reals.items():
            assert saved[virtual].reals[key].same_settings(one)


def test_flags_by_scheduler() -> None:
    """sh-*/mh-* name bits 1 and 2 of their scheduler only; flag-N fits every scheduler."""
    assert parse_flags("mh", ["mh-port", "mh-fallback"]) == frozenset({1, 2})
    assert parse_flags("rr", ["flag-3"]) == frozenset({3})
    with pytest.raises(ValueError, match="unknown flag 'mh-port' for scheduler sh"):
        parse_flags("sh", ["mh-port"])
    assert ServiceSpec("sh", frozenset({1, 2})).argv() == ("-s", "sh", "-b",
                                                           "sh-fallback,sh-port")


def desired(*reals: RealServer, spec: ServiceSpec | None = None,
            absent: frozenset[tuple[str, int]] = frozenset()) -> DesiredService:
    """The WEB service wanted with `reals`."""
    return DesiredService(WEB, spec or ServiceSpec("wlc", persistent=300),
                          {r.key: r for r in reals}, absent)


def test_diff_creates_everything_when_missing() -> None:
    """No service: -A with the whole spec, then -a per real server with every setting."""
    assert diff(desired(real("127.0.0.2", 80, 3)), None) == [
        ("-A", "-t", "10.0.0.1:80", "-s", "wlc", "-p", "300"),
        ("-a", "-t", "10.0.0.1:80", "-r", "127.0.0.2:80", "-g", "-w", "3", "-x", "0",
         "-y", "0")]


def test_diff_nothing_when_converged() -> None:
    """The sample's WEB entry with the same settings needs no edit; counters are ignored,
    and real servers neither wanted nor absent (someone else's) are left alone."""
    actual = table_with_thresholds()[WEB]
    assert diff(desired(real("127.0.0.2", 80, 3, "dr", 100, 50),
                        real("127.0.0.3", 80, 0)), actual) == []


def test_edit_restates_forwarding_weight_and_thresholds() -> None:
    """A weight change is one -e that restates forward and thresholds (ipvsadm resets
    whatever an edit leaves out)."""
    actual = table_with_thresholds()[WEB]
    edits = diff(desired(real("127.0.0.2", 80, 0, "dr", 100, 50)), actual)
    assert edits == [("-e", "-t", "10.0.0.1:80", "-r", "127.0.0.2:80", "-g", "-w", "0",
                      "-x", "100", "-y", "50")]


def test_service_edit_restates_the_whole_spec() -> None:
    """A scheduler change is -E with persistence and flags restated (-E resets them)."""
    actual = table_with_thresholds()[WEB]
    spec = ServiceSpec("mh", frozenset({1}), persistent=300)
    edits = diff(desired(real("127.0.0.2", 80, 3, "dr", 100, 50), spec=spec), actual)
    assert edits == [("-E", "-t", "10.0.0.1:80", "-s", "mh", "-b", "mh-fallback", "-p", "300")]


def test_diff_orders_edits_adds_then_removals() -> None:
    """Capacity first: edits and additions come before deletions; an absent key that is
    not in the table is not deleted twice."""
    actual = table_with_thresholds()[WEB]
    edits = diff(desired(real("127.0.0.2", 80, 4, "dr", 100, 50), real("127.0.0.7", 80, 1),
                         absent=frozenset({("127.0.0.9", 80), ("127.0.0.8", 80)})), actual)
    assert [e[0] for e in edits] == ["-e", "-a", "-d"]
    assert edits[-1] == ("-d", "-t", "10.0.0.1:80", "-r", "127.0.0.9:80")


def test_real_port_forced_except_with_nat() -> None:
    """dr and tun take the service's port (0 for fwmark); nat keeps the backend's."""
    assert WEB.real_port("dr", 8080) == 80
    assert WEB.real_port("tun", 8080) == 80
    assert WEB.real_port("nat", 8080) == 8080
    assert Virtual("fwmark", fwmark=7).real_port("dr", 8080) == 0


def test_drift_names_what_changed_in_owned_entries() -> None:
    """Spec changes and owned real servers changed, added or deleted are reported;
    counters and servers not owned are not."""
    before = table_with_thresholds()[WEB]
    reals = dict(before.reals)
    reals[("127.0.0.2", 80)] = real("127.0.0.2", 80, 77, "dr", 100, 50)
    reals[("127.0.0.3", 80)] = RealServer("127.0.0.3", 80, "dr", 0, active=9)
    del reals[("127.0.0.9", 80)]
    reals[("127.0.0.6", 80)] = real("127.0.0.6", 80, 1)
    after = ServiceEntry(WEB, ServiceSpec("rr"), reals)
    notes = drift(before, after, {("127.0.0.2", 80), ("127.0.0.3", 80), ("127.0.0.9", 80)})
    assert notes == [
        "tcp:10.0.0.1:80 changed from -s wlc -p 300 to -s rr",
        "real server 127.0.0.2:80 dr weight 3 thresholds 100/50 became "
        "127.0.0.2:80 dr weight 77 thresholds 100/50",
        "real server 127.0.0.9:80 was deleted"]
    assert drift(before, None, ()) == ["tcp:10.0.0.1:80 was deleted"]
    assert drift(before, before, before.reals) == []


def test_drain_finishes_when_idle_or_late() -> None:
    """A draining server goes once it has no connection, or at the timeout."""
    busy = RealServer("127.0.0.3", 80, "dr", 0, active=1)
    idle = RealServer("127.0.0.3", 80, "dr", 0)
    assert not drain_finished(busy, started=10.0, now=12.0, timeout=5.0)
    assert drain_finished(busy, started=10.0, now=15.0, timeout=5.0)
    assert drain_finished(idle, started=10.0, now=10.0, timeout=5.0)
    assert drain_finished(None, started=10.0, now=10.0, timeout=5.0)
