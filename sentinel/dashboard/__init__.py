"""The dashboard (SPEC 13): one page and its script and style, shipped in the package.

No build step and nothing from a CDN: `static/` is served as it is, at `/` and
`/dashboard/NAME`, with a Content-Security-Policy that allows only these files
(no inline script or style, no other origin), so a backend name or reason that
looks like markup can never run: the script also builds every element with
`textContent`, never `innerHTML`.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
HEADERS = ((b"content-security-policy", CSP.encode()),
           (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"),
           (b"cache-control", b"no-cache"))  # revalidate: an upgrade shows at the next load


def dashboard_file(path: str) -> tuple[bytes, str, tuple[tuple[bytes, bytes], ...]] | None:
    """Body, content type and headers of the dashboard file at URL `path`, or None when
    `path` is not one of them."""
    name = "index.html" if path == "/" else path.removeprefix("/dashboard/")
    if name == path or name not in _names():
        return None
    return _read(name), TYPES[name[name.rindex("."):]], HEADERS


@cache
def _names() -> frozenset[str]:
    """The shipped files (by name only: no path from a URL ever reaches the file system)."""
    return frozenset(f.name for f in files(__package__).joinpath("static").iterdir()
                     if f.is_file() and f.name[f.name.rfind("."):] in TYPES)


@cache
def _read(name: str) -> bytes:
    return files(__package__).joinpath("static", name).read_bytes()
