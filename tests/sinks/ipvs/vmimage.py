"""The pieces of the IPVS test VM: a Debian kernel that has IPVS and a busybox initramfs.

This machine's kernel is built without IPVS, so the real-kernel tests boot
Debian's cloud kernel under QEMU. Its packages are fetched with `apt-get
download` into a cache directory and unpacked with `dpkg-deb -x`: nothing is
installed on the host. The initramfs holds busybox, ipvsadm with the shared
libraries it links, the ip_vs modules with their dependencies (nf_conntrack,
nf_defrag_ipv4/6, libcrc32c) and the virtio modules for the command port;
the kernel package ships no modules.dep, so busybox's depmod writes one.

`/init` brings `lo` up (the kernel refuses real servers as "address not
unicast" otherwise), loads ip_vs and then serves commands on the virtio-serial
port named `sentinel.0`: a request is the line `ID SHELL-COMMAND`, the answer
the line `ID EXIT-CODE STDOUT-BYTES STDERR-BYTES` followed by those bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

PACKAGES = ("linux-image-cloud-amd64", "busybox-static", "ipvsadm", "libnl-3-200",
            "libnl-genl-3-200", "libpopt0")
PORT_NAME = "sentinel.0"
KERNEL_PACKAGE = re.compile(r"(?<=Depends: )linux-image-\S+")  # what the metapackage names
# Left out of the image on purpose: a scheduler sentinel accepts but this kernel cannot load.
MISSING_SCHEDULER = "ovf"
MODULE_ROOTS = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_lblc",
                "ip_vs_lblcr", "ip_vs_dh", "ip_vs_sh", "ip_vs_sed", "ip_vs_nq", "ip_vs_fo",
                "ip_vs_mh", "virtio_pci", "virtio_console", "crc32c-intel")
INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ip link set lo up
for m in virtio_pci virtio_console ip_vs; do modprobe "$m" || echo "init: modprobe $m failed"; done
port=""
for d in /sys/class/virtio-ports/*; do
    [ "$(cat "$d/name" 2>/dev/null)" = "@PORT@" ] && port="/dev/${d##*/}"
done
[ -n "$port" ] || { echo "init: no virtio port @PORT@"; poweroff -f; }
echo "init: serving commands on $port"
exec 3<>"$port"
while read -r id cmd <&3; do
    sh -c "$cmd" </dev/null >/tmp/out 2>/tmp/err
    rc=$?
    printf '%s %d %d %d\n' "$id" "$rc" "$(wc -c </tmp/out)" "$(wc -c </tmp/err)" >&3
    cat /tmp/out /tmp/err >&3
done
poweroff -f
"""


class ImageUnavailable(Exception):
    """The kernel, busybox or ipvsadm cannot be had on this machine (the reason says why)."""


def cache_dir() -> Path:
    """Where packages and built images are kept: $SENTINEL_IPVS_CACHE, else
    ~/.cache/sentinel-ipvs."""
    configured = os.environ.get("SENTINEL_IPVS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "sentinel-ipvs"


def unpacked_root(cache: Path) -> Path:
    """The packages unpacked into `cache/root`, fetching them first when needed."""
    root = cache / "root"
    if _kernels(root) and (root / "sbin/ipvsadm").exists() and (root / "bin/busybox").exists():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ImageUnavailable("apt-get and dpkg-deb are needed to fetch the test kernel")
    debs = cache / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    depends = _apt(["apt-cache", "depends", "--important", PACKAGES[0]], debs, KERNEL_PACKAGE)
    _apt(["apt-get", "download", *PACKAGES, *KERNEL_PACKAGE.findall(depends)], debs)
    staging = cache / "root.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        result = _run(["dpkg-deb", "-x", str(deb), str(staging)], debs)
        if result.returncode != 0:
            raise ImageUnavailable(f"dpkg-deb -x {deb.name}: {result.stderr.strip()}")
    if not _kernels(staging):
        raise ImageUnavailable(f"no kernel in the packages fetched: {sorted(os.listdir(debs))}")
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return root


def build_image(cache: Path) -> tuple[Path, Path]:
    """The kernel and an initramfs (built once per kernel, kept in `cache`)."""
    root = unpacked_root(cache)
    kernel = _kernels(root)[-1]
    version = kernel.name.removeprefix("vmlinuz-")
    digest = hashlib.sha256((INIT + version + MISSING_SCHEDULER).encode()).hexdigest()[:12]
    initrd = cache / f"initramfs-{version}-{digest}.cpio"
    if not initrd.exists():
        staging = cache / "initramfs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        _stage(root, version, staging)
        partial = initrd.with_suffix(".partial")
        partial.write_bytes(newc_archive(staging))
        partial.rename(initrd)
        shutil.rmtree(staging)
    return kernel, initrd


def _kernels(root: Path) -> list[Path]:
    return sorted((root / "boot").glob("vmlinuz-*")) if (root / "boot").is_dir() else []


def _apt(argv: list[str], cwd: Path, expect: re.Pattern[str] | None = None) -> str:
    """Run an apt command; when it fails (or prints nothing matching `expect`), refresh
    the package lists once (as root: they may be missing or predate a point release)
    and try again."""

    def failed(result: subprocess.CompletedProcess[str]) -> bool:
        return result.returncode != 0 or (expect is not None and not expect.search(
            result.stdout))

    result = _run(argv, cwd)
    if failed(result) and os.geteuid() == 0:
        _run(["apt-get", "update", "-q"], cwd)
        result = _run(argv, cwd)
    if failed(result):
        raise ImageUnavailable(f"{' '.join(argv[:2])} failed: {result.stderr.strip()[-300:]}")
    return result.stdout


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, "LC_ALL": "C"})


