"""A webhook receiver run as its own process, for tests that start `sentinel run`.

    python tests/sinks/webhook/receiver_server.py PORT LOG CONTROL_DIR [HOST]

Every POST is appended to LOG as one JSON line (`headers`, `body`, `status`)
before it is answered; one whose body ends early (its sender was killed while
writing it) is dropped unanswered. It answers 200 while CONTROL_DIR/accept exists, else
the status in CONTROL_DIR/status (503 without one); CONTROL_DIR/delay
(seconds) slows every answer down.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Handler(BaseHTTPRequestHandler):
    """Records, then answers as CONTROL_DIR says."""

    protocol_version = "HTTP/1.1"
    log_path = Path("receiver.log")
    control = Path(".")
    lock = threading.Lock()

    def do_POST(self) -> None:
        """Record the request, wait `delay`, answer 200 or the refusal."""
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        if len(body) < length:  # the sender went away mid-request (killed): not a delivery
            self.close_connection = True
            return
        refusal = self.control / "status"
        status = 200 if (self.control / "accept").exists() else (
            int(refusal.read_text()) if refusal.exists() else 503)
        record = {"headers": {k.lower(): v for k, v in self.headers.items()},
                  "body": body.decode(), "status": status, "at": time.time()}
        with self.lock, open(self.log_path, "a") as log:
            log.write(json.dumps(record) + "\n")
        delay = self.control / "delay"
        if delay.exists():
            time.sleep(float(delay.read_text() or 0))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def main(argv: list[str]) -> None:
    """Serve on HOST:PORT (127.0.0.1 by default) until killed."""
    Handler.log_path, Handler.control = Path(argv[2]), Path(argv[3])
    server = ThreadingHTTPServer((argv[4] if len(argv) > 4 else "127.0.0.1", int(argv[1])),
                                 Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
