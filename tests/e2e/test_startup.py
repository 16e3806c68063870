"""Start-up mistakes an operator makes with `sentinel run`: each is one line on stderr and
exit 2, never a traceback (the read-only state dir is in test_state_dir.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.e2e.helpers import run_cli

pytestmark = pytest.mark.e2e
CONFIG = """\
version: 1
state_dir: {state}
api: {{listen: "{listen}", token: s3cret-token}}
services:
  web:
    probe: {{type: tcp, interval: 1s}}
    backends: ["127.0.0.1:1"]
"""


def run_with_listen(tmp_path: Path, listen: str) -> list[str]:
    """`sentinel run` with api.listen LISTEN: its stderr lines (it must exit 2)."""
    config = tmp_path / "sentinel.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state", listen=listen))
    done = run_cli("run", "-c", str(config))
    assert done.returncode == 2, done.stderr
    return done.stderr.splitlines()


def test_an_api_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Another process listens on api.listen: one line naming the address, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        assert run_with_listen(tmp_path, listen) == [
            f"sentinel: api.listen {listen}: cannot listen: Address already in use"]


def test_an_address_this_machine_does_not_have_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """api.listen on an address no interface has (TEST-NET-1): one line, exit 2."""
    assert run_with_listen(tmp_path, "192.0.2.1:9900") == [
        "sentinel: api.listen 192.0.2.1:9900: cannot listen: Cannot assign requested address"]
