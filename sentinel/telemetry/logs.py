"""Logging set-up shared by every command: `--log-level` and `--log-format text|json`."""

from __future__ import annotations

import json
import logging
import math
import sys

from sentinel.timefmt import rfc3339


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as JSON."""
        doc: dict[str, object] = {"time": rfc3339(record.created), "level": record.levelname,
                                  "logger": record.name, "message": record.getMessage()}
        for key in ("trace_id", "span_id"):
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger to write to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "hpack", "hypercorn"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class Throttle:
    """Lets a log line through at most once per key per `every` seconds (`math.inf`: once
    ever) and counts the ones it held back, so a fault that repeats at every probe is
    logged, not repeated thousands of times. Keys are forgotten past `keys` of them."""

    __slots__ = ("_every", "_keys", "_seen")

    def __init__(self, every: float = math.inf, keys: int = 1024) -> None:
        self._every = every
        self._keys = keys
        self._seen: dict[object, tuple[float, int]] = {}  # key: (last let through, held)

    def allow(self, key: object, now: float = 0.0) -> int | None:
        """None to hold this line back; else how many lines of `key` were held back
        since the last one let through."""
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._every:
            self._seen[key] = (seen[0], seen[1] + 1)
            return None
        if seen is None and len(self._seen) >= self._keys:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return 0 if seen is None else seen[1]
