"""The ipvsadm driver runs its command through `sentinel.process`: edits on standard
input, the time limit killing the whole process group, failures mapped to sink errors.
A shell script stands in for ipvsadm (the kernel tests drive the real one)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import trio

from sentinel.errors import SinkRejected, SinkUnavailable
from sentinel.sinks.ipvs.ipvsadm import Ipvsadm
from tests.processes import wait_gone


def fake_ipvsadm(tmp_path: Path, body: str) -> Path:
    """An executable /bin/sh script standing in for ipvsadm."""
    path = tmp_path / "ipvsadm"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_edits_go_to_standard_input_of_one_restore_call(tmp_path: Path) -> None:
    """`apply` runs `ipvsadm -R` once with one edit per line on its standard input and
    returns what it said on stderr."""
    got = tmp_path / "got"
    command = fake_ipvsadm(tmp_path, f'echo "$@" > {got}; cat >> {got}; echo "line 2: no" >&2\n')
    edits = [("-A", "-t", "10.0.0.1:80", "-s", "wlc"),
             ("-a", "-t", "10.0.0.1:80", "-r", "10.0.1.1:80")]
    said = await Ipvsadm([str(command)], timeout=5.0).apply(edits)
    assert got.read_text() == "-R\n-A -t 10.0.0.1:80 -s wlc\n-a -t 10.0.0.1:80 -r 10.0.1.1:80\n"
    assert said == "line 2: no"


async def test_a_hanging_command_is_killed_with_its_children(tmp_path: Path) -> None:
    """Past `timeout` the call is SinkUnavailable and the command's process group is
    killed, a child it left in the background included."""
    child = tmp_path / "child.pid"
    command = fake_ipvsadm(tmp_path, f"sleep 60 & echo $! > {child}; wait\n")
    with trio.fail_after(10), pytest.raises(
            SinkUnavailable, match=rf"^{re.escape(str(command))} -L -n: timed out after 0\.3s$"):
        await Ipvsadm([str(command)], timeout=0.3).read_all()
    assert await wait_gone([int(child.read_text())]) == []


async def test_a_missing_command_is_unavailable_and_a_failing_one_rejected(
        tmp_path: Path) -> None:
    """A command that cannot start is SinkUnavailable; a non-zero exit is SinkRejected
    quoting its stderr."""
    with pytest.raises(SinkUnavailable, match="No such file or directory"):
        await Ipvsadm([str(tmp_path / "missing")], timeout=5.0).read_all()
    command = fake_ipvsadm(tmp_path, "echo 'Memory allocation problem' >&2; exit 2\n")
    with pytest.raises(SinkRejected, match=r"failed \(exit 2\): Memory allocation problem"):
        await Ipvsadm([str(command)], timeout=5.0).read_all()
