"""A QEMU virtual machine with a real IPVS table, and a command channel into it.

QEMU runs Debian's kernel with software emulation (`-accel tcg`: this host's
/dev/kvm cannot run a normal kernel), `-nodefaults` and no network device, so
nothing the VM does leaves it. Its one way in is a virtio-serial port bound
to a unix socket (see `vmimage` for the protocol). That socket takes one
client, so a broker thread holds the connection and serves `BROKER` requests
(one JSON line in, one out) from any number of short-lived clients, one at a
time: the forwarder script `ipvsadm_forward.py` that the sink under test uses
as its `command`, and the tests themselves through `Vm.run`.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shlex
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.sinks.ipvs.vmimage import PORT_NAME, ImageUnavailable, build_image, cache_dir

FORWARDER = Path(__file__).with_name("ipvsadm_forward.py")
BOOT_TIMEOUT = 60.0
COMMAND_TIMEOUT = 20.0
PRINTF_LINES = r"%s\n"  # printf expands the backslash itself


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one command inside the VM ended."""

    returncode: int
    stdout: str
    stderr: str


class Vm:
    """One booted VM; `run` executes a shell command inside it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker_path = workdir / "broker.sock"
        self.console = workdir / "console.log"
        self._port_path = workdir / "port.sock"
        self._qemu: subprocess.Popen[bytes] | None = None
        self._port: socket.socket | None = None
        self._buffer = b""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        # Every call forwarded from outside (the sink under test), in order: what the
        # sink read from the kernel and when, without racing it with reads of our own.
        self.forwarded: list[tuple[list[str], Outcome]] = []

    @property
    def command(self) -> list[str]:
        """The argv a sink uses as its ipvsadm `command` to reach this VM's ipvsadm."""
        return [str(FORWARDER), str(self.broker_path)]

    def start(self) -> None:
        """Build the image if needed, boot, and wait until the VM answers a command."""
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise ImageUnavailable("qemu-system-x86_64 is not installed")
        kernel, initrd = build_image(cache_dir())
        with open(self.console, "wb") as console:
            self._qemu = subprocess.Popen(
                [qemu, "-accel", "tcg", "-nodefaults", "-no-reboot", "-display", "none",
                 "-m", "256", "-smp", "1", "-kernel", str(kernel), "-initrd", str(initrd),
                 "-append", "console=ttyS0 quiet loglevel=3 panic=-1",
                 "-serial", "stdio", "-device", "virtio-serial-pci,id=vs",
                 "-chardev", f"socket,id=port,path={self._port_path},server=on,wait=off",
                 "-device", f"virtserialport,bus=vs.0,chardev=port,name={PORT_NAME}"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            self._connect()
        except BaseException:
            self.close()
            raise
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.broker_path))
        self._listener.listen(16)
        self._thread = threading.Thread(target=self._serve, name="ipvs-vm-broker", daemon=True)
        self._thread.start()

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> Outcome:
        """Run a shell command inside the VM (one at a time)."""
        if "\n" in command:
            raise ValueError("a VM command is one line")
        with self._lock:
            assert self._port is not None, "the VM is not running"
            request_id = str(next(self._ids))
            self._port.sendall(f"{request_id} {command}\n".encode())
            return self._answer(request_id, time.monotonic() + timeout)

    def ipvsadm(self, *args: str) -> Outcome:
        """`ipvsadm ARGS` inside the VM."""
        return self.run(shlex.join(["ipvsadm", *args]))

    def close(self) -> None:
        """Stop the broker and QEMU (killed and reaped by PID)."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._port is not None:
            self._port.close()
        if self._qemu is not None:
            self._qemu.kill()
            self._qemu.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- inside ------------------------------------------------------------------

    def _connect(self) -> None:
        """Connect to QEMU's port socket, then ping until the VM's /init answers.

        Pings sent before the guest opened its port are answered late or not at
        all; `_answer` skips answers to older ids, so only the latest one counts."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self._port is None:
            self._check_alive(deadline)
            try:
                port = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                port.connect(str(self._port_path))
            except (FileNotFoundError, ConnectionRefusedError):
                port.close()
                time.sleep(0.05)
                continue
            self._port = port
        while True:
            self._check_alive(deadline)
            request_id = str(next(self._ids))
            self._port.sendall(f"{request_id} true\n".encode())
            with contextlib.suppress(TimeoutError):
                self._answer(request_id, time.monotonic() + 0.5)
                return

    def _check_alive(self, deadline: float) -> None:
        assert self._qemu is not None
        if self._qemu.poll() is not None or time.monotonic() > deadline:
            console = self.console.read_text(errors="replace")[-2000:]
            raise ImageUnavailable(f"the IPVS test VM did not come up: {console}")

    def _answer(self, request_id: str, deadline: float) -> Outcome:
        """Read answers until the one to `request_id` (earlier ones are stale)."""
        while True:
            header = self._read_until_newline(deadline)
            answer_id, code, out_len, err_len = header.split()
            body = self._read_exactly(int(out_len) + int(err_len), deadline)
            if answer_id == request_id:
                out, err = body[:int(out_len)], body[int(out_len):]
                return Outcome(int(code), out.decode(errors="replace"),
                               err.decode(errors="replace"))

    def _read_until_newline(self, deadline: float) -> str:
        while b"\n" not in self._buffer:
            self._receive(deadline)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            self._receive(deadline)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _receive(self, deadline: float) -> None:
        assert self._port is not None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the VM did not answer in time")
        self._port.settimeout(left)
        try:
            chunk = self._port.recv(65536)
        except TimeoutError as exc:
            raise TimeoutError("the VM did not answer in time") from exc
        if not chunk:
            raise ConnectionError("the VM closed its command port")
        self._buffer += chunk

    # -- broker ------------------------------------------------------------------

    def _serve(self) -> None:
        """Answer broker clients until the listener closes."""
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_one, args=(client,), daemon=True).start()

    def _serve_one(self, client: socket.socket) -> None:
        """One request: `{"argv": [...], "stdin": "..."}` -> `{"returncode", "stdout",
        "stderr"}` (base64). Standard input is passed on as lines through printf."""
        with contextlib.suppress(OSError), client, client.makefile("rwb") as stream:
            try:
                request = json.loads(stream.readline())
                command = shlex.join(request["argv"])
                lines = str(request.get("stdin", "")).splitlines()
                if lines:
                    command = shlex.join(["printf", PRINTF_LINES, *lines]) + " | " + command
                outcome = self.run(command)
                self.forwarded.append((list(request["argv"]), outcome))
                reply = {"returncode": outcome.returncode,
                         "stdout": base64.b64encode(outcome.stdout.encode()).decode(),
                         "stderr": base64.b64encode(outcome.stderr.encode()).decode()}
            except (ValueError, KeyError, TimeoutError, ConnectionError, OSError) as exc:
                reply = {"returncode": 255, "stdout": "",
                         "stderr": base64.b64encode(f"vm broker: {exc}\n".encode()).decode()}
            stream.write(json.dumps(reply).encode() + b"\n")  # the client may be gone
