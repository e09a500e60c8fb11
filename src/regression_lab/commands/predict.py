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
from regression_lab.core.errors import UsageError


def parse_number(text: str, where: str = "") -> float:
    """A finite float from text, or :class:`UsageError` naming where it came from."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"not a number{where}: {text.strip()!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"not a finite number{where}: {text.strip()!r}")
    return value


def read_inputs(stream: TextIO, name: str) -> list[float]:
    """x values from a text stream: one per line, or the first column of a CSV with an ``x`` header.

    Blank lines and lines starting with ``#`` are skipped.
    """
    values: list[float] = []
    for lineno, line in enumerate(stream, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        first = text.split(",")[0].strip()
        if lineno == 1 and first.lower() == "x":
            continue
        values.append(parse_number(first, f" in {name} line {lineno}"))
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

    if args.x is not None:
        xs = [parse_number(v, " in --x") for v in args.x]
    elif args.input == "-":
        xs = read_inputs(sys.stdin, "stdin")
    else:
        path = Path(args.input)
        if not path.is_file():
            raise UsageError(f"input file not found: {path}")
        try:
            with path.open(encoding="utf-8") as fh:
                xs = read_inputs(fh, str(path))
        except UnicodeDecodeError:
            raise UsageError(f"input file is not text: {path}") from None
    ckpt = Path(args.ckpt_path) if args.ckpt_path else newest_checkpoint()
    preds, stds = predict_values(ckpt, xs)
    if stds is None:
        out = ["x,prediction"] + [f"{x:g},{p:.6f}" for x, p in zip(xs, preds, strict=True)]
    else:
        # An ensemble: the members' mean and standard deviation (their disagreement) per x.
        out = ["x,prediction,std"] + [f"{x:g},{p:.6f},{d:.6f}" for x, p, d in zip(xs, preds, stds, strict=True)]
    sys.stdout.write("\n".join(out) + "\n")
    return 0
