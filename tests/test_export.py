"""export: ONNX (in onnxruntime), torch.export and TorchScript files predict what ``predict`` does, any batch size.
Run: pytest tests/test_export.py"""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import LAST, run_main

from regression_lab.predict import Predictor

XS = np.linspace(-50.0, 50.0, 1000, dtype=np.float32).reshape(-1, 1)


def close(got: np.ndarray, want: np.ndarray) -> None:
    """Within float32's rounding of ``predict``: a runtime may order the sums otherwise (a step at 150 is 1.5e-5)."""
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=3e-7, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")  # runtimes still load it
def test_onnx_in_onnxruntime_the_exported_program_and_torchscript_match_predict(lab_run, tmp_path):
    ckpt = lab_run[0] / LAST
    preds = np.array(Predictor(ckpt)(XS[:, 0].tolist())[0], dtype=np.float64).reshape(-1, 1)
    for fmt, name in [("onnx", "model.onnx"), ("exported_program", "model.pt2"), ("torchscript", "model.ts")]:
        out = tmp_path / name
        proc = run_main("export", "--ckpt_path", str(ckpt), "--format", fmt, "--out", str(out), cwd=tmp_path)
        assert proc.returncode == 0 and f"as {fmt} to {out}" in proc.stderr, proc.stderr[-2000:]
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": XS})
    close(got, preds)  # of shape (1000, 1): assert_allclose compares the shapes too
    (one,) = session.run(None, {"x": XS[:1]})  # the batch dimension is dynamic
    close(one, preds[:1])
    x = torch.from_numpy(XS)
    close(torch.export.load(tmp_path / "model.pt2").module()(x).detach().numpy(), preds)
    close(torch.jit.load(tmp_path / "model.ts")(x[:7]).detach().numpy(), preds[:7])
