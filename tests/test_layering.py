"""Layering (STYLE 15): the pure cores import without Trio, each in a fresh interpreter
so that nothing another test imported can hide a dependency."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sentinel

# The module that first imports trio is named in the failure, found by a meta-path
# hook that is set before the core is imported.
PROBE = """
import importlib.abc, sys, traceback
class Watch(importlib.abc.MetaPathFinder):
    culprit = None
    def find_spec(self, name, path=None, target=None):
        if name == "trio" and Watch.culprit is None:
            mods = [f.f_globals.get("__name__", "") for f, _ in traceback.walk_stack(None)]
            Watch.culprit = next((m for m in mods if m.startswith("sentinel")), "?")
        return None
sys.meta_path.insert(0, Watch())
importlib.import_module(sys.argv[1])
print(Watch.culprit or "")
"""

CORES = [
    pytest.param("sentinel.breakers", id="the breakers and their registry"),
    pytest.param("sentinel.breakers.dampen", id="flap damping"),
    pytest.param("sentinel.config.load", id="the config loader, its sections and nodes"),
    pytest.param("sentinel.sinks.maglev.table", id="the Maglev table (data-plane contract)"),
    pytest.param("sentinel.sinks.ipvs.table", id="the IPVS table"),
    pytest.param("sentinel.sinks.nginx.render", id="nginx rendering"),
    pytest.param("sentinel.sinks.webhook.signing", id="webhook signing"),
    pytest.param("sentinel.probes.http1", id="the HTTP/1 reader"),
    pytest.param("sentinel.engine.decide", id="the decision (engine.decide)"),
    pytest.param("sentinel.engine.suspect", id="engine.suspect"),
    pytest.param("sentinel.engine.watch", id="engine.watch (watched connections' policy)"),
    pytest.param("sentinel.engine.combine", id="the composite-check combiner"),
    pytest.param("sentinel.passive.reports", id="passive.reports"),
    pytest.param("sentinel.sinks.nginx.options", id="nginx sink options"),
    pytest.param("sentinel.sinks.haproxy.options", id="haproxy sink options"),
    pytest.param("sentinel.sinks.maglev.options", id="maglev sink options"),
    pytest.param("sentinel.sinks.webhook.options", id="webhook sink options"),
    pytest.param("sentinel.sinks.ipvs.options", id="ipvs sink options"),
    pytest.param("sentinel.errors", id="the exceptions"),
    pytest.param("sentinel.addresses", id="addresses"),
    pytest.param("sentinel.backoff", id="the backoff"),
    pytest.param("sentinel.throttle", id="the log throttle"),
    pytest.param("sentinel.timefmt", id="time formats"),
]


@pytest.mark.parametrize("module", CORES)
def test_pure_core_imports_without_trio(module: str) -> None:
    """Importing a pure core alone does not import trio."""
    done = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    culprit = done.stdout.strip()
    assert not culprit, f"{module} imports trio through {culprit}"


def test_the_package_alone_imports_without_trio() -> None:
    """`import sentinel` (the public API, resolved lazily) does not import trio."""
    done = subprocess.run([sys.executable, "-c", PROBE, "sentinel"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, ""), done.stderr


CONFIG_ALONE = """
import importlib, pkgutil, sys, tempfile
import sentinel.config
from sentinel.config.load import load_file
for info in pkgutil.iter_modules(sentinel.config.__path__, "sentinel.config."):
    importlib.import_module(info.name)

class Kind:  # a sink kind of the test's own, handed to the loader
    def parse_options(self, node): return node.as_map({"path"})["path"].as_str()
    def parse_binding(self, node): return None
    def check_names(self, binding, service, backends): return []
    scope = "local"  # where it runs in a cluster

with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    f.write("version: 1\\nsinks: {out: {type: mine, path: x}}\\n"
            "services: {web: {backends: ['127.0.0.1:80'], sinks: [out]}}\\n")
    f.flush()
    config = load_file(f.name, {"mine": Kind()})
assert config.sinks[0].options == "x", config
print(" ".join(sorted(m for m in sys.modules if m.startswith("sentinel.sinks"))))
"""


def test_config_imports_no_sink() -> None:
    """Every module of `sentinel.config` imports, and a file with a sink loads (with a sink
    kind the test hands in), without importing any `sentinel.sinks` module: the loader is
    handed the kinds, each parsing its own options; it imports none."""
    done = subprocess.run([sys.executable, "-c", CONFIG_ALONE], capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, ""), done.stderr


def test_nothing_outside_the_cli_imports_a_cli_module() -> None:
    """The API and the engine serve the CLI, never the other way round: no module outside
    `sentinel/cli/` imports one inside it, not even lazily within a function."""
    root = Path(sentinel.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(root / "cli") or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.relative_to(root)}: {name}" for name in names
                          if name == "sentinel.cli" or name.startswith("sentinel.cli.")]
    assert offenders == []
