"""Installing sentinel the way operators do: the sdist and wheel from `python -m build`,
and `pip install DIR`, each into a fresh virtualenv holding nothing else (dependencies
come from the package index), then the installed `sentinel` run as a program."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
INSTALL_TIMEOUT = 600.0  # dependencies come over the network
NEEDS_EXTRAS = """\
version: 1
state_dir: ./state
telemetry:
  traces: {exporter: otlp}
sinks:
  ring: {type: maglev}
services:
  web:
    backends: [127.0.0.1:8080]
"""


def run(*argv: str | Path, cwd: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (killed past `timeout`), output captured as text."""
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """A command's stdout, once it is known to have exited 0."""
    assert done.returncode == 0, f"{done.args}: {done.stdout}{done.stderr}"
    return done.stdout


def tracked(prefix: str = "") -> list[str]:
    """Files git tracks under ROOT/prefix that exist in the worktree (edits included)."""
    listed = ok(run("git", "ls-files", "-z", "--", prefix or ".", cwd=ROOT)).split("\0")
    return [name for name in listed if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files copied out of the worktree, so a build leaves nothing behind in
    it (egg-info, build/)."""
    src = tmp_path_factory.mktemp("install") / "src"
    for name in tracked():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    return src


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    """`python -m build` on the copy: the sdist, then the wheel built from that sdist (so
    the sdist must carry everything the wheel needs)."""
    dist = source.parent / "dist"
    ok(run(sys.executable, "-m", "build", "--outdir", dist, source, cwd=source.parent,
           timeout=INSTALL_TIMEOUT))
    (found,) = dist.glob("sentinel-*.whl")
    assert list(dist.glob("sentinel-*.tar.gz"))
    return found


def fresh_venv(path: Path, *requirements: str | Path) -> Path:
    """A new virtualenv at `path` with `requirements` pip-installed; its bin directory."""
    ok(run(sys.executable, "-m", "venv", path, cwd=path.parent))
    ok(run(path / "bin" / "pip", "install", "-q", "--disable-pip-version-check",
           *requirements, cwd=path.parent, timeout=INSTALL_TIMEOUT))
    return path / "bin"


def test_wheel_carries_every_package_file(wheel: Path) -> None:
    """Every file tracked under sentinel/ is in the wheel: modules and package data
    (py.typed today; the dashboard's files when they exist)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in tracked("sentinel") if name not in names] == []
    assert "sentinel/py.typed" in names


def test_wheel_alone_runs_demo_and_check(wheel: Path, tmp_path: Path) -> None:
    """The wheel in a fresh venv, no extras: only the core dependencies arrive (no NumPy,
    no OTLP exporter); `sentinel demo` shows a failover and a recovery; `sentinel check`
    passes an example; a config needing the extras is refused, naming what to install."""
    bin_dir = fresh_venv(tmp_path / "venv", wheel)
    installed = ok(run(bin_dir / "pip", "list", "--format=freeze",
                       "--disable-pip-version-check", cwd=tmp_path)).lower()
    assert "numpy==" not in installed
    assert "opentelemetry-exporter-otlp-proto-http==" not in installed
    demo = ok(run(bin_dir / "sentinel", "demo", cwd=tmp_path))
    assert "web2 up -> down" in demo
    assert "web2 down -> up" in demo
    assert "demo done: failover and recovery seen" in demo
    example = ROOT / "examples" / "haproxy" / "sentinel.yaml"
    assert ok(run(bin_dir / "sentinel", "check", "-c", example, cwd=tmp_path)).startswith(
        f"{example}: ok")
    (tmp_path / "extras.yaml").write_text(NEEDS_EXTRAS)
    refused = run(bin_dir / "sentinel", "check", "-c", "extras.yaml", cwd=tmp_path)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.splitlines() == [
        "extras.yaml:4:22: telemetry.traces.exporter: the otlp exporter needs the otlp "
        "extra: pip install 'sentinel[otlp]'",
        "extras.yaml:6:9: sinks.ring: the maglev sink needs the maglev extra: "
        "pip install 'sentinel[maglev]'"]
    maglev = run(bin_dir / "sentinel", "maglev", "build", "--backends", "10.0.0.1:80",
                 cwd=tmp_path)
    assert (maglev.returncode, maglev.stderr) == (2, textwrap.dedent("""\
        sentinel: sentinel maglev build needs the maglev extra: pip install 'sentinel[maglev]'
        """))


def test_pip_install_dir_with_extras(source: Path, tmp_path: Path) -> None:
    """`pip install 'DIR[maglev,otlp]'` (no editable mode): the config needing both extras
    passes check, and `sentinel maglev build` builds a table."""
    bin_dir = fresh_venv(tmp_path / "venv", f"{source}[maglev,otlp]")
    (tmp_path / "extras.yaml").write_text(NEEDS_EXTRAS)
    assert ok(run(bin_dir / "sentinel", "check", "-c", "extras.yaml", cwd=tmp_path)
              ).startswith("extras.yaml: ok")
    built = ok(run(bin_dir / "sentinel", "maglev", "build", "--backends",
                   "10.0.0.1:80,10.0.0.2:80", "--size", "251", cwd=tmp_path))
    assert "10.0.0.1:80" in built
