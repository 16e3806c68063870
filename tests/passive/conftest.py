"""Fixtures shared from elsewhere: real loopback servers and tracked processes."""

from tests.e2e.conftest import processes  # noqa: F401  (killed and reaped by PID)
from tests.probes.conftest import serve  # noqa: F401  (servers in the test's nursery)
