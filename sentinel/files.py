"""Files: crash-safe replacement (temp file in the same directory, fsync, rename), and
reading a file that must be a regular one without blocking on anything else."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path


def kind_of(mode: int) -> str:
    """What a file of `st_mode` `mode` is, in words ("a FIFO", "a directory", ...)."""
    kinds = [(stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a file")


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file at `path` (or a link to one). Opened without
    blocking, so a FIFO put there (whose open would wait for a writer) or a device is
    refused at once: OSError(EINVAL) saying what it is, as for a missing file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file ({kind_of(mode)})", str(path))
        return f.read()


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a mix.

    Blocking (it fsyncs): call it from a worker thread in async code.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def unwritable(path: str | os.PathLike[str], *, directory: bool = False) -> str | None:
    """Why `write_atomic` could never write the file `path` (with `directory`: files in
    the directory `path`) on this machine, or None. It makes missing directories, so the
    nearest part of `path` that exists decides: a directory where the file goes, or
    anything else where a directory must be. What may change before the write
    (permissions, free space) and what cannot be looked at is not judged."""
    target = Path(path)
    existing = next((p for p in (target, *target.parents) if os.path.lexists(p)), None)
    if existing is None:
        return None
    if existing != target:  # missing: the rest is made in the part that exists
        return None if os.path.isdir(existing) else (
            f"cannot be made: {existing} is not a directory")
    if os.path.isdir(target) != directory:
        return "is not a directory" if directory else "is a directory"
    return None
