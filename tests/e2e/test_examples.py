"""The configs under examples/ load, and the real nginx and HAProxy accept them together
with what sentinel renders from them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from sentinel.model import BackendView, ServiceView, State
from sentinel.sinks.base import Update
from sentinel.sinks.nginx.options import NginxOptions
from sentinel.sinks.nginx.sink import NginxSink
from sentinel.sinks.registry import load_config
from tests.e2e.balancers import stream_module
from tests.e2e.helpers import ROOT, require_binary, skip_or_fail

pytestmark = pytest.mark.e2e
EXAMPLES = ROOT / "examples"


def all_up(config_path: Path) -> dict[str, ServiceView]:
    """Every service of a config as a view with all backends up."""
    config = load_config(str(config_path))
    return {svc.name: ServiceView(svc.name, tuple(
        BackendView(name=b.name, address=b.address, host=b.host, port=b.port, state=State.UP,
                    weight=b.weight, configured_weight=b.weight, backup=b.backup)
        for b in svc.backends)) for svc in config.services}


@pytest.mark.parametrize("name", ["nginx", "haproxy"])
def test_example_sentinel_configs_load(name: str) -> None:
    """examples/*/sentinel.yaml are valid sentinel configs."""
    assert all_up(EXAMPLES / name / "sentinel.yaml")


def test_example_haproxy_cfg_is_valid() -> None:
    """HAProxy accepts examples/haproxy/haproxy.cfg without warnings."""
    haproxy = require_binary("haproxy")
    done = subprocess.run([haproxy, "-c", "-f", str(EXAMPLES / "haproxy" / "haproxy.cfg")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr


async def test_example_nginx_conf_accepts_what_sentinel_renders(tmp_path: Path) -> None:
    """Rendered through the example's sinks and bindings, the upstream files pass
    `nginx -t` inside the example nginx.conf (paths moved to a temporary directory)."""
    nginx = require_binary("nginx")
    if stream_module(nginx) is None:
        skip_or_fail("this nginx has no stream module (Debian: libnginx-mod-stream)")
    config = load_config(str(EXAMPLES / "nginx" / "sentinel.yaml"))
    views = all_up(EXAMPLES / "nginx" / "sentinel.yaml")
    sinks = {s.name: s.options for s in config.sinks}
    for svc in config.services:
        for binding in svc.sinks:
            example = sinks[binding.sink]
            assert isinstance(example, NginxOptions)
            options = NginxOptions(file=str(tmp_path / Path(example.file).name),
                                   context=example.context, mode=example.mode, test=("true",),
                                   reload=("true",), pid_file=None, min_reload_interval=0)
            await NginxSink(binding.sink, options).apply(Update(views[svc.name],
                                                                options=binding.options))
    conf = (EXAMPLES / "nginx" / "nginx.conf").read_text()
    for old in ("/etc/nginx/sentinel", "/var/log/nginx", "/run"):
        conf = conf.replace(old, str(tmp_path))
    (tmp_path / "nginx.conf").write_text(conf)
    done = await trio.run_process([nginx, "-t", "-e", str(tmp_path / "e.log"),
                                   "-c", str(tmp_path / "nginx.conf")],
                                  capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()


def test_cluster_example_runs() -> None:
    """examples/cluster/run.sh starts etcd and three sentinels, shows a death agreed by
    all three at one seq with one Maglev table, a drain through one member on all, a
    new leader after the old one is killed, and stops everything it started."""
    require_binary("etcd")
    done = subprocess.run([str(EXAMPLES / "cluster" / "run.sh")], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT,
                          env={**os.environ, "SENTINEL": f"{sys.executable} -m sentinel"})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    tables = {line.rsplit(" ", 1)[1] for line in out.splitlines()
              if "web2 down at seq 1; Maglev table sha256" in line}
    assert len(tables) == 1
    assert out.count("web2 down at seq 1") == 3
    assert [line for line in out.splitlines() if line.endswith(": web3 drain")] == [
        "lb1: web3 drain", "lb2: web3 drain", "lb3: web3 drain"]
    assert "new leader: lb" in out
    assert out.count("[leader] web/web2: up -> down") == 1  # one member notified, once
