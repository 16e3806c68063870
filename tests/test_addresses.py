"""`sentinel.addresses`: host:port written and read one way, and the canonical key."""

from __future__ import annotations

import pytest

from sentinel.addresses import bracketed, canonical, join, split, without_zone


@pytest.mark.parametrize(("host", "port", "text"), [
    ("10.0.0.1", 80, "10.0.0.1:80"), ("2001:db8::1", 443, "[2001:db8::1]:443"),
    ("fe80::1%eth0", 22, "[fe80::1%eth0]:22"), ("web.example", 8080, "web.example:8080")])
def test_join_and_split_are_inverse(host: str, port: int, text: str) -> None:
    """IPv6 literals are bracketed when written and unbracketed when read."""
    assert join(host, port) == text
    assert split(text) == (host, port)
    assert split(f"  {text}\n") == (host, port)


def test_bracketed_is_for_urls_and_host_headers() -> None:
    """Only a host with a colon (an IPv6 literal) gets brackets."""
    assert (bracketed("::1"), bracketed("10.0.0.1"), bracketed("web")) == (
        "[::1]", "10.0.0.1", "web")


@pytest.mark.parametrize("text", ["10.0.0.1", "::1:80", "[::1]", "a b:80", "web:", ":80",
                                  "[::1]:x", "/run/haproxy.sock"])
def test_split_refuses_what_is_not_host_port(text: str) -> None:
    """No port, an unbracketed IPv6 literal (ambiguous), blanks inside: a ValueError."""
    with pytest.raises(ValueError, match="expected host:port"):
        split(text)


@pytest.mark.parametrize(("host", "port", "key"), [
    ("10.0.0.1", 80, "10.0.0.1:80"),
    ("2001:DB8:0:0::1", 443, "[2001:db8::1]:443"),
    ("[::1]", 8080, "[::1]:8080"),
    ("Web.Example", 8080, "web.example:8080"),
    (" 10.0.0.1 ", 80, "10.0.0.1:80"),
])
def test_canonical_backend_keys(host: str, port: int, key: str) -> None:
    """Keys (the Maglev contract's too): IP literals compressed, IPv6 bracketed, names
    lower-cased, blanks and brackets around the host ignored."""
    assert canonical(host, port) == key


def test_without_zone() -> None:
    """The `%zone` of a link-local IPv6 literal is cut; anything else is left alone."""
    assert (without_zone("fe80::1%eth0"), without_zone("10.0.0.1")) == ("fe80::1", "10.0.0.1")
