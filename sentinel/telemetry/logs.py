"""Logging set-up shared by every command: `--log-level` and `--log-format text|json`."""

from __future__ import annotations

import json
import logging
import sys

from sentinel.timefmt import rfc3339

NOISY = ("httpx", "httpcore", "hpack", "hypercorn")  # libraries held at WARNING or above


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
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
