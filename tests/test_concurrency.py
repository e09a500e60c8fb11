"""Commands started at the same time (the hardening issues): a resume of a run that another
process is training is refused before it touches the run; two identical default sweeps join one
study and train each setting once. Real processes (slow tier).

Run: pytest tests/test_concurrency.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from helpers import cli_command, fingerprint, run_cli, run_main

from regression_lab.core.safe_io import lock_dir

pytestmark = pytest.mark.slow

QUIET = ["--trainer.enable_progress_bar", "false"]


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*cli_command(), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


def wait_until_held(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until a process holds ``run_dir`` (a running fit does, from its start to its end)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the fit never took its run directory"
        try:
            os.close(lock_dir(run_dir))
        except (BlockingIOError, FileNotFoundError):
            if run_dir.is_dir():
                return
        time.sleep(0.05)


def test_a_run_being_trained_is_not_resumed_into_by_another_fit(tmp_path):
    first = run_main("fit", "--trainer.max_epochs", "5", *QUIET, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "lightning_logs" / "version_0"
    # A long resume holds the run ...
    resuming = start("fit", "--ckpt_path", "last", "--trainer.max_epochs", "10000000", *QUIET, cwd=tmp_path)
    try:
        wait_until_held(run, resuming)
        time.sleep(1.0)  # its config.yaml and events are written by now
        before = fingerprint(run)
        # ... so a second resume of it is refused at once, touching nothing there.
        second = run_main("fit", "--ckpt_path", "last", "--trainer.max_epochs", "20", *QUIET, cwd=tmp_path)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            "error: lightning_logs/version_0 is in use by another fit (training or resuming it now): wait until it ends"
        )
        after = fingerprint(run)
        # The running fit itself may have refreshed last.ckpt and its events meanwhile.
        changed = {k for k in before if before[k] != after.get(k)}
        assert changed <= {"checkpoints/last.ckpt"} | {k for k in before if "tfevents" in k}
        assert "config.yaml" not in changed and set(after) - set(before) <= {"checkpoints/last.ckpt"}
    finally:
        resuming.send_signal(signal.SIGTERM)
        _, err = resuming.communicate(timeout=120)
    assert resuming.returncode == 143, err[-2000:]
    # Once the first one has ended, the run resumes normally.
    epoch = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    again = run_main("fit", "--ckpt_path", "last", "--trainer.max_epochs", str(epoch + 2), *QUIET, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == epoch + 2
    assert not (tmp_path / "lightning_logs" / "version_1").exists()


def test_two_identical_default_sweeps_started_together_train_each_setting_once(tmp_path):
    grid = ["--hidden_sizes", "4", "8", "--epochs", "20", "--seeds", "0-9", "--quiet"]
    procs = [start("sweep", *grid, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    assert sorted(d.name for d in (tmp_path / "lightning_logs").iterdir()) == ["sweep_0"]
    study = optuna.load_study(
        study_name="sweep", storage=f"sqlite:///{tmp_path / 'lightning_logs' / 'sweep_0' / 'study.db'}"
    )
    trained = [t for t in study.trials if "members" in t.user_attrs]
    assert sorted(t.params["hidden_size"] for t in trained) == [4, 8]
    report = run_cli("sweep", *grid, "--report", "--out", "lightning_logs/sweep_0", cwd=tmp_path)
    assert report.returncode == 0 and len([ln for ln in report.stdout.splitlines() if ln[:4].strip().isdigit()]) == 2
