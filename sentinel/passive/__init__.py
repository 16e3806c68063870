"""Passive signals (SPEC 10): failures that balancers and clients saw on real traffic.

`base` holds the signal and the address index shared by every source; one file per
source: `nginx_log` (nginx's error log, followed across rotation), `haproxy_stats`
(per-server error counters of `show stat`), `reports` (the body of POST /v1/reports).
A signal is a hint: by default it triggers an immediate probe (passive triggers,
active confirms); with `passive: {count: true}` it also counts in the breaker.
"""
