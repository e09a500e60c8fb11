"""Crash-safe file writes: a reader sees the old file or the new one, never half of one.

Everything this project writes (checkpoints, landscape results, sweep tables) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same directory, are flushed to
disk, and the temporary file is renamed over the target (``os.replace`` is atomic on POSIX
and Windows within one file system). No Lightning import. Use it::

    from regression_lab.core.safe_io import atomic_write
    with atomic_write("results.csv", "w") as fh:
        fh.write("a,b\\n")

It also holds the directory lock (:func:`lock_dir`) that keeps two processes out of one run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from regression_lab.core.errors import UsageError


def lock_dir(path: str | os.PathLike, wait: bool = False) -> int:
    """Take an exclusive ``flock`` on the directory ``path`` itself; return its descriptor.

    Close the descriptor (:func:`os.close`) to release it; the kernel releases it when the
    process dies, even by SIGKILL, so a lock never outlives its holder. No lock file is made.
    With ``wait=False`` a lock held elsewhere raises :class:`BlockingIOError` at once.
    """
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """Raise :class:`UsageError` unless files can be created in the directory ``path``.

    A directory that does not exist yet is judged by its nearest existing parent (where it
    would be made). The check creates and removes one anonymous temporary file, so a command
    can refuse an unwritable destination before its long work rather than after it.
    """
    target = Path(path)
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{what} {target}: {probe} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise UsageError(f"cannot write {what} in {probe}: {err.strerror or err}") from None


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    If the block raises (or the process dies), ``path`` is untouched and the temporary file
    is removed (or, after a kill, left as ``.<name>.*.tmp``, never under the final name). A
    symbolic link is followed (its target is replaced, the link stays); a device or a named
    pipe is written directly, since nothing can be renamed over it without destroying it.
    """
    target = Path(path)
    if target.is_symlink():
        # Replace what the link points to, not the link.
        target = Path(os.path.realpath(target))
    if target.exists() and not target.is_file() and not target.is_dir():
        # A device or a pipe (/dev/null, /dev/stdout, a named pipe): written in place, as open()
        # would. Renaming over it would replace the device itself with a plain file.
        with open(target, mode, **kwargs) as fh:  # noqa: PTH123
            yield fh
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the result gets what open() would give it
        # under the user's umask (0644 usually), so others (a shared TensorBoard) can read it.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