def _stage(root: Path, version: str, staging: Path) -> None:
    """Lay out the initramfs tree: busybox, ipvsadm and its libraries, modules, /init."""
    (staging / "bin").mkdir(parents=True)
    shutil.copy2(root / "bin/busybox", staging / "bin/busybox")
    _copy(root / "sbin/ipvsadm", staging / "sbin/ipvsadm")
    for library in _libraries(root, root / "sbin/ipvsadm"):
        where = "lib64" if library.name.startswith("ld-linux") else "lib/x86_64-linux-gnu"
        _copy(library, staging / where / library.name)
    modules = root / "lib/modules" / version
    dependencies = _module_dependencies(root, version)
    wanted: set[str] = set()
    for name in MODULE_ROOTS:
        found = [p for p in dependencies if Path(p).name == f"{name}.ko"]
        for path in found:
            wanted.add(path)
            wanted.update(dependencies[path])
    for path in wanted:
        _copy(modules / path, staging / "lib/modules" / version / path)
    _copy(modules / "modules.builtin", staging / "lib/modules" / version / "modules.builtin")
    subprocess.run([str(root / "bin/busybox"), "depmod", "-b", str(staging), version],
                   check=True, capture_output=True, timeout=60)
    init = staging / "init"
    init.write_text(INIT.replace("@PORT@", PORT_NAME))
    init.chmod(0o755)


def _module_dependencies(root: Path, version: str) -> dict[str, list[str]]:
    """modules.dep of the whole kernel, as busybox's depmod computes it (dry run)."""
    result = subprocess.run([str(root / "bin/busybox"), "depmod", "-n", "-b", str(root),
                             version], check=True, capture_output=True, text=True, timeout=120)
    dependencies = {}
    for line in result.stdout.splitlines():
        module, sep, rest = line.partition(":")
        if sep and module.endswith(".ko"):
            dependencies[module] = rest.split()
    return dependencies


def _libraries(root: Path, binary: Path) -> list[Path]:
    """The shared libraries `binary` loads (from the unpacked packages, else the host's)."""
    paths = [root / "lib/x86_64-linux-gnu", root / "usr/lib/x86_64-linux-gnu"]
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True,
                            env={"LD_LIBRARY_PATH": ":".join(map(str, paths))}, timeout=30)
    found = []
    for line in result.stdout.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            found.append(Path(match.group(1)))
    return found


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), target)


def newc_archive(tree: Path) -> bytes:
    """A cpio archive of `tree` in the "newc" format the kernel unpacks as its rootfs."""
    out = bytearray()
    for inode, path in enumerate([tree, *sorted(tree.rglob("*"))], 1):
        info = path.lstat()
        name = "." if path == tree else str(path.relative_to(tree))
        if stat.S_ISLNK(info.st_mode):
            data = os.readlink(path).encode()
        elif stat.S_ISREG(info.st_mode):
            data = path.read_bytes()
        else:
            data = b""
        out += _newc_entry(name, inode, info.st_mode, data)
    out += _newc_entry("TRAILER!!!", 0, 0, b"")
    return bytes(out)


def _newc_entry(name: str, inode: int, mode: int, data: bytes) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    entry = header + encoded
    entry += b"\0" * (-len(entry) % 4)
    entry += data
    return entry + b"\0" * (-len(entry) % 4)
