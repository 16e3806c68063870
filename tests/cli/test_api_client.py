"""`sentinel status` and `sentinel ctl` as API clients, run as real processes against
real servers on 127.0.0.1: a bad `--api` is a usage error, a server that is not sentinel
is named as such (never a traceback, never a fake success), and names travel
%-encoded so the running sentinel acts on exactly the backend asked for."""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sentinel.sinks.webhook.outbox import Outbox
from sentinel.sinks.webhook.sink import outbox_path
from tests.config import run_sentinel, write_config
from tests.e2e.helpers import sentinel_running

Answer = tuple[int, str, bytes]  # status, content type, body
DEEP = b"[" * 100_000 + b"]" * 100_000


class Served:
    """A loopback HTTP server in a thread: its base URL and the request targets it got,
    as sent (still %-encoded)."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.targets: list[str] = []


@pytest.fixture
def serve() -> Iterator[Callable[[type[BaseHTTPRequestHandler]], Served]]:
    """Start servers with a handler class; each is shut down after the test."""
    started: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> Served:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        served = Served(server)
        server.served = served  # type: ignore[attr-defined]
        return served

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def answering(answer: Answer) -> type[BaseHTTPRequestHandler]:
    """A handler giving `answer` to every GET and POST, recording the request target."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.server.served.targets.append(self.path)  # type: ignore[attr-defined]
            status, kind, body = answer
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    return Handler


@pytest.mark.parametrize(("command", "api"), [
    *((["status"], api) for api in ("http://[::1", "127.0.0.1:9900", "ftp://127.0.0.1:21",
                                    "http://127.0.0.1:99999", "http://127.0.0.1:1/?x=1")),
    *((command, "http://[::1") for command in (["status", "--watch"], ["status", "--json"],
                                               ["ctl", "drain", "web/a"], ["outbox", "list"]))])
