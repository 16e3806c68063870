"""A tiny HTTP backend for end-to-end tests and benchmarks, run as its own process.

    python tests/e2e/backend_server.py PORT [NAME] [HOST]

Answers every GET with 200 `{"status": "ok", "name": NAME}` on HOST:PORT
(default 127.0.0.1) until killed, and prints `listening on HOST:PORT` once it
is bound (a test in another network namespace cannot connect to see that).
SO_REUSEADDR is on, so a restarted backend can take its port back. It speaks
HTTP/1.1 with keep-alive (unless the client sends `Connection: close`), so a
test can hold one connection open across a balancer change. SIGUSR1 toggles
failing: every request is then answered 503 (a process that accepts
connections and fails requests), until the next SIGUSR1.
"""

from __future__ import annotations

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class Handler(BaseHTTPRequestHandler):
    """200 (or 503 while failing) with a small JSON body for any path; no access log."""

    name = "backend"
    failing = False
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Answer healthy, or 503 while failing."""
        status = "failing" if Handler.failing else "ok"
        body = json.dumps({"status": status, "name": self.name}).encode()
        self.send_response(503 if Handler.failing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def toggle(signum: int, frame: FrameType | None) -> None:
    """SIGUSR1: start or stop failing every request."""
    Handler.failing = not Handler.failing


def main(argv: list[str]) -> None:
    """Serve on HOST:PORT until killed."""
    Handler.name = argv[2] if len(argv) > 2 else "backend"
    host = argv[3] if len(argv) > 3 else "127.0.0.1"
    signal.signal(signal.SIGUSR1, toggle)
    server = ThreadingHTTPServer((host, int(argv[1])), Handler)
    server.daemon_threads = True
    print(f"listening on {host}:{argv[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
