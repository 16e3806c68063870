"""A tiny HTTP backend for end-to-end tests, run as its own process.

    python tests/e2e/backend_server.py PORT [NAME [HOST]]

Answers every GET with 200 `{"status": "ok", "name": NAME}` on HOST:PORT
(127.0.0.1 by default) until killed. SO_REUSEADDR is on, so a restarted
backend can take its port back.
It speaks HTTP/1.1 with keep-alive (unless the client sends `Connection: close`),
so a test can hold one connection open across a balancer change.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    """200 with a small JSON body for any path; no access log."""

    name = "backend"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Answer healthy."""
        body = json.dumps({"status": "ok", "name": self.name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def main(argv: list[str]) -> None:
    """Serve on HOST:PORT until killed."""
    Handler.name = argv[2] if len(argv) > 2 else "backend"
    server = ThreadingHTTPServer((argv[3] if len(argv) > 3 else "127.0.0.1", int(argv[1])),
                                 Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
