"""`sentinel schema`: the configuration's JSON Schema on stdout (SPEC 14)."""

from __future__ import annotations

import json

from sentinel.config.schema import config_schema
from sentinel.sinks.registry import SINK_KINDS


def print_schema() -> int:
    """Print the schema (draft 2020-12) for editors and CI; exit 0."""
    print(json.dumps(config_schema(SINK_KINDS), indent=2))
    return 0
