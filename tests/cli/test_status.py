"""`sentinel status`'s table: what it adds beside the backends."""

from __future__ import annotations

from sentinel.cli.status import render_table

DOC: dict[str, object] = {"services": {"web": {"panic": False, "up": 1, "total": 1, "backends": [
    {"name": "web1", "address": "127.0.0.1:8080", "state": "up", "weight": 1, "fails": 3,
     "since": "2026-01-01T00:00:00Z", "progress": None,
     "last_probe": {"error": "connection refused"}}]}}, "sinks": {}}


def test_a_suspect_sentinel_says_so_under_its_backends() -> None:
    """With `suspect` in /v1/state, one line names the reason and that downs are held;
    calm (null) or not configured (absent), no such line."""
    suspect = {**DOC, "suspect": {"since": "2026-01-01T00:00:02Z",
                                  "reason": "every canary fails: gw (connection refused)"}}
    assert render_table(suspect).splitlines()[-1] == (
        "SUSPECT since 2026-01-01T00:00:02Z: every canary fails: gw (connection refused) "
        "(downs are held)")
    assert "SUSPECT" not in render_table({**DOC, "suspect": None})
    assert "SUSPECT" not in render_table(DOC)


def test_a_suspect_cluster_member_says_its_votes_do_not_count() -> None:
    """In a cluster the SUSPECT line says the member's down votes are not counted, and
    the cluster line names the members that suspect themselves."""
    cluster = {"node": "n1", "leader": "n2", "ok": True, "members": [{"node": "n1"},
               {"node": "n2"}, {"node": "n3"}], "suspects": ["n1"], "probers": "all",
               "quorum": 2}
    doc = {**DOC, "cluster": cluster,
           "suspect": {"since": "2026-01-01T00:00:02Z", "reason": "every canary fails"}}
    lines = render_table(doc).splitlines()
    assert lines[-1] == ("SUSPECT since 2026-01-01T00:00:02Z: every canary fails (its down "
                         "votes are not counted)")
    assert ("cluster: node n1, leader n2; ok; members n1 n2 n3; suspect: n1; probers all, "
            "quorum 2") in lines
