"""The ``export`` command: a checkpoint's model as a portable file, ONNX, torch.export or TorchScript.

Every format takes a batch of any size: x of shape (N, 1) gives predictions of shape (N, 1).
An ensemble checkpoint is refused (``vmap`` cannot be exported yet). The ONNX file
runs in onnxruntime without PyTorch; the ``exported_program`` file loads with
``torch.export.load``. The file is written atomically. No Lightning. Run it::

    regression-lab export --format onnx --out model.onnx                 # the newest checkpoint
    regression-lab export --ckpt_path run.ckpt --format exported_program --out model.pt2
    python -c "import onnxruntime as ort, numpy as np; s = ort.InferenceSession('model.onnx'); \\
        print(s.run(None, {'x': np.array([[10.0]], dtype=np.float32)}))"
"""

from __future__ import annotations

import io
import logging
import sys
import warnings
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from regression_lab.commands.options import new_parser
from regression_lab.core.errors import UsageError

FORMATS = ("onnx", "exported_program", "torchscript")


def export_bytes(model, fmt: str) -> bytes:
    """The model (a ``torch.nn.Module`` of x (N, 1)) in format ``fmt``, as the file's bytes."""
    import torch

    example = torch.zeros(4, 1)
    buffer = io.BytesIO()
    if fmt == "onnx":
        batch = torch.export.Dim("batch", min=1)
        # The exporter's notes on its own progress (and on torchvision ops this model has none of).
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), input_names=["x"], output_names=["prediction"], dynamo=True,
                dynamic_shapes={"x": {0: batch}}, verbose=False,
            )  # fmt: skip
        import onnx  # the exporter needs it already: here only to write the file

        onnx.save_model(program.model_proto, buffer)
    elif fmt == "exported_program":
        program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
        torch.export.save(program, buffer)
    else:
        from regression_lab.core.graphs import quiet_tracing

        # TorchScript is deprecated in current torch (torch.export replaces it): kept for
        # runtimes that still load it, without the notice on every export.
        with quiet_tracing(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.trace(model, example), buffer)
    return buffer.getvalue()


def build_parser() -> ArgumentParser:
    """The ``export`` command's options."""
    parser = new_parser("export", "write a checkpoint's model as ONNX, torch.export or TorchScript")
    parser.add_argument(
        "--ckpt_path", type=str | None, help="checkpoint to export (default: the newest in ./lightning_logs/)"
    )
    parser.add_argument(
        "--format", type=Literal["onnx", "exported_program", "torchscript"], required=True,
        help="onnx (runs in onnxruntime), exported_program (torch.export.load), torchscript (deprecated by torch)",
    )  # fmt: skip
    parser.add_argument("--out", type=str, required=True, help="the file to write (replaced atomically)")
    return parser


def run(args: Namespace) -> int:
    """Run ``export``: load the checkpoint, export its model, write the file."""
    from regression_lab.core.checkpoints import newest_checkpoint
    from regression_lab.core.predictor import Predictor
    from regression_lab.core.safe_io import atomic_write

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out is a directory: {out}")
    if not out.parent.is_dir():
        raise UsageError(f"--out's directory does not exist: {out.parent}")
    ckpt = Path(args.ckpt_path) if args.ckpt_path else newest_checkpoint()
    predictor = Predictor.load(ckpt)
    if predictor.ensemble:
        # Its members are evaluated with vmap over functional_call, which neither torch.export
        # nor the tracer can capture yet.
        raise UsageError(f"{ckpt} holds an ensemble: export takes a single-model checkpoint")
    try:
        data = export_bytes(predictor.model, args.format)
    except ImportError as err:
        raise UsageError(f"--format {args.format} needs: pip install 'regression-lab[serve]' ({err})") from None
    try:
        with atomic_write(out, "wb") as fh:
            fh.write(data)
    except OSError as err:
        raise UsageError(f"cannot write {out}: {err.strerror or err}") from None
    print(f"exported {ckpt} as {args.format} to {out}: input x (N, 1) float32, output (N, 1)", file=sys.stderr)
    return 0
