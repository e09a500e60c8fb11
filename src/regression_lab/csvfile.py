"""Numbers from text files, by the rules ``predict --input`` and ``--data.csv`` share: UTF-8 (a BOM is skipped), LF
or CRLF, ``#`` comments and blank lines skipped, comma-separated fields, an optional header. Torch only::

    python -c "from regression_lab.csvfile import read_xy; print(read_xy('examples/spring.csv')[2])"
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import torch

from regression_lab.errors import FLOAT32_MAX, UsageError, quote

#: The longest line of a data file: x, y and a few more columns. An endless line (``< /dev/zero``) must end.
MAX_ROW_CHARS = 10_000
#: The most rows a data file may hold: each is parsed in Python.
MAX_ROWS = 10_000_000


def parse_number(text: str, where: str = "") -> float:
    """A finite float32-range number from text, or :class:`UsageError` naming where it came from."""
    try:
        if "_" in text or not text.isascii():  # float() also reads 1_000 and other scripts' digits
            raise ValueError
        value = float(text)
    except ValueError:
        raise UsageError(f"not a number{where}: {quote(text)}") from None
    if not math.isfinite(value):
        raise UsageError(f"not a finite number{where}: {quote(text)}")
    if abs(value) > FLOAT32_MAX:
        raise UsageError(f"out of float32's range (|x| <= {FLOAT32_MAX:.4g}){where}: {quote(text)}")
    return value


def rows(stream: TextIO, name: str, max_chars: int) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each line that is not blank or a comment, stripped of spaces and quotes."""
    for lineno, line in enumerate(iter(lambda: stream.readline(max_chars + 1), ""), start=1):
        if len(line.rstrip("\r\n")) > max_chars:
            raise UsageError(f"{name} line {lineno} is longer than {max_chars:,} characters: not a row of numbers")
        text = line.strip().lstrip("\ufeff")
        if text and not text.startswith("#"):
            yield lineno, [field.strip().strip('"').strip() for field in text.split(",")]  # "10" as spreadsheets quote


class _Hashed(io.RawIOBase):
    """A binary stream that hashes what is read through it: a pipe's bytes are read once."""

    def __init__(self, raw: BinaryIO, digest: Any) -> None:
        """Args: raw: the file opened in binary mode. digest: a ``hashlib`` object to update."""
        self.raw, self.digest, self.size = raw, digest, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.digest.update(memoryview(buffer)[:n])
        self.size += n
        return n


@contextlib.contextmanager
def open_text(path: str | Path, what: str, digest: Any = None) -> Iterator[TextIO]:
    """``path`` open for reading as UTF-8 text (its bytes hashed into ``digest``, if given); a missing, unreadable or
    binary file is one :class:`UsageError`."""
    path = Path(path)
    if path.is_dir():  # any readable file but a directory: a regular file, a named pipe, /dev/stdin, <(...)
        raise UsageError(f"{what} is a directory, not a file: {path}")
    try:
        with path.open("rb", buffering=0) as raw:  # one way to open a file: without a digest, a throwaway one
            yield io.TextIOWrapper(io.BufferedReader(_Hashed(raw, digest or hashlib.sha256())), encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} is not UTF-8 text: {path}") from None
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror or err}") from None


def is_header(fields: list[str]) -> bool:
    """Whether a first row is a header: neither of its first two fields reads as a float (``nan`` and ``inf`` do)."""
    for field in fields[:2]:
        with contextlib.suppress(ValueError):
            float(field)
            return False  # a number: a row of data
    return True


def parse_xy(stream: TextIO, name: str) -> tuple[list[float], list[float]]:
    """The x and y columns of a CSV: by a header naming ``x`` and ``y``, else its first two columns."""
    xs: list[float] = []
    ys: list[float] = []
    cols, width = (0, 1), None
    for lineno, fields in rows(stream, name, MAX_ROW_CHARS):
        if width is None:
            width = len(fields)
            if width < 2:
                raise UsageError(f"{name} line {lineno} has one column: a data file has two at least, x and y, "
                                 "separated by commas")  # fmt: skip
            if is_header(fields):
                names = [f.lower() for f in fields]
                if twice := next((n for n in names if n and names.count(n) > 1), None):
                    raise UsageError(f"{name}'s header (line {lineno}) names the column {quote(twice)} twice")
                if len(named := {"x", "y"} & set(names)) == 1:  # the other taken by position: a wrong pair
                    (have,), (lacking,) = named, {"x", "y"} - named
                    raise UsageError(f"{name}'s header (line {lineno}) names a column {have} but none {lacking}: "
                                     "name both, or neither (the first two columns are then x and y)")  # fmt: skip
                cols = (names.index("x"), names.index("y")) if named else (0, 1)
                continue
        if len(fields) != width:
            raise UsageError(f"{name} line {lineno} has {len(fields)} columns where the first row has {width}")
        xs.append(parse_number(fields[cols[0]], f" in {name} line {lineno}"))
        ys.append(parse_number(fields[cols[1]], f" in {name} line {lineno}"))
        if len(xs) > MAX_ROWS:
            raise UsageError(f"{name} holds more than {MAX_ROWS:,} rows")
    return xs, ys


def read_xy(
    path: str | Path, what: str = "--data.csv", least: int = 1, why: str = ""
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """A data file's x and y as (n, 1) float32 tensors, and the record a checkpoint keeps instead of the data: absolute
    path, size and SHA-256. Fewer than ``least`` rows are refused, saying ``why`` so many are needed."""
    path = Path(path).absolute()
    digest = hashlib.sha256()
    with open_text(path, what, digest) as fh:
        xs, ys = parse_xy(fh, str(path))  # to the end: the hash covers every byte
        size = fh.buffer.raw.size
    if not xs:
        raise UsageError(f"{what} {path} holds no (x, y) rows")
    if len(xs) < least:
        raise UsageError(f"{what} {path} has {len(xs)} row{'s' * (len(xs) > 1)}: {least} at least{why}")
    record = {"path": str(path), "size": size, "sha256": digest.hexdigest()}
    return torch.tensor(xs).unsqueeze(1), torch.tensor(ys).unsqueeze(1), record


def check_unchanged(saved: object, now: dict[str, Any], where: str) -> None:
    """Refuse data read from the path of record ``saved`` but with other contents: changed since ``where``."""
    if isinstance(saved, dict) and saved.get("path") == now["path"] and saved.get("sha256") != now["sha256"]:
        raise UsageError(f"{now['path']} has changed since {where} (its SHA-256 differs): restore the file, or "
                         "start a new run on it")  # fmt: skip
