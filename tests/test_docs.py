"""The docs hold together: every page under docs/ is reachable from the README, every
relative link and anchor resolves, and every configuration snippet loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trustme

from sentinel.errors import ConfigErrors
from sentinel.sinks.registry import load_config
from tests.e2e.helpers import skip_or_fail
from tests.snippets import PAGES, ROOT, config_snippets

LINK = re.compile(r"\]\(([^)\s]+)\)")
SNIPPETS = list(config_snippets())


def _headings(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings (a repeated one gets -1, -2, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        heading = None if in_fence else re.match(r"^#{1,6} (.*)$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def _links(page: Path) -> list[str]:
    """The page's link targets outside code blocks."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return LINK.findall(text)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    """A page nobody can reach from the front page is a page nobody reads."""
    linked = {(ROOT / target.partition("#")[0]).resolve()
              for target in _links(ROOT / "README.md")}
    pages = sorted(ROOT.glob("docs/**/*.md"))
    assert len(pages) >= 8  # configuration, probes, breakers, sinks, operations, ...
    assert [p.relative_to(ROOT) for p in pages if p.resolve() not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_anchors_resolve(page: Path) -> None:
    """Every relative link names a file that exists and, with #anchor, a heading in it."""
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _headings(file):
            broken.append(f"{target}: no such heading")
    assert broken == []


def test_the_docs_hold_config_snippets() -> None:
    """The snippet finder sees blocks in the docs pages (a changed fence would skip them)."""
    assert sum(where.startswith("docs/") for where, _ in SNIPPETS) >= 10


@pytest.mark.parametrize(("where", "block"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_config_snippets_load(where: str, block: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each configuration snippet loads with the real loader, its `${VAR}`s set (the
    schema test checks its shape; this one also its cross-key rules and commands)."""
    for name in set(re.findall(r"\$\{(\w+)", block)):
        monkeypatch.setenv(name, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    ca = trustme.CA()
    issued = ca.issue_cert("sentinel.example")
    for name in set(re.findall(r"\b([\w-]+\.(?:pem|key|crt))\b", block)):
        # a TLS file the snippet names beside the config: a real CA, certificate or key
        blob = (issued.private_key_pem if name.endswith(".key")
                else ca.cert_pem if "ca" in name else issued.cert_chain_pems[0])
        blob.write_to_path(str(tmp_path / name))
    path = tmp_path / "sentinel.yaml"
    path.write_text(block)
    try:
        load_config(path)
    except ConfigErrors as caught:
        missing = [str(e) for e in caught.errors if "command not found on PATH" in str(e)]
        if missing and len(missing) == len(caught.errors):
            skip_or_fail("; ".join(missing))
        raise
