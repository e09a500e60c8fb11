"""The ``predict`` command: y for given x from a checkpoint, as CSV ``x,prediction``. No Lightning.

An ensemble checkpoint (``fit --model.num_seeds N``) prints ``x,prediction,std``: the members'
mean and standard deviation.

Run it::

    regression-lab predict --x 10                    # newest checkpoint under ./lightning_logs
    regression-lab predict --ckpt_path run.ckpt --x 10 --x 11
    printf '10\\n11\\n' | regression-lab predict --input -
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from jsonargparse import ArgumentParser, Namespace

from regression_lab.commands.options import new_parser
from regression_lab.core.errors import FLOAT32_MAX, UsageError, quote

#: The longest line an input may have: an x value is a few dozen characters at most, and an
#: endless input (``< /dev/zero``) must end with an error, not fill the memory.
MAX_LINE_CHARS = 1000
#: The most x values one input may hold (about 8 bytes each in memory, twice).
MAX_INPUT_VALUES = 10_000_000


def parse_number(text: str, where: str = "") -> float:
    """A finite float from text, or :class:`UsageError` naming where it came from."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"not a number{where}: {quote(text)}") from None
    if not math.isfinite(value):
        raise UsageError(f"not a finite number{where}: {quote(text)}")
    if abs(value) > FLOAT32_MAX:
        raise UsageError(f"out of float32's range (|x| <= {FLOAT32_MAX:.4g}){where}: {quote(text)}")
    return value


def read_inputs(stream: TextIO, name: str, texts: list[str] | None = None) -> list[float]:
    """x values from a text stream: one per line, or the first column of a CSV with an ``x`` header.

    Blank lines and lines starting with ``#`` are skipped; the header (``x`` or ``"x"``) may
    follow them; a UTF-8 byte-order mark (a spreadsheet's CSV) is ignored. ``texts``, if given,
    receives each value as written, so the output can echo it exactly. A line over
    :data:`MAX_LINE_CHARS` characters or more than :data:`MAX_INPUT_VALUES` values end it with
    :class:`UsageError`, so an endless input ends.
    """
    values: list[float] = []
    lineno = 0
    header_possible = True
    while line := stream.readline(MAX_LINE_CHARS + 1):
        lineno += 1
        if len(line) > MAX_LINE_CHARS:
            raise UsageError(f"{name} line {lineno} is longer than {MAX_LINE_CHARS} characters: not an x value")
        text = line.strip().lstrip("\ufeff") if lineno == 1 else line.strip()
        if not text or text.startswith("#"):
            continue
        first = text.split(",")[0].strip()
        if header_possible and first.strip('"').lower() == "x":
            header_possible = False
            continue
        header_possible = False
        values.append(parse_number(first, f" in {name} line {lineno}"))
        if texts is not None:
            texts.append(first)
        if len(values) > MAX_INPUT_VALUES:
            raise UsageError(f"{name} holds more than {MAX_INPUT_VALUES:,} x values")
    if not values:
        raise UsageError(f"no x values in {name}")
    return values


def predict_values(ckpt_path: Path | str, xs: Iterable[float]) -> tuple[list[float], list[float] | None]:
    """Predictions of the checkpoint's model for each x (CPU, no gradients).

    A single ``MyNN`` gives its predictions and ``None``; an ensemble gives the mean over its
    healthy members and their standard deviation per x.
    """
    from regression_lab.core.predictor import Predictor

    return Predictor.load(ckpt_path)(list(xs))


def build_parser() -> ArgumentParser:
    """The ``predict`` command's options."""
    parser = new_parser("predict", "print predictions from a checkpoint as CSV")
    parser.add_argument(
        "--ckpt_path", type=str | None, help="checkpoint to load (default: the newest in ./lightning_logs/)"
    )
    src = parser.add_mutually_exclusive_group(required=True)
    # Untyped on purpose: each value goes through parse_number, which names a bad one exactly.
    src.add_argument("--x", action="append", metavar="X", help="an input value; repeat for more")
    src.add_argument(
        "--input", metavar="FILE", help="file with one x per line (or a CSV with an x column); '-' reads stdin"
    )
    return parser


def run(args: Namespace) -> int:
    """Run ``predict``: resolve the checkpoint, read the inputs, print CSV to stdout."""
    from regression_lab.core.checkpoints import newest_checkpoint

    texts: list[str] = []  # each x as the user wrote it, echoed as is (1234567, not 1.23457e+06)
    if args.x is not None:
        xs = [parse_number(v, " in --x") for v in args.x]
        texts = [v.strip() for v in args.x]
    elif args.input == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise UsageError("--input -: standard input is closed, there is nothing to read")
        try:
            xs = read_inputs(sys.stdin, "stdin", texts)
        except UnicodeDecodeError:
            raise UsageError("stdin is not UTF-8 text") from None
    else:
        # Any readable file that is not a directory: a regular file, a named pipe,
        # /dev/stdin, a process substitution (<(printf '10\n')).
        path = Path(args.input)
        if path.is_dir():
            raise UsageError(f"--input is a directory, not a file: {path}")
        try:
            with path.open(encoding="utf-8-sig") as fh:
                xs = read_inputs(fh, str(path), texts)
        except FileNotFoundError:
            raise UsageError(f"input file not found: {path}") from None
        except UnicodeDecodeError:
            raise UsageError(f"input file is not text: {path}") from None
        except OSError as err:
            raise UsageError(f"cannot read {path}: {err.strerror or err}") from None
    ckpt = Path(args.ckpt_path) if args.ckpt_path else newest_checkpoint()
    preds, stds = predict_values(ckpt, xs)
    if stds is None:
        out = ["x,prediction"] + [f"{x},{p:.6f}" for x, p in zip(texts, preds, strict=True)]
    else:
        # An ensemble: the members' mean and standard deviation (their disagreement) per x.
        out = ["x,prediction,std"] + [f"{x},{p:.6f},{d:.6f}" for x, p, d in zip(texts, preds, stds, strict=True)]
    sys.stdout.write("\n".join(out) + "\n")
    return 0
