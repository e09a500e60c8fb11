"""The ``export`` command: a checkpoint's model as ONNX, torch.export or TorchScript, written
atomically; each takes x (N, 1), any N, and gives predictions (N, 1). Ensembles are refused (their answer is a mean
and a spread). No Lightning. Run it (and the ONNX file with ``onnxruntime.InferenceSession("model.onnx")``)::

    regression-lab export --format onnx --out model.onnx                 # the newest checkpoint
    regression-lab export --ckpt_path run.ckpt --format exported_program --out model.pt2
"""

from __future__ import annotations

import io
import logging
import sys
import warnings
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ArgumentParser, Namespace

from regression_lab.checkpoint import load_model
from regression_lab.errors import UsageError, command_parser, refused_os_errors
from regression_lab.files import atomic_write, chosen_checkpoint
from regression_lab.models import MyNN


def export_bytes(model: torch.nn.Module, fmt: str) -> bytes:
    """The model (x (N, 1) to (N, 1)) in format ``fmt``, as the file's bytes."""
    example, buffer = torch.zeros(4, 1), io.BytesIO()
    batch = {"x": {0: torch.export.Dim("batch", min=1)}}
    if fmt == "onnx":
        import onnx  # the exporter needs it: a clear error early if the serve extra is missing

        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its notes on operators this model has none of
        with warnings.catch_warnings():  # torch's deprecation notice to its own exporter code, not about this model
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            names = dict(input_names=["x"], output_names=["prediction"])
            program = torch.onnx.export(model, (example,), **names, dynamo=True, dynamic_shapes=batch, verbose=False)
        onnx.save_model(program.model_proto, buffer)
    elif fmt == "exported_program":
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=batch), buffer)
    else:
        # TorchScript, deprecated by torch for torch.export, is kept for runtimes that still load it; notices hidden.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.trace(model, example), buffer)
    return buffer.getvalue()


def build_parser() -> ArgumentParser:
    parser = command_parser("export", __doc__)
    add, formats = parser.add_argument, Literal["onnx", "exported_program", "torchscript"]
    add("--ckpt_path", type=str | None, help="checkpoint (default: the newest in ./lightning_logs/)")
    add("--format", type=formats, required=True, help="onnx (runs in onnxruntime), exported_program "
        "(torch.export.load), torchscript (deprecated by torch)")  # fmt: skip
    add("--out", type=str, required=True, help="the file to write (replaced atomically)")
    return parser


def run(args: Namespace) -> None:
    """Run ``export``: load the checkpoint, export its model, write the file."""
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out is a directory: {out}")
    if not out.parent.is_dir():
        raise UsageError(f"--out's directory does not exist: {out.parent}")
    ckpt = chosen_checkpoint(args.ckpt_path)
    if out.exists() and Path(ckpt).exists() and out.samefile(ckpt):
        raise UsageError(f"--out {out} is the checkpoint itself: write the export to another file")
    model, _ = load_model(ckpt)
    if not isinstance(model, MyNN):
        raise UsageError(f"{ckpt} holds an ensemble: export takes a single-model checkpoint (an ensemble answers a "
                         "mean and a spread, which predict and serve give)")  # fmt: skip
    try:
        data = export_bytes(model.eval(), args.format)
    except ImportError as err:
        raise UsageError(f"--format {args.format} needs: pip install 'regression-lab[serve]' ({err})") from None
    with refused_os_errors(f"cannot write {out}"), atomic_write(out, "wb") as fh:
        fh.write(data)
    print(f"exported {ckpt} as {args.format} to {out}: input x (N, 1) float32, output (N, 1)", file=sys.stderr)
