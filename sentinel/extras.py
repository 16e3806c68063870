"""Optional extras: the dependencies only some users need, and the error naming the one
that is missing.

    pip install 'sentinel[maglev]'   NumPy: building Maglev tables (the maglev sink,
                                     `sentinel maglev build|diff`)
    pip install 'sentinel[otlp]'     the OTLP/HTTP span exporter (telemetry.traces.exporter:
                                     otlp)

A missing extra is a config error (or a usage error of the command), found by
`sentinel check`, never an ImportError while running.
"""

from __future__ import annotations

import importlib.util

PROVIDES = {"maglev": "numpy", "otlp": "opentelemetry.exporter.otlp.proto.http"}


def missing(extra: str, what: str) -> str | None:
    """None when `extra` is installed, else a message: `what` needs it, and how to get it."""
    try:
        found = importlib.util.find_spec(PROVIDES[extra]) is not None
    except ModuleNotFoundError:  # a parent package of the dotted name is missing too
        found = False
    return None if found else f"{what} needs the {extra} extra: pip install 'sentinel[{extra}]'"
