"""The ipvs sink's ownership file: what it owns survives a restart, in either format."""

from __future__ import annotations

import json
from pathlib import Path

from sentinel.sinks.ipvs.sink import Ownership
from sentinel.sinks.ipvs.table import parse_virtual

WEB, API = parse_virtual("tcp:10.0.0.1:80"), parse_virtual("udp:[2001:db8::1]:53")


async def test_created_services_and_owned_reals_survive_a_restart(tmp_path: Path) -> None:
    """Real servers owned and virtual services created are read back by a new Ownership;
    forgetting a virtual service drops both."""
    path = tmp_path / "ipvs-lvs.json"
    first = Ownership(path)
    await first.settle(WEB, [("10.0.0.11", 80)], [])
    await first.created_by_us(WEB)
    await first.settle(API, [("2001:db8::53", 53)], [])
    again = Ownership(path)
    assert (again.get(WEB), again.created) == (frozenset({("10.0.0.11", 80)}), {WEB})
    await again.forget(WEB)
    last = Ownership(path)
    assert (last.get(WEB), last.get(API), last.created) == (
        frozenset(), frozenset({("2001:db8::53", 53)}), frozenset())


def test_the_first_format_is_read_as_owned_reals_with_nothing_created(tmp_path: Path
                                                                       ) -> None:
    """A file from the first build (no version: virtual -> real servers) keeps its real
    servers owned and claims no virtual service as created, so none is ever deleted."""
    path = tmp_path / "ipvs-lvs.json"
    path.write_text(json.dumps({"tcp:10.0.0.1:80": [["10.0.0.11", 80]]}))
    ownership = Ownership(path)
    assert (ownership.get(WEB), ownership.created) == (frozenset({("10.0.0.11", 80)}),
                                                       frozenset())
