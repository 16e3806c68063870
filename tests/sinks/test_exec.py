"""The exec sink: argv placeholders without a shell, a timeout that kills the whole process
group, non-zero exits retried with backoff by the runner, output in the log."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import trio

from sentinel.backoff import Backoff
from sentinel.errors import SinkRejected, SinkUnavailable
from sentinel.sinks.exec import ExecOptions, ExecSink
from sentinel.sinks.runner import SinkRunner
from tests.processes import wait_gone
from tests.sinks.webhook.conftest import event, update

RECORD = "import json, sys; open(sys.argv[1], 'a').write(json.dumps(sys.argv[2:]) + '\\n')"


def runs(path: Path) -> list[list[str]]:
    """The argv tails recorded by RECORD, one per run."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_placeholders_are_substituted_per_argument_without_a_shell(tmp_path: Path) -> None:
    """Each argument gets the event's fields; shell syntax reaches the program verbatim."""
    out = tmp_path / "runs"
    sink = ExecSink("page", ExecOptions((sys.executable, "-c", RECORD, str(out), "{service}",
                                         "{backend}", "{address}", "{from}->{to}", "{weight}",
                                         "$(touch pwned); {unknown}")))
    await sink.apply(update(event(backend="web2", to="down")))
    assert runs(out) == [["web", "web2", "127.0.0.1:1", "up->down", "0",
                          "$(touch pwned); {unknown}"]]


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A command that outlives `timeout` is killed with the child it started."""
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    # long enough for the shell to start and write the pid on a loaded machine
    sink = ExecSink("page", ExecOptions(("/bin/sh", "-c", script), timeout=1.0))
    with trio.fail_after(10), pytest.raises(SinkRejected, match=r"timed out after 1s"):
        await sink.apply(update(event()))
    assert await wait_gone([int(pid_file.read_text())]) == []


async def test_non_zero_exit_is_rejected_with_its_last_line(tmp_path: Path) -> None:
    """Exit 3 with a message is a SinkRejected naming the exit and the message."""
    sink = ExecSink("page", ExecOptions(("/bin/sh", "-c", "echo nope >&2; exit 3")))
    with pytest.raises(SinkRejected, match="3") as info:
        await sink.apply(update(event()))
    assert "nope" in str(info.value)


async def test_missing_program_is_unavailable(tmp_path: Path) -> None:
    """A command that cannot start is SinkUnavailable (retried like any failure)."""
    sink = ExecSink("page", ExecOptions((str(tmp_path / "missing"),)))
    with pytest.raises(SinkUnavailable):
        await sink.apply(update(event()))


async def test_failures_are_retried_with_backoff_and_done_events_not_rerun(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The second event's command fails twice: the runner retries it with backoff until it
    passes, the first event's command ran once, and the output is in the log."""
    count = tmp_path / "count"
    script = (f'echo "run $1"; n=$(cat {count} 2>/dev/null || echo 0); '
              f'echo $((n+1)) > {count}; [ "$1" = web1 ] || [ "$n" -ge 3 ]')
    sink = ExecSink("page", ExecOptions(("/bin/sh", "-c", script, "sh", "{backend}")))
    runner = SinkRunner(sink, backoff=Backoff(initial=0.05, maximum=0.2))
    with caplog.at_level(logging.INFO, "sentinel.sinks.exec"):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            runner.publish(update(event(backend="web1"), event(backend="web2")))
            with trio.fail_after(10):
                while runner.statistics().applied < 1:  # noqa: ASYNC110 - polling counters
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    assert count.read_text().strip() == "4"  # web1 once, web2 three times
    assert runner.statistics().failures == 2
    assert caplog.text.count("page stdout: run web1") == 1
    assert caplog.text.count("page stdout: run web2") == 3
