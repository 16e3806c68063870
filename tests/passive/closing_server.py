"""A backend that accepts every connection and closes it at once, answering nothing, run
as its own process: a TCP probe's connect succeeds, every real request fails.

    python tests/passive/closing_server.py PORT
"""

from __future__ import annotations

import socket
import sys


def main(port: int) -> None:
    """Accept and close on 127.0.0.1:PORT until killed."""
    with socket.create_server(("127.0.0.1", port)) as server:  # SO_REUSEADDR on POSIX
        while True:
            conn, _ = server.accept()
            conn.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
