"""The reference gRPC health server (grpcio + grpcio-health-checking), run as a subprocess.

    python -m tests.probes.grpc_server [--tls CERT KEY]

Listens on 127.0.0.1 (a free port), prints the port, then takes commands on
stdin, one a line, answering `ok` to each when done:

    set SERVICE STATUS    HealthServicer.set (STATUS: SERVING, NOT_SERVING, ...; SERVICE
                          `-` means "" (the server as a whole))
    stop                  stop the server (no grace) and exit

It runs apart from the tests because grpcio brings its own threads and
C-core event loop, which have no business inside the test's Trio loop.
"""

from __future__ import annotations

import argparse
import sys
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> int:
    """Serve until `stop` or the end of stdin."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if args.tls:
        cert, key = (Path(p).read_bytes() for p in args.tls)
        port = server.add_secure_port("127.0.0.1:0",
                                      grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["set"] and len(words) == 3:
            service = "" if words[1] == "-" else words[1]
            servicer.set(service, health_pb2.HealthCheckResponse.ServingStatus.Value(words[2]))
        elif words == ["stop"]:
            server.stop(None).wait()
            print("ok", flush=True)
            return 0
        print("ok", flush=True)
    server.stop(None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
