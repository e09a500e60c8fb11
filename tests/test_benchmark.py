"""The GPU check script and the benchmark it ends with, run on a CPU at tiny sizes: every step
runs and every row is reported with its figures and baseline (the figures themselves are not
asserted: a benchmark, not a timed test); slow tier. And Lightning's floor, the benchmark's
reference for what Lightning itself costs, trains the lab's model (fast tier).

Run: pytest tests/test_benchmark.py
"""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import REPO

ROWS = ("lab_epochs", "scale", "data_path", "landscape", "predict_start", "ensemble", "sweep", "serve", "export")


@pytest.mark.slow
def test_gpu_check_steps_and_quick_benchmark_run_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu", "--no-install", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    table = proc.stdout
    for step in (
        "fit (accelerator=auto)",
        "predict from the checkpoint",
        "landscape (21 x 21)",
        "ensemble (2000 members)",
        "benchmark",
        "done",
    ):
        assert f"=== {step}" in table, step
    # --cpu trains on the CPU, also on a machine that has a GPU.
    assert re.search(r"GPU available: (False|True \(cuda\)), used: False", table)
    assert table.count("x,prediction") == 1 and "\n10," in table
    results = json.loads(out.read_text())
    assert list(results) == list(ROWS)
    for row in ROWS:
        assert any(line.startswith(row) for line in table.splitlines()), row
        entry = results[row]
        assert "error" not in entry, entry
        assert entry["target"] and isinstance(entry["ok"], bool)
    assert results["landscape"]["points"] == 121
    # Each ratio is the two timings it reports, divided as its target reads.
    lab = results["lab_epochs"]
    assert lab["ratio"] == pytest.approx(lab["fit_epoch_us"] / lab["plain_epoch_us"])
    land = results["landscape"]
    assert land["ratio"] == pytest.approx(land["one_by_one_s"] / land["vectorized_s"])
    start = results["predict_start"]
    assert start["ratio"] == pytest.approx(start["predict_s"] / start["import_torch_s"])
    assert results["scale"]["samples"] == 20_000 and results["scale"]["bare_ratio"] > 0
    # Lightning's floor is timed beside fit; a floor slower than the plain loop reads above 1
    # for lab_epochs (a slowdown) and below 1 for scale (a throughput).
    for row in ("lab_epochs", "scale"):
        assert results[row]["floor_ratio"] > 0 and results[row]["floor_nolog_ratio"] > 0, row
    ens = results["ensemble"]
    assert ens["members"] == 30 and ens["large_members"] == 60
    assert ens["lightning_floor_s"] >= 0 and ens["ceiling_ratio"] > 0
    assert ens["ratio"] == pytest.approx(ens["fit_member_fits_per_s"] / ens["plain_member_fits_per_s"])
    # The sweep row is a time: the quick grid's 2 epoch counts x 3 hidden sizes x 10 seeds.
    assert results["sweep"]["trials"] == 60 and results["sweep"]["ratio"] > 0
    serve = results["serve"]
    assert serve["ratio"] == pytest.approx(serve["serve_requests_per_s"] / serve["bare_requests_per_s"])
    assert serve["serve_errors"] == serve["bare_errors"] == 0 and serve["serve_p99_ms"] >= serve["serve_p50_ms"]
    export = results["export"]
    assert export["ratio"] == pytest.approx(export["onnx_predictions_per_s"] / export["torch_predictions_per_s"])
    assert export["max_abs_difference"] <= 1e-5


@pytest.mark.slow
def test_benchmark_refuses_gpu_without_cuda_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--accelerator", "gpu"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, also on a machine that has one
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "benchmark.py: error: --accelerator gpu, but torch sees no CUDA device"
    assert proc.stdout == ""


@pytest.mark.parametrize("log", [True, False])
def test_lightnings_floor_trains_the_labs_model(monkeypatch, log):
    # The floor is compared with fit and the plain loop: it must train the same model on the
    # same data, so it ends where `regression-lab fit` ends (the lab's 31.9979 for x = 10).
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks.floor import fit_floor

    seconds, module = fit_floor({}, 400, "cpu", log=log)
    assert seconds > 0
    with torch.no_grad():
        assert float(module(torch.tensor([[10.0]]))) == pytest.approx(31.9979, abs=1e-4)
