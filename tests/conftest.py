"""Shared fixtures: the lab's training run, trained once per test session.

Run the suite with ``make test`` (or ``pytest -n 2``) from the repository root (see README).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import fit_in_process

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def lab_run(tmp_path_factory: pytest.TempPathFactory):
    """The lab's default training (hidden 5, lr 0.01, 400 full-batch epochs), trained once per session."""
    workdir = tmp_path_factory.mktemp("lab_run")
    return workdir, fit_in_process(workdir)


@pytest.fixture
def lab_ckpt(lab_run, tmp_path: Path) -> Path:
    """A private copy of the lab run's last checkpoint, in a run directory of its own."""
    src = lab_run[0] / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    dst = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    dst.parent.mkdir(parents=True)
    shutil.copy2(src, dst)
    return dst
