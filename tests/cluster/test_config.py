"""The `cluster:` section: values, defaults, and one positioned error per mistake."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
import trustme
import yaml

from sentinel.cluster.config import ClusterConfig, EtcdTls
from sentinel.errors import ConfigErrors
from sentinel.sinks.registry import load_config
from tests.config import check_schema_verdict, run_sentinel, write_config

SERVICES = """\
services:
  web:
    backends: [127.0.0.1:8080]
"""


def load(tmp_path: Path, cluster: str, env: dict[str, str] | None = None) -> ClusterConfig:
    """Load a config with this `cluster:` block (indented YAML text)."""
    path = write_config(tmp_path, SERVICES + "cluster:\n" + textwrap.indent(
        textwrap.dedent(cluster), "  "))
    config = load_config(path, env=env if env is not None else {})
    assert config.cluster is not None
    return config.cluster


def errors(tmp_path: Path, cluster: str) -> list[str]:
    """The error lines a config with this `cluster:` block produces."""
    with pytest.raises(ConfigErrors) as caught:
        load(tmp_path, cluster)
    return [str(e).replace(str(tmp_path) + "/", "") for e in caught.value.errors]


def test_spec_example(tmp_path: Path) -> None:
    """SPEC 12's example loads with node from the environment and the file's SHA-256
    taken before ${VAR} expansion."""
    cluster = load(tmp_path, """\
        etcd: [http://127.0.0.1:2379]
        prefix: /sentinel/prod/
        node: ${SENTINEL_NODE}
        zone: a
        lease_ttl: 5s
        probers: 2
        quorum: 2
        """, env={"SENTINEL_NODE": "lb1"})
    text = (tmp_path / "sentinel.yaml").read_bytes()
    assert cluster == ClusterConfig(
        endpoints=("http://127.0.0.1:2379",), node="lb1", prefix="/sentinel/prod/", zone="a",
        lease_ttl=5, probers=2, quorum=2, config_sha256=hashlib.sha256(text).hexdigest())
    other = load(tmp_path, "etcd: [http://127.0.0.1:2379]\nnode: ${SENTINEL_NODE}\n",
                 env={"SENTINEL_NODE": "lb2"})
    again = load(tmp_path, "etcd: [http://127.0.0.1:2379]\nnode: ${SENTINEL_NODE}\n",
                 env={"SENTINEL_NODE": "lb3"})
    assert other.config_sha256 == again.config_sha256  # one file, one configuration


def test_defaults(tmp_path: Path) -> None:
    """Without probers every member probes; quorum is a majority; prefix gains a '/';
    a URL without a port gets etcd's 2379; one call's deadline is a third of the lease."""
    cluster = load(tmp_path, "etcd: http://[::1]\nnode: lb1\nprefix: /s\n")
    assert cluster.endpoints == ("http://[::1]:2379",)
    assert (cluster.prefix, cluster.lease_ttl, cluster.probers, cluster.quorum) == (
        "/s/", 5, None, None)
    assert [cluster.quorum_for(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert cluster.call_timeout == pytest.approx(5 / 3)
    fixed = load(tmp_path, "etcd: [http://127.0.0.1:2379]\nnode: lb1\nprobers: 3\n")
    assert [fixed.quorum_for(n) for n in (1, 3)] == [2, 2]
    assert load(tmp_path, "etcd: [http://a:1]\nnode: n\nprobers: all\n").probers is None


def test_no_cluster_section(tmp_path: Path) -> None:
    """Without `cluster:` the config carries none (single node unchanged)."""
    assert load_config(write_config(tmp_path, SERVICES), env={}).cluster is None


MISTAKES = [
    ("node: lb1\n", ["sentinel.yaml:5:3: cluster: cluster needs `etcd`"]),
    ("etcd: []\nnode: lb1\n", ["sentinel.yaml:5:9: cluster.etcd: needs at least one endpoint"]),
    ("etcd: [127.0.0.1:2379]\nnode: lb1\n",
     ["sentinel.yaml:5:10: cluster.etcd[0]: expected http://host:port or https://host:port, "
      "got '127.0.0.1:2379'"]),
    ("etcd: [http://h:99999]\nnode: lb1\n",
     ["sentinel.yaml:5:10: cluster.etcd[0]: invalid URL 'http://h:99999': "
      "Port out of range 0-65535"]),
    ("etcd: [http://h:1/v3]\nnode: lb1\n",
     ["sentinel.yaml:5:10: cluster.etcd[0]: expected http://host:port or https://host:port "
      "without a path or credentials, got 'http://h:1/v3'"]),
    ("etcd: [http://h:1, https://h:2]\nnode: lb1\n",
     ["sentinel.yaml:5:9: cluster.etcd: endpoints mix http:// and https://"]),
    ("etcd: [http://h:1]\nnode:\n",
     ["sentinel.yaml:6:3: cluster.node: must not be empty (each member needs its own name)"]),
    ("etcd: [http://h:1]\nnode: a/b\n",
     ["sentinel.yaml:6:9: cluster.node: must be letters, digits, '.', '_' or '-' (it is part "
      "of etcd keys), got 'a/b'"]),
    ("etcd: [http://h:1]\nnode: n\nlease_ttl: 2.5s\n",
     ["sentinel.yaml:7:14: cluster.lease_ttl: must be whole seconds from 1s to 3600s (etcd "
      "counts leases in seconds), got '2.5s'"]),
    ("etcd: [http://h:1]\nnode: n\nprobers: some\n",
     ["sentinel.yaml:7:12: cluster.probers: expected a number of members or \"all\", "
      "got 'some'"]),
    ("etcd: [http://h:1]\nnode: n\nprobers: 0\n",
     ["sentinel.yaml:7:12: cluster.probers: must be at least 1, got 0"]),
    ("etcd: [http://h:1]\nnode: n\nprobers: 2\nquorum: 3\n",
     ["sentinel.yaml:8:11: cluster.quorum: must be at most probers (2), got 3"]),
    ("etcd: [http://h:1]\nnode: n\nuser: sentinel\n",
     ["sentinel.yaml:7:9: cluster.user: `user` needs `password` too"]),
    ("etcd: [http://h:1]\nnode: n\ntls: {ca: ca.pem}\n",
     ["sentinel.yaml:7:13: cluster.tls.ca: no such file: ca.pem"]),
    ("etcd: [http://h:1]\nnode: n\nseeds: []\n",
     ["sentinel.yaml:7:3: cluster.seeds: unknown key 'seeds'; expected one of: etcd, lease_ttl, "
      "node, password, prefix, probers, quorum, tls, user, zone"]),
    ("etcd: [ftp://h:1]\nnode: n\nquorum: 0\n",
     ["sentinel.yaml:5:10: cluster.etcd[0]: expected http://host:port or https://host:port, "
      "got 'ftp://h:1'",
      "sentinel.yaml:7:11: cluster.quorum: must be at least 1, got 0"]),
]
IDS = ["no-etcd", "empty-etcd", "no-scheme", "bad-port", "path", "mixed", "empty-node",
       "slash-node", "fractional-ttl", "probers-word", "probers-zero", "quorum-above",
       "user-alone", "missing-ca", "unknown-key", "two-at-once"]
# Why `sentinel schema` cannot refuse a mistake; it refuses the others.
ACROSS_FIELDS = "a rule across fields"
LOADER_ONLY = {"mixed": "a rule across the list's items", "fractional-ttl": "whole seconds of "
               "a duration written in any unit", "quorum-above": ACROSS_FIELDS,
               "user-alone": ACROSS_FIELDS, "missing-ca": "about this machine: the file must "
               "exist"}


@pytest.mark.parametrize(("cluster", "expected"), MISTAKES, ids=IDS)
def test_errors(tmp_path: Path, cluster: str, expected: list[str]) -> None:
    """Each mistake gives its file:line:col: key.path: message line; all are reported."""
    assert errors(tmp_path, cluster) == expected


@pytest.mark.parametrize(("case", "cluster", "expected"),
                         [(i, *m) for i, m in zip(IDS, MISTAKES, strict=True)], ids=IDS)
def test_schema_refuses_what_it_can(case: str, cluster: str, expected: list[str]) -> None:
    """`sentinel schema` refuses each mistake at its key path, unless only the loader can
    see it (LOADER_ONLY says why)."""
    document = yaml.safe_load(SERVICES + "cluster:\n" + textwrap.indent(cluster, "  "))
    first, *more = (line.split(": ")[1] for line in expected)
    check_schema_verdict(document, first, LOADER_ONLY.get(case, ""), *more)


def test_tls(tmp_path: Path) -> None:
    """TLS files are resolved next to the config, checked, and make a client context;
    tls with an http:// endpoint is refused."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = ca.issue_cert("sentinel")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    cluster = load(tmp_path, "etcd: [https://127.0.0.1:2379]\nnode: n\n"
                             "tls: {ca: ca.pem, cert: client.pem, key: client.key}\n")
    assert cluster.tls == EtcdTls(str(tmp_path / "ca.pem"), str(tmp_path / "client.pem"),
                                  str(tmp_path / "client.key"))
    assert cluster.tls.context().verify_mode.name == "CERT_REQUIRED"
    assert errors(tmp_path, "etcd: [http://h:1]\nnode: n\ntls: {ca: ca.pem}\n") == [
        "sentinel.yaml:7:8: cluster.tls: tls needs every etcd endpoint to be https://"]
    assert errors(tmp_path, "etcd: [https://h:1]\nnode: n\ntls: {cert: client.pem}\n") == [
        "sentinel.yaml:7:15: cluster.tls.cert: a client certificate needs both `cert` and "
        "`key`"]
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    assert errors(tmp_path, "etcd: [https://h:1]\nnode: n\ntls: {ca: bad.pem}\n")[0].startswith(
        "sentinel.yaml:7:8: cluster.tls: cannot use these TLS files:")


def test_check_reports_cluster_error(tmp_path: Path) -> None:
    """`sentinel check` exits 2 with the cluster error line, no traceback."""
    write_config(tmp_path, SERVICES + "cluster:\n  etcd: [http://h:1]\n  node: ''\n")
    result = run_sentinel("check", "-c", "sentinel.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "sentinel.yaml:6:9: cluster.node: must not be empty" in result.stderr
    assert "Traceback" not in result.stderr
