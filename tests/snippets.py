"""The documentation's YAML configuration snippets, for the tests that check them (the
schema validates each; the loader loads each)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from tests.config import whole

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(ROOT.glob("docs/**/*.md"))]
# Another program's file shown in the docs, named on its first line (`# prometheus.yml`).
OTHER_FILE = re.compile(r"#\s*(?!sentinel\.ya?ml\b)[\w.-]+\.ya?ml\b")


def config_snippets() -> Iterator[tuple[str, str]]:
    """Each ```yaml block of README.md and docs/ that is a sentinel configuration, as
    (`page:line`, text); a block without `services:` (part of a file: a sink, the
    telemetry) with one service added, as a reader places it in a whole file."""
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(r"^( *)```yaml\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL):
            indent, block = match.group(1), match.group(2)
            if OTHER_FILE.match(block):
                continue
            line = text.count("\n", 0, match.start()) + 1
            block = "".join(row.removeprefix(indent) for row in block.splitlines(True))
            yield f"{page.relative_to(ROOT)}:{line}", whole(block)