def test_a_bad_api_url_is_a_usage_error(command: list[str], api: str, tmp_path: Path
                                        ) -> None:
    """`--api` that is no http(s) URL (an unclosed IPv6 bracket, no scheme, another
    scheme, a port out of range) exits 2 with one line naming the option and the value,
    no traceback."""
    done = run_sentinel(*command, "--api", api, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr.splitlines() == [
        f"sentinel {command[0]}: --api: expected http://host:port or https://host:port, "
        f"got {api!r}" + (" (Invalid port: ':1')" if api == "http://[::1" else "")]


@pytest.mark.parametrize("target", ["web", "web/", "/a"])
def test_ctl_without_service_and_backend_is_a_usage_error(target: str, tmp_path: Path
                                                           ) -> None:
    """`ctl drain web` (no backend) is a bad argument: exit 2 with one line, no request."""
    done = run_sentinel("ctl", "drain", target, "--api", "http://127.0.0.1:9", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"sentinel ctl: expected SERVICE/BACKEND, got {target!r}\n")


NOT_SENTINEL: dict[str, Answer] = {
    "html": (200, "text/html", b"<!DOCTYPE html><html><body>hello</body></html>\n"),
    "json list": (200, "application/json", b"[]"),
    "services not an object": (200, "application/json", b'{"services": 5}'),
    "service not an object": (200, "application/json", b'{"services": {"web": 5}}'),
    "nested": (200, "application/json", DEEP),
    "html error": (502, "text/html", b"<html>Bad Gateway</html>"),
    "json error without a message": (500, "application/json", b'{"services": 5}'),
}


@pytest.mark.parametrize(("command", "answer"), [
    *((command, answer) for command in (["status"], ["ctl", "drain", "web/a"])
      for answer in NOT_SENTINEL.values()),
    (["status", "--json"], NOT_SENTINEL["services not an object"]),
    (["status", "--json"], NOT_SENTINEL["service not an object"])])
def test_a_server_that_is_not_sentinel_is_named(
        command: list[str], answer: Answer, serve: Callable[..., Served],
        tmp_path: Path) -> None:
    """`status` and `ctl` pointed at a server that answers, but not as sentinel's API
    does (HTML, JSON of another shape, an error page), exit 1 with one line saying that
    URL is not sentinel's API and what it answered; nothing on stdout (`ctl` used to
    print `web/a: drain (no change)` and exit 0)."""
    server = serve(answering(answer))
    done = run_sentinel(*command, "--api", server.url, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, ""), done
    [line] = done.stderr.splitlines()
    assert line.startswith(f"sentinel {command[0]}: {server.url} is not sentinel's API: "
                           f"{'GET /v1/state' if command[0] == 'status' else 'POST'} ")
    assert f"answered {answer[0]} ({answer[1]})" in line


@pytest.mark.parametrize("answer", [
    NOT_SENTINEL["html"],
    (404, "text/html", b"<html>Not Found</html>"),
    (200, "text/event-stream", b"event: state\ndata: not json\n\n"),
    (200, "text/event-stream", b"event: state\ndata: [1, 2]\n\n"),
    (200, "text/event-stream", b"event: event\nid: 1\ndata: [1]\n\n"
                               b'event: summary\ndata: {"seq": 1}\n\n'),
    (200, "text/event-stream", b'event: summary\ndata: {"seq": 1, "services": 5}\n\n'),
    (200, "text/event-stream", b'event: summary\ndata: {"seq": 1, "sinks": [1]}\n\n'),
    (200, "text/event-stream", b'event: state\ndata: {"service": "web", "full": true, '
                               b'"panic": false, "up": 1, "total": 1, "backends": '
                               b'[{"name": "a"}]}\n\nevent: summary\ndata: {"seq": 1}\n\n'),
    (200, "text/event-stream", b"event: summary\ndata: " + DEEP + b"\n\n"),
], ids=["html", "404", "events not json", "events of another shape", "event a list",
        "services not an object", "sinks a list", "backend without fields", "nested"])
def test_status_watch_names_a_server_that_is_not_sentinel(
        answer: Answer, serve: Callable[..., Served], tmp_path: Path) -> None:
    """`status --watch` pointed at a server with no event stream at /v1/stream, or whose
    events are not sentinel's (not JSON, or JSON the table cannot show: an event that is
    a list, services that are no object, a backend without its fields), exits 1 with one
    line saying so (it used to reconnect for ever, or end in a traceback) and draws
    nothing; retrying could never help."""
    server = serve(answering(answer))
    done = run_sentinel("status", "--watch", "--api", server.url, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, ""), done
    [line] = done.stderr.splitlines()
    assert line.startswith(f"sentinel status: {server.url} is not sentinel's API: "
                           f"GET /v1/stream answered {answer[0]} ({answer[1]})"), line


@pytest.mark.parametrize("command", [["status"], ["ctl", "maint", "web/a"]])
def test_python_http_server_is_not_sentinel(command: list[str], serve: Callable[..., Served],
                                            tmp_path: Path) -> None:
    """`python3 -m http.server`'s handler (404 and 501 pages in HTML) is named as not
    sentinel's API, exit 1, no traceback."""
    server = serve(SimpleHTTPRequestHandler)
    done = run_sentinel(*command, "--api", server.url, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, ""), done
    [line] = done.stderr.splitlines()
    assert line.startswith(f"sentinel {command[0]}: {server.url} is not sentinel's API: ")
    assert "(text/html), not a sentinel error" in line


def test_sentinel_refusals_are_still_refusals(serve: Callable[..., Served],
                                              tmp_path: Path) -> None:
    """A 4xx with sentinel's `{"error": ...}` reads as a refusal with its message."""
    server = serve(answering((401, "application/json",
                              b'{"error":"missing or wrong bearer token"}\n')))
    status = run_sentinel("status", "--api", server.url, cwd=tmp_path)
    ctl = run_sentinel("ctl", "drain", "web/a", "--api", server.url, cwd=tmp_path)
    assert (status.returncode, status.stderr) == (1, (
        f"sentinel status: {server.url} refused (401): missing or wrong bearer token\n"))
    assert (ctl.returncode, ctl.stderr) == (
        1, "sentinel ctl: refused (401): missing or wrong bearer token\n")


@pytest.mark.parametrize(("target", "path"), [
    ("web/a?x=1", "/v1/backends/web/a%3Fx%3D1/drain"),
    ("web/a#x", "/v1/backends/web/a%23x/drain"),
    ("web/../a", "/v1/backends/web/..%2Fa/drain"),
    ("../a", "/v1/backends/%2E%2E/a/drain"),
    ("web/a b", "/v1/backends/web/a%20b/drain"),
    ("web/50%", "/v1/backends/web/50%25/drain"),
    ("web/café", "/v1/backends/web/caf%C3%A9/drain"),
])
def test_ctl_encodes_each_name_as_one_path_segment(
        target: str, path: str, serve: Callable[..., Served], tmp_path: Path) -> None:
    """`ctl drain SERVICE/BACKEND` %-encodes both names, so `?`, `#`, `/`, `%`, a space
    or `..` in a name can neither end the path nor climb out of it."""
    server = serve(answering((200, "application/json", b'{"ok":true,"events":[]}')))
    done = run_sentinel("ctl", "drain", target, "--api", server.url, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"{target}: drain (no change)\n"), done
    assert server.targets == [path]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[str]:
    """`sentinel run` whose service `web` has backends named with a space, a `%`, a `?`
    and a `#`; its API URL. Killed by PID at the end."""
    config = write_config(tmp_path, textwrap.dedent("""\
        state_dir: ./state
        api: {listen: 127.0.0.1:0}
        services:
          web:
            backends:
              - {name: "a b", address: "127.0.0.1:1"}
              - {name: "50%", address: "127.0.0.1:2"}
              - {name: "a%20b", address: "127.0.0.1:3"}
              - {name: "q?x=1#f", address: "127.0.0.1:4"}
            probe: {interval: 1h}
        """))
    with sentinel_running(tmp_path, config) as url:
        yield url


def test_ctl_reaches_backends_whose_names_need_encoding(running: str, tmp_path: Path
                                                        ) -> None:
    """Against a running sentinel, `ctl` drains exactly the backend named, whatever its
    name holds: `a b` and `a%20b` are two backends, `50%` and `q?x=1#f` are found."""
    for name in ("a b", "50%", "a%20b", "q?x=1#f"):
        done = run_sentinel("ctl", "drain", f"web/{name}", "--api", running, cwd=tmp_path)
        assert done.returncode == 0, done
        assert done.stdout.startswith(f"web/{name}: drain (")
    state = run_sentinel("status", "--json", "--api", running, cwd=tmp_path)
    backends = json.loads(state.stdout)["services"]["web"]["backends"]
    assert {b["name"]: b["state"] for b in backends} == {
        "a b": "drain", "50%": "drain", "a%20b": "drain", "q?x=1#f": "drain"}


@pytest.fixture
def held_outbox(tmp_path: Path) -> Iterator[Path]:
    """A config with the webhook sink `ops` whose outbox file is held locked, as a running
    sentinel holds it, so `sentinel outbox` asks the API; the directory."""
    write_config(tmp_path, textwrap.dedent("""\
        state_dir: ./state
        sinks:
          ops:
            type: webhook
            url: http://127.0.0.1:9/
            secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
        services:
          web: {backends: ["127.0.0.1:9"], sinks: [ops]}
        """))
    (tmp_path / "state").mkdir()
    outbox = Outbox.open(outbox_path(tmp_path / "state", "ops"))
    try:
        yield tmp_path
    finally:
        outbox.close()


OUTBOX_SHAPES: dict[str, tuple[bytes, str]] = {
    "a list": (b"[]", 'not an outbox document {"sinks": {...}}'),
    "no sinks": (b"{}", 'not an outbox document {"sinks": {...}}'),
    "sinks a list": (b'{"sinks": []}', 'not an outbox document {"sinks": {...}}'),
    "other sinks": (b'{"sinks": {}}', "an outbox document of sinks none, not ops"),
    "sink a number": (b'{"sinks": {"ops": 5}}', "an outbox document of another shape"),
    "sink without counts": (b'{"sinks": {"ops": {"pending": 1}}}',
                            "an outbox document of another shape"),
    "entry a number": (b'{"sinks": {"ops": {"pending": 1, "dead": 0, "dropped": 0, '
                       b'"entries": [5]}}}', "an outbox document of another shape"),
    "entry without its event": (b'{"sinks": {"ops": {"pending": 1, "dead": 0, "dropped": 0, '
                                b'"entries": [{"state": "pending", "id": "x"}]}}}',
                                "an outbox document of another shape"),
    "nested": (DEEP, 'not an outbox document {"sinks": {...}}'),
}


@pytest.mark.parametrize(("shape", "output"), [
    *((shape, []) for shape in OUTBOX_SHAPES),
    ("a list", ["--json"]), ("sink a number", ["--json"])],
    ids=[*OUTBOX_SHAPES, "a list --json", "sink a number --json"])
def test_outbox_names_a_server_that_answers_another_shape(
        shape: str, output: list[str], held_outbox: Path, serve: Callable[..., Served]
        ) -> None:
    """`sentinel outbox list` with the outbox held (a running instance), pointed at a
    server answering 200 with JSON that is no outbox document of the asked sinks, exits 1
    with one line naming the server and what it answered; it used to end in a traceback
    (or, with --json, print the foreign document and exit 0)."""
    body, what = OUTBOX_SHAPES[shape]
    server = serve(answering((200, "application/json", body)))
    done = run_sentinel("outbox", "list", *output, "--api", server.url, cwd=held_outbox)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", (
        f"sentinel outbox: {server.url} is not sentinel's API: GET /v1/outbox answered 200 "
        f"(application/json), {what}\n"))


@pytest.mark.parametrize(("answer", "line"), [
    ((404, "application/json", b'{"error":"no webhook sink ops"}'),
     "{url} refused (404): no webhook sink ops"),
    ((502, "text/html", b"<html>\n<body>Bad Gateway</body>\n</html>\n"),
     "{url} is not sentinel's API: POST /v1/outbox/retry answered 502 (text/html), not a "
     "sentinel error"),
], ids=["refusal", "html error"])
def test_outbox_reads_an_answer_other_than_200_as_status_does(
        answer: Answer, line: str, held_outbox: Path, serve: Callable[..., Served]) -> None:
    """`sentinel outbox retry` through the API: sentinel's `{"error": ...}` is a refusal
    with its message, an HTML error page names the server as not sentinel's, one line
    each, exit 1 (both used to say "the API is not answering" with the raw body, the
    page's lines and all)."""
    server = serve(answering(answer))
    done = run_sentinel("outbox", "retry", "--api", server.url, cwd=held_outbox)
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", f"sentinel outbox: {line.format(url=server.url)}\n")
