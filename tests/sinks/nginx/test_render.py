"""nginx upstream rendering: states, modes, weights, pass-through, the file header."""

from __future__ import annotations

import pytest

from sentinel.model import State
from sentinel.sinks.nginx.render import (
    body_of,
    check_words,
    generation_of,
    render_file,
    render_upstream,
)
from tests.sinks.views import backend, view


def servers(block: str) -> list[str]:
    """The server lines of a block, comments stripped."""
    return [ln.split("#")[0].strip() for ln in block.splitlines()
            if ln.strip().startswith("server ")]


def test_up_backends_get_their_configured_weight() -> None:
    """An up backend is listed with weight=configured weight, whatever the published ramp."""
    block = render_upstream(view("web", backend("a", 1, weight=1, configured=5),
                                 backend("b", 2, weight=3)))
    assert block.startswith("upstream web {  # service web\n")
    assert servers(block) == ["server 127.0.0.1:1 weight=5;", "server 127.0.0.1:2 weight=3;"]


@pytest.mark.parametrize("state", [State.DOWN, State.DRAIN, State.MAINT])
def test_a_backend_not_up_is_marked_down_keeping_its_weight(state: State) -> None:
    """mode down: down, drain and maint all render `down` with the configured weight."""
    block = render_upstream(view("web", backend("a", 1, state, weight=4), backend("b", 2)))
    assert servers(block) == ["server 127.0.0.1:1 weight=4 down;",
                              "server 127.0.0.1:2 weight=1;"]


def test_mode_remove_leaves_out_backends_not_up() -> None:
    """mode remove: only up backends are listed."""
    block = render_upstream(view("web", backend("a", 1, State.DOWN), backend("b", 2)),
                            mode="remove")
    assert servers(block) == ["server 127.0.0.1:2 weight=1;"]


def test_an_upstream_without_servers_stays_valid() -> None:
    """With nothing to list, a placeholder `down` server keeps the block loadable."""
    block = render_upstream(view("web", backend("a", 1, State.DOWN)), mode="remove")
    assert servers(block) == ["server 127.0.0.1:1 down;"]


def test_backup_params_directives_and_name_pass_through() -> None:
    """backup, extra server params, block directives and the upstream name are rendered."""
    block = render_upstream(view("web", backend("a", 1, backup=True)), name="web_pool",
                            params=("max_fails=0", "max_conns=100"),
                            directives=("least_conn", "keepalive 16"))
    assert block.splitlines()[:3] == ["upstream web_pool {  # service web", "    least_conn;",
                                      "    keepalive 16;"]
    assert servers(block) == ["server 127.0.0.1:1 weight=1 backup max_fails=0 max_conns=100;"]


def test_a_backend_name_cannot_break_out_of_its_comment() -> None:
    """Whitespace in a backend name is folded so the comment stays on one line."""
    block = render_upstream(view("web", backend("a\nserver 10.0.0.1:1;", 1)))
    assert servers(block) == ["server 127.0.0.1:1 weight=1;"]


@pytest.mark.parametrize("text", ["max_fails=1;", "a{", "#x", "x'y", 'x"y', "a\\b"])
def test_words_that_could_break_the_file_are_refused(text: str) -> None:
    """Pass-through words may not hold ; { } # quotes or backslashes."""
    with pytest.raises(ValueError, match="not a plain nginx word"):
        check_words(text)


def test_the_header_carries_generation_and_digest() -> None:
    """The file's header names the generation; body_of returns the blocks of an untouched
    file and None once it is edited or when it is not ours."""
    text = render_file(["upstream a {\n}\n"], sink="edge", context="stream", generation=7)
    assert "Include inside `stream { ... }`" in text
    assert generation_of(text) == 7
    assert body_of(text) == "upstream a {\n}\n"
    assert body_of(text.replace("upstream a", "upstream b")) is None
    assert body_of("upstream a {\n}\n") is None
    assert body_of(None) is None
