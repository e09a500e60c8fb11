"""export: ONNX (in onnxruntime), torch.export and TorchScript files predict what ``predict`` does, any batch size.
Run: pytest tests/test_export.py"""

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import LAST, run_main

from regression_lab.predict import Predictor

XS = np.linspace(-50.0, 50.0, 1000, dtype=np.float32)


@pytest.fixture(scope="module")
def expected(lab_run):
    preds, _ = Predictor(lab_run[0] / LAST)(XS.tolist())
    return lab_run[0] / LAST, np.array(preds, dtype=np.float64)


def close(got: np.ndarray, want: np.ndarray) -> None:
    """Within float32's rounding of ``predict``: a runtime may order the sums otherwise (a step at 150 is 1.5e-5)."""
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=3e-7, atol=1e-5)


def export(ckpt, fmt: str, out) -> None:
    proc = run_main("export", "--ckpt_path", str(ckpt), "--format", fmt, "--out", str(out), cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"as {fmt} to {out}" in proc.stderr


def test_onnx_in_onnxruntime_the_exported_program_and_torchscript_match_predict(expected, tmp_path):
    ckpt, preds = expected
    export(ckpt, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": XS.reshape(-1, 1)})
    assert out.shape == (1000, 1)
    close(out[:, 0], preds)
    (one,) = session.run(None, {"x": XS[:1].reshape(1, 1)})  # the batch dimension is dynamic
    close(one[0], preds[:1])
    x = torch.from_numpy(XS).unsqueeze(1)
    export(ckpt, "exported_program", tmp_path / "model.pt2")
    program = torch.export.load(tmp_path / "model.pt2")
    close(program.module()(x)[:, 0].detach().numpy(), preds)
    export(ckpt, "torchscript", tmp_path / "model.ts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch deprecates TorchScript; runtimes still load it
        scripted = torch.jit.load(tmp_path / "model.ts")
    close(scripted(x[:7])[:, 0].detach().numpy(), preds[:7])
