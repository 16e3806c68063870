"""The file-descriptor budget, in a child process under a given RLIMIT_NOFILE (prlimit):
the soft limit is raised to the hard one and split between probes, a reserve and the
API; a hard limit too low for max_in_flight leaves the API its minimum and warns."""

from __future__ import annotations

import subprocess
import sys

from sentinel.limits import API_MAX, API_MIN
from tests.e2e.helpers import require_binary

CHILD = """
import logging, resource, sys
from sentinel.limits import budget
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
b = budget(int(sys.argv[1]))
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], b.limit, b.probes, b.api)
"""


def budget_under(nofile: str, max_in_flight: int) -> tuple[list[int], str]:
    """budget(max_in_flight) in a child started with `prlimit --nofile=NOFILE`: the soft
    limit it ends with, the budget's limit, probes and API share; and its stderr."""
    done = subprocess.run([require_binary("prlimit"), f"--nofile={nofile}", sys.executable,
                           "-c", CHILD, str(max_in_flight)], capture_output=True, text=True,
                          timeout=30, check=True)
    return [int(v) for v in done.stdout.split()], done.stderr


def test_the_soft_limit_is_raised_and_the_api_gets_half_of_what_is_left() -> None:
    """Soft 1024, hard 4096, max_in_flight 32: the limit becomes 4096 and the API gets
    its maximum (half of what probes and the reserve leave is more); no warning."""
    (soft, limit, probes, api), stderr = budget_under("1024:4096", 32)
    assert (soft, limit, probes, api) == (4096, 4096, 32, API_MAX)
    assert stderr == ""


def test_a_hard_limit_too_low_for_the_probes_warns_and_keeps_the_api_minimum() -> None:
    """Hard 200 with max_in_flight 1024: the API keeps its minimum and a warning names
    the limit and what to do."""
    (soft, limit, _, api), stderr = budget_under("100:200", 1024)
    assert (soft, limit, api) == (200, 200, API_MIN)
    assert "WARNING RLIMIT_NOFILE 200 is low for max_in_flight 1024" in stderr
    assert "LimitNOFILE=" in stderr
