"""Telemetry: traces, metrics and logs.

`traces` holds the spans and the Observer that feeds traces and metrics,
`metrics` the Prometheus endpoint, `logs` the logging set-up.
"""
