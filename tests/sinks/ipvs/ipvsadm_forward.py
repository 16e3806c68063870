#!/usr/bin/env -S python3 -S
"""Run ipvsadm inside the IPVS test VM: `ipvsadm_forward.py BROKER_SOCKET [ARGS...]`.

The sink under test uses this as its `command`, in place of `ipvsadm`: the
arguments and standard input (the edits of `ipvsadm -R`) go to the VM's
broker (see vm.py), and the VM's ipvsadm's stdout, stderr and exit code come
back as this process's own. Standard library only,
started with -S so each call stays cheap.
"""

import base64
import json
import socket
import sys


def main(argv: list[str]) -> int:
    """Forward one ipvsadm call; exit 255 when the broker cannot be reached."""
    if len(argv) < 2:
        print("usage: ipvsadm_forward.py BROKER_SOCKET [IPVSADM ARGS...]", file=sys.stderr)
        return 2
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(argv[1])
            stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
            request = {"argv": ["ipvsadm", *argv[2:]], "stdin": stdin}
            conn.sendall(json.dumps(request).encode() + b"\n")
            with conn.makefile("rb") as stream:
                reply = json.loads(stream.readline())
    except (OSError, ValueError) as exc:
        print(f"ipvsadm_forward: {exc}", file=sys.stderr)
        return 255
    sys.stdout.buffer.write(base64.b64decode(reply["stdout"]))
    sys.stderr.buffer.write(base64.b64decode(reply["stderr"]))
    return int(reply["returncode"])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
