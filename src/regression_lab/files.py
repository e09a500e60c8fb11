"""Files and directories the project writes: atomic writes, numbered run directories, locks. A reader of anything
written here sees the old file or the new one, never half of one. No torch, no Lightning. Use it::

    from regression_lab.files import atomic_write
    with atomic_write("results.csv", "w") as fh:
        fh.write("a,b\\n")
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from regression_lab.errors import UsageError, refused_os_errors

#: Where runs go by default (relative to the working directory), as Lightning's own logger does.
LOG_ROOT = Path("lightning_logs")


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", pending: list | None = None, **kwargs: Any
) -> Iterator[IO[Any]]:
    """A temporary file beside ``path``, renamed over it if the block succeeds (with ``pending``, the rename is queued
    there for :func:`replace_all`); a device or pipe is written in place."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file() and not target.is_dir():
        with open(target, mode, **kwargs) as fh:  # noqa: PTH123
            yield fh
        return
    # A new name beside it (O_EXCL), with the permissions open() gives under the umask (a shared TensorBoard reads it).
    tmp = target.parent / f".{target.name}.{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if pending is None:
            os.replace(tmp, target)
        else:
            pending.append((tmp, target))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replace_all() -> Iterator[list]:
    """Files written with ``atomic_write(..., pending=queue)`` in the block replace their old ones together once every
    one is whole; if any write fails, none does (the old files stay as they were)."""
    queue: list[tuple[Path, Path]] = []
    try:
        yield queue
        for tmp, target in queue:  # after every write: a rename fails only on a name a directory has taken
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in queue:
            tmp.unlink(missing_ok=True)
        raise


def png_of(fig: Any) -> bytes:
    """``fig`` drawn once as a PNG, cropped to what it shows."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def write_figure(
    fig: Any, writer: Any = None, tag: str = "", png: Path | None = None, step: int | None = None,
    pending: list | None = None,
) -> None:  # fmt: skip
    """``fig`` (a figure, or the :func:`png_of` one) into ``writer``'s Images as ``tag`` and, with ``png``, that file
    (the same pixels)."""
    from matplotlib.image import imread

    data = fig if isinstance(fig, bytes) else png_of(fig)
    if png is not None:
        with atomic_write(png, "wb", pending) as fh:
            fh.write(data)
    if writer is not None:
        writer.add_image(tag, imread(io.BytesIO(data), format="png")[..., :3], global_step=step, dataformats="HWC")


def write_text(writer: Any, tag: str, markdown: str, step: int | None = None) -> None:
    """``markdown`` as one card in ``writer``'s Text tab. ``SummaryWriter.add_text`` writes a list of one string, which
    TensorBoard draws as a table of one cell with a scroll box of its own; a single string is drawn as it is."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.plugins.text.metadata import create_summary_metadata

    tensor = TensorProto(dtype="DT_STRING", string_val=[markdown.encode()])  # rank 0: no shape
    value = Summary.Value(tag=f"{tag}/text_summary", metadata=create_summary_metadata(tag, ""), tensor=tensor)
    writer.file_writer.add_summary(Summary(value=[value]), global_step=step)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (for :func:`write_text`), a ``|`` inside a cell escaped so that it cannot split the row."""
    line = lambda cells: "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def check_checkpoint_dir(dirpath: str | None, option: str, new_fit: bool) -> None:
    """Refuse the directory ``dirpath`` (as ``option`` names it; ``~`` expanded, as ModelCheckpoint does) if it is a
    file, or, for a ``new_fit`` (not a resume), if it holds checkpoints that fit would overwrite."""
    if dirpath is None or not (path := Path(dirpath).expanduser()).exists():
        return
    if not path.is_dir():
        raise UsageError(f"{option} is a file, not a directory: {dirpath}")
    if new_fit and any(path.glob("*.ckpt")):  # another run's last.ckpt: Lightning would only warn
        raise UsageError(f"{option} {dirpath} holds checkpoints, which a new fit would overwrite: resume with "
                         "--ckpt_path, or choose another directory")  # fmt: skip


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """Refuse (:class:`UsageError`) a directory no file can be created in (one not there yet: its nearest parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{what} {path}: {probe} is a file, not a directory")
    with refused_os_errors(f"cannot write {what} in {probe}"):
        tempfile.TemporaryFile(dir=probe).close()


def lock_dir(path: str | os.PathLike, wait: bool = False, busy: str = "") -> int:
    """An exclusive ``flock`` on the directory until the descriptor is closed or the process dies (even by SIGKILL);
    without ``wait`` a lock held elsewhere raises :class:`UsageError` ``busy`` at once."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BaseException as err:
        os.close(fd)
        if isinstance(err, BlockingIOError):
            raise UsageError(busy or f"{path} is locked by another process") from None
        raise
    return fd


def numbered_dirs(root: str | os.PathLike, prefix: str = "version_") -> list[Path]:
    """The ``{prefix}N`` directories under ``root`` (``version_0``, ``sweep_3``), lowest N first."""
    root = Path(root)
    if not root.is_dir():
        return []
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := pattern.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def reserve_numbered_dir(root: str | os.PathLike, prefix: str = "version_") -> Path:
    """Create the next ``{prefix}N`` under ``root`` and return it (``mkdir`` is atomic: two processes get two)."""
    root = Path(root)
    with refused_os_errors(f"cannot write under {root}"):
        try:
            root.mkdir(parents=True, exist_ok=True)
            existing = numbered_dirs(root, prefix)
            first = int(existing[-1].name[len(prefix) :]) + 1 if existing else 0
            for n in range(first, first + 10_000):
                with contextlib.suppress(FileExistsError):  # taken by another process, or a file
                    (root / f"{prefix}{n}").mkdir(parents=True)  # parents: a refused fit may have removed the root
                    return root / f"{prefix}{n}"
        except (NotADirectoryError, FileExistsError):
            raise UsageError(f"{root} is not a directory") from None
    raise UsageError(f"cannot find a free {prefix}N name under {root}")


def newest_checkpoint(root: str | os.PathLike = LOG_ROOT, name: str | None = None) -> Path:
    """The newest run's ``last.ckpt``, else its newest ``.ckpt`` (or only ``name``); :class:`UsageError` if none."""
    for run in reversed(numbered_dirs(root)):
        folder = run / "checkpoints"
        found = [folder / (name or "last.ckpt")]
        if not name:  # glob finds nothing in a folder that is not there
            found += sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in found:
            if path.is_file():
                return path
    raise UsageError(
        f"no {name or 'checkpoint'} found under {Path(root)}/version_*/checkpoints/: "
        "train one with 'regression-lab fit' or pass --ckpt_path"
    )


#: Why ``--ckpt_path ""`` (an unset variable in ``--ckpt_path "$CKPT"``) is refused, not taken for none given.
EMPTY_CKPT_PATH = "--ckpt_path is empty: give a checkpoint's path, or leave the option out"


def chosen_checkpoint(path: str | os.PathLike | None) -> str | os.PathLike:
    """``--ckpt_path``'s file, else (not given) the newest run's; an empty one (``"$UNSET"``) is refused."""
    if path is not None and not str(path).strip():
        raise UsageError(EMPTY_CKPT_PATH)
    return newest_checkpoint() if path is None else path  # as given: the messages quote it so
