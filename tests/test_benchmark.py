"""The GPU check script and the benchmark it ends with, run on a CPU at tiny sizes: every step
runs and every row is reported (the figures are not asserted: a benchmark, not a timed test).

Run: pytest tests/test_benchmark.py
"""

import json
import os
import re
import subprocess
import sys
import time

import lightning as L
from helpers import REPO

from regression_lab.benchmark import ROWS


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
    for step in ("fit (accelerator=auto)", "predict from the checkpoint", "landscape (21 x 21)", "benchmark", "done"):
        assert f"=== {step}" in table, step
    # --cpu trains on the CPU, also on a machine that has a GPU.
    assert re.search(r"GPU available: (False|True \(cuda\)), used: False", table)
    assert table.count("x,prediction") == 1 and "\n10," in table
    results = json.loads(out.read_text())
    assert list(results) == list(ROWS)
    for row in ROWS:
        assert any(line.startswith(row) for line in table.splitlines()), row
        entry = results[row]
        assert entry["ratio"] > 0 and entry["target"] and isinstance(entry["ok"], bool)
    assert results["landscape"]["points"] == 121
    assert results["lab_epochs"]["plain_epoch_us"] > 0 and results["lab_epochs"]["fit_epoch_us"] > 0
    assert results["scale"]["bare_ratio"] > 0 and results["scale"]["default_over_bare"] > 0


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


class SlowEnds(L.Callback):
    """Sleeps at each epoch's end (work the timed loop must include) and at training's end
    (one-off teardown it must leave out)."""

    def on_train_epoch_end(self, trainer, pl_module):
        time.sleep(0.1)

    def on_train_end(self, trainer, pl_module):
        time.sleep(0.4)


def test_fit_timing_counts_every_epoch_but_not_the_teardown(tmp_path):
    from regression_lab.benchmark import _fit_timing

    seconds, teardown = _fit_timing(
        ["--trainer.max_epochs", "3", "--trainer.accelerator", "cpu", f"--trainer.callbacks+={__name__}.SlowEnds"],
        tmp_path,
    )
    assert 0.3 <= seconds < 0.65  # three epoch ends of 0.1 s in, the 0.4 s at training's end out
    assert teardown >= 0.4
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
