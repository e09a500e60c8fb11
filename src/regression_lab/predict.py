"""The ``predict`` command: y for given x from a checkpoint, as CSV ``x,prediction``; an ensemble
gives ``x,prediction,std``, the members' mean and spread. Torch only; ``serve`` and ``export`` use :class:`Predictor`::

    regression-lab predict --ckpt_path run.ckpt --x 10 --x 11     # default: the newest under ./lightning_logs
    printf '10\\n11\\n' | regression-lab predict --input -
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TextIO

import torch
from jsonargparse import ArgumentParser, Namespace

from regression_lab.checkpoint import load_model
from regression_lab.csvfile import is_header, open_text, parse_number, rows
from regression_lab.errors import FLOAT32_MAX, UsageError, check_float, command_parser
from regression_lab.files import chosen_checkpoint
from regression_lab.models import MyNN

#: The longest line of an input: an x is a few dozen characters, and an endless input (``< /dev/zero``) must end.
MAX_LINE_CHARS = 1000
#: The most x values one input may hold.
MAX_INPUT_VALUES = 10_000_000
#: Values one chunk of inputs may spread to (inputs x members x hidden units): memory stays bounded however many.
CHUNK_VALUES = 2**24


def read_inputs(stream: TextIO, name: str, texts: list[str] | None = None) -> list[float]:
    """x values from a text stream: one per line, or a CSV's column ``x`` (after any blank lines and ``#`` comments,
    a first row of names is its header; without an ``x`` among them, the first column); ``texts`` receives each value
    as written."""
    values: list[float] = []
    col = 0
    for i, (lineno, fields) in enumerate(rows(stream, name, MAX_LINE_CHARS)):
        if i == 0 and (fields[0].lower() == "x" or (len(fields) > 1 and is_header(fields))):  # as --data.csv's
            col = next((j for j, f in enumerate(fields) if f.lower() == "x"), 0)
            continue
        text = fields[col] if col < len(fields) else ""  # a short row: not a number
        values.append(parse_number(text, f" in {name} line {lineno}"))
        if texts is not None:
            texts.append(text)
        if len(values) > MAX_INPUT_VALUES:
            raise UsageError(f"{name} holds more than {MAX_INPUT_VALUES:,} x values")
    if not values:
        raise UsageError(f"no x values in {name}")
    return values


class Predictor:
    """A checkpoint's model on ``device``: a ``MyNN``, or an ensemble setting's healthy members (mean and spread)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        """Load the checkpoint (refused with :class:`UsageError` if it cannot predict).

        Args:
            path: the checkpoint file.
            device: where the model runs.
        """
        model, _ = load_model(path)
        self.ensemble, self.device = not isinstance(model, MyNN), torch.device(device)
        if self.ensemble:
            settings = sum(len(set(s.hidden_sizes.tolist())) for s in model)
            if len(model) > 1 or settings > 1:
                raise UsageError(f"{path} holds an ensemble of {max(settings, len(model))} settings (a sweep's); "
                                 "predictions need one setting (regression-lab fit --model.num_seeds N)")  # fmt: skip
            model, self.healthy = model[0], ~model[0].diverged
            if not bool(self.healthy.any()):
                raise UsageError(f"every member of the ensemble in {path} diverged: nothing to predict with")
        self.model = model.to(self.device).eval()
        self.max_abs_x = self._finite_range()

    @torch.no_grad()
    def _predict(self, xs: list[float]) -> tuple[list[float], list[float] | None]:
        x = torch.tensor(xs, dtype=torch.float32, device=self.device).unsqueeze(1)
        members, width = (len(self.model), self.model.width) if self.ensemble else (1, self.model.hidden_size)
        parts = [self._part(chunk) for chunk in x.split(max(1, CHUNK_VALUES // (members * (width + 2))))]
        return [v for mean, _ in parts for v in mean], [v for _, std in parts for v in std] if self.ensemble else None

    def _part(self, x: torch.Tensor) -> tuple[list[float], list[float]]:
        if not self.ensemble:
            return self.model(x)[:, 0].tolist(), []
        preds = self.model(x)[self.healthy.to(self.device), :, 0].double()  # (healthy members, chunk)
        std = preds.std(dim=0) if len(preds) > 1 else torch.zeros_like(preds[0])
        return preds.mean(dim=0).tolist(), std.tolist()

    def _finite_range(self) -> float:
        """The largest |x| whose predictions at ±x stay finite (far out a ReLU net grows linearly: it can overflow)."""
        finite = lambda v: all(map(math.isfinite, self._predict([v, -v])[0]))  # noqa: E731
        low, high = 0.0, FLOAT32_MAX
        if finite(high):
            return high
        for _ in range(64):  # bisection, geometric above 1: float32's resolution in a few dozen forward passes
            mid = math.sqrt(low * high) if low >= 1.0 else 1.0 if high > 1.0 else (low + high) / 2
            low, high = (mid, high) if finite(mid) else (low, mid)
        return low

    def __call__(self, xs: list[float]) -> tuple[list[float], list[float] | None]:
        """Predictions for a list of x (and, for an ensemble, the members' standard deviation); an x whose
        prediction would overflow float32 is refused (:class:`UsageError`), like an x past float32 itself."""
        for x in xs:  # the Python API's inputs: the commands' are numbers already
            check_float("x", x)
        if too_far := [x for x in xs if abs(x) > self.max_abs_x]:
            raise UsageError(f"beyond this model's range (|x| <= {self.max_abs_x:.4g}: further out its prediction "
                             f"overflows float32): {too_far[0]:g}")  # fmt: skip
        return self._predict(xs)


def build_parser() -> ArgumentParser:
    parser = command_parser("predict", __doc__)
    parser.add_argument("--ckpt_path", type=str | None, help="checkpoint (default: the newest in ./lightning_logs/)")
    src = parser.add_mutually_exclusive_group(required=True)
    # Untyped: each value goes through parse_number, which names a bad one exactly.
    src.add_argument("--x", action="append", metavar="X", help="an input value; repeat for more")
    src.add_argument("--input", metavar="FILE", help="one x per line (or a CSV, x its first column); '-': stdin")
    return parser


def run(args: Namespace) -> None:
    """Run ``predict``: read the inputs, load the checkpoint, print CSV to stdout."""
    texts: list[str] = []  # each x as the user wrote it, echoed as is (1234567, not 1.23457e+06)
    if args.x is not None:
        xs, texts = [parse_number(v, " in --x") for v in args.x], [v.strip() for v in args.x]
    elif args.input == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise UsageError("--input -: standard input is closed, there is nothing to read")
        try:
            xs = read_inputs(sys.stdin, "stdin", texts)
        except UnicodeDecodeError:
            raise UsageError("stdin is not UTF-8 text") from None
    else:
        with open_text(args.input, "input file") as fh:
            xs = read_inputs(fh, args.input, texts)
    preds, stds = Predictor(chosen_checkpoint(args.ckpt_path))(xs)
    if stds is None:
        rows = ["x,prediction", *(f"{x},{p:.6f}" for x, p in zip(texts, preds, strict=True))]
    else:
        rows = ["x,prediction,std", *(f"{x},{p:.6f},{d:.6f}" for x, p, d in zip(texts, preds, stds, strict=True))]
    sys.stdout.write("\n".join(rows) + "\n")
