"""sentinel: a health-check and circuit-breaker sidecar on Trio."""

__version__ = "0.1.0"
