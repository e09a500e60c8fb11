"""gpu_check.sh and its quick benchmark on a CPU: every step and row, each ratio its timings divided as its target
reads (timings are not asserted; ``make check-bench``); and Lightning's floor trains the lab's model (fast tier).
Run: pytest tests/test_benchmark.py"""

import json
import os
import re
import statistics
import subprocess
import sys

import pytest
import torch
from helpers import REPO

#: Each row, in the order reported, and its ratios as numerator / denominator timings: a time over its baseline's for
#: "at most", a rate over its baseline's for "at least" (no denominator: the timing itself).
RATIOS = {
    "lab_epochs": {"ratio": ("fit_us", "plain_us"), "yardstick_ratio": ("fit_us", "floor_us"),
                   "cadence_ratio": ("fit_us", "cadence_floor_us"),
                   "cadence_floor_ratio": ("cadence_floor_us", "floor_us")},
    "scale": {"ratio": ("fit_per_s", "plain_per_s"), "yardstick_ratio": ("fit_per_s", "floor_per_s")},
    "data_path": {"ratio": ("indexed_per_s", "loader_per_s")},
    "landscape": {"ratio": ("one_by_one_s", "vectorized_s")},
    "predict_start": {"ratio": ("command_s", "base_s")},
    "fit_process": {"ratio": ("command_s", "base_s"), "extra_s": ("extra_s", None)},
    "ensemble": {"ratio": ("fit_per_s", "plain_per_s"), "yardstick_ratio": ("fit_per_s", "stacked_per_s"),
                 "large_yardstick_ratio": ("large_fit_per_s", "large_stacked_per_s"),
                 "floor_yardstick_ratio": ("floor_per_s", "stacked_per_s"),
                 "large_floor_yardstick_ratio": ("large_floor_per_s", "large_stacked_per_s")},
    "sweep": {"ratio": ("sweep_s", None), "yardstick_ratio": ("sweep_s", "yardstick_s"),
              "floor_yardstick_ratio": ("floor_yardstick_s", "yardstick_s")},
    "sweep_peer": {"ratio": ("peer_s_per_trial", "sweep_s_per_trial")},
    "serve": {"ratio": ("serve_per_s", "bare_per_s")},
    "export": {"ratio": ("onnx_per_s", "torch_per_s")},
}  # fmt: skip


@pytest.mark.bench
def test_gpu_check_steps_and_quick_benchmark_run_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu", "--no-install", "--json", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for step in ("fit (accelerator=auto)", "predict from the checkpoint", "landscape (21 x 21)",
                 "ensemble (2000 members)", "benchmark", "done"):  # fmt: skip
        assert f"=== {step}" in proc.stdout, step
    assert re.search(r"GPU available: (False|True \(cuda\)), used: False", proc.stdout)  # --cpu: on the CPU
    assert proc.stdout.count("x,prediction") == 1 and "\n10," in proc.stdout
    results = json.loads(out.read_text())
    assert list(results) == list(RATIOS)
    for row, ratios in RATIOS.items():
        entry = results[row]
        assert "error" not in entry and isinstance(entry["ok"], bool) and entry["target"], entry
        assert {name: tuple(r[:2]) for name, r in entry["ratios"].items()} == ratios, row
        for name, (num, den) in ratios.items():
            per = [n / (entry["repeats"][den][i] if den else 1) for i, n in enumerate(entry["repeats"][num])]
            assert entry[name] == pytest.approx(statistics.median(per)), (row, name)
            assert entry[f"{name}_min"] <= entry[name] <= entry[f"{name}_max"], (row, name)
    fit = results["fit_process"]["repeats"]
    assert fit["extra_s"] == pytest.approx([c - b for c, b in zip(fit["command_s"], fit["base_s"], strict=True)])
    assert results["landscape"]["points"] == 121 and not any(results["serve"]["errors"])
    assert results["ensemble"]["members"] == 30 and results["sweep"]["member_trials"] == 20


@pytest.mark.bench
def test_benchmark_refuses_gpu_without_cuda_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--accelerator", "gpu"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, also on a machine that has one
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == "benchmark.py: error: --accelerator gpu, but torch sees no CUDA device"


@pytest.mark.parametrize("floor", [{}, {"cadences": True}, {"hidden": [5], "seeds": [0], "cadences": True}])
def test_lightnings_floor_trains_the_labs_model(monkeypatch, floor):
    # Compared with fit, the floor must end where fit does (31.9979): bare, with fit's cadences, as a one-member stack.
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks.run import fit_floor

    seconds, module = fit_floor({}, 400, "cpu", **floor)
    with torch.no_grad():
        assert seconds > 0 and float(module(torch.tensor([[10.0]]))) == pytest.approx(31.9979, abs=1e-4)
