"""Tests of the command line; the configs several of them share."""

# Budgets worked out by hand from sentinel/engine/schedule.py's rules: the next probe starts
# `interval` (up), `fast_interval` (breaker counting) or `down_interval` (down) after the
# previous one started, never before it ended, and never before the breaker's retry_at.
# The worst death comes an instant after a probe started, so the first failing probe is
# a whole delay away; failing probes may hang for the full timeout.
BUDGET_CONFIG = """\
    services:
      # threshold fall 3: failures start at 1, 2, 3 (fast_interval defaults to interval),
      # the third ends at 3.5 = interval + 2 * fast_interval + timeout.
      # Recovery just after a (hanging) probe started: oks at 1 and 2 (rise 2) -> 2.0.
      tcp3:
        backends: [127.0.0.1:1]
        probe: {interval: 1s, timeout: 500ms}
        breaker: {kind: threshold, fall: 3, rise: 2}
      # A hanging failure holds the next probe back past fast_interval: 2 + 1 + 1 + 1 = 5.0.
      # Recovery: the next probe is down_interval away, then one fast_interval: 5.2.
      slowdown:
        backends: [127.0.0.1:1, 127.0.0.1:2]
        probe: {interval: 2s, fast_interval: 200ms, down_interval: 5s, timeout: 1s}
        breaker: {kind: threshold, fall: 3, rise: 2}
      # nginx max_fails 3: failures end at 1.5, 2.0, 2.5 (each waits for the previous one).
      # Down: a trial ends at 0.5 and fails, so the next is at 0.5 + fail_timeout = 10.5,
      # then passes 2 needs one more at 10.7.
      ngx:
        backends: [127.0.0.1:1]
        probe: {interval: 1s, fast_interval: 200ms, timeout: 500ms}
        breaker: {kind: nginx, max_fails: 3, fail_timeout: 10s, passes: 2}
      # max_fails 0 never marks down; a backend restored down returns after a failed
      # trial (timeout 1s) plus fail_timeout 10s.
      never:
        backends: [127.0.0.1:1]
        breaker: {kind: nginx, max_fails: 0}
      # jitter 10% may stretch every delay by 10%: 3 * 1.1 + 0.5 = 3.8 and 2 * 1.1 = 2.2.
      jittery:
        backends: [127.0.0.1:1]
        probe: {interval: 1s, timeout: 500ms, jitter: 10%}
        breaker: {kind: threshold, fall: 3, rise: 2}
      # fall 1 / rise 1 every 200ms: 200 + 100 = 300ms down, 200ms back.
      quick:
        backends: [127.0.0.1:1]
        probe: {interval: 200ms, timeout: 100ms}
        breaker: {kind: threshold, fall: 1, rise: 1}
    """
