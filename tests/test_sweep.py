"""The sweep: a small real grid, its table against the trials' own event files, HParams,
re-runs that skip finished trials, reproducibility (slow tier); bad input (fast tier, in-process).

Run: pytest tests/test_sweep.py
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli_command, fingerprint, run_cli, run_main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

GRID = ["--hidden_sizes", "4", "8", "--epochs", "20", "60", "--seeds", "0", "1", "--workers", "2", "--quiet"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    proc = run_cli("sweep", *GRID, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, workdir / "lightning_logs" / "sweep_0", proc


def trial_events(trial_dir: Path) -> EventAccumulator:
    (events,) = trial_dir.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_the_table_has_one_row_per_setting_ranked_by_val_loss(sweep_run):
    _, out, proc = sweep_run
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == [
        "hidden_size",
        "epochs",
        "lr",
        "n_seeds",
        "val_loss_mean",
        "val_loss_std",
        "err10_mean",
        "err10_std",
    ]
    assert sorted((r["hidden_size"], r["epochs"]) for r in rows) == [("4", "20"), ("4", "60"), ("8", "20"), ("8", "60")]
    assert all(r["n_seeds"] == "2" and float(r["lr"]) == 0.01 for r in rows)
    means = [float(r["val_loss_mean"]) for r in rows]
    assert means == sorted(means)
    best = rows[0]
    assert f"best: hidden_size={best['hidden_size']}, epochs={best['epochs']}, lr=0.01" in proc.stdout
    assert len([line for line in proc.stdout.splitlines() if line[:4].strip().isdigit()]) == 4


@pytest.mark.slow
def test_the_table_equals_the_trials_event_files(sweep_run):
    _, out, _ = sweep_run
    trial_dirs = sorted(p for p in out.iterdir() if p.name.startswith("h"))
    assert len(trial_dirs) == 8
    per_setting: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for trial in trial_dirs:
        acc = trial_events(trial)
        val = acc.Scalars("hp/val_loss")[-1].value
        err = acc.Scalars("hp/abs_error")[-1].value
        h, e = trial.name.split("_")[0][1:], trial.name.split("_")[1][1:]
        per_setting.setdefault((h, e), []).append((val, err))
        # HParams: every trial's hyperparameters are there, with the seed it ran with.
        start = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        )
        hp = start.session_start_info.hparams
        assert hp["hidden_size"].number_value == int(h)
        assert hp["seed_everything"].number_value == int(trial.name.rsplit("_s", 1)[1])
        for tag in ("hp/train_loss", "hp/val_loss", "hp/prediction", "hp/abs_error"):
            assert tag in acc.Tags()["scalars"], (trial.name, tag)
    for row in read_csv(out / "results.csv"):
        values = per_setting[(row["hidden_size"], row["epochs"])]
        vals, errs = [v for v, _ in values], [e for _, e in values]
        # Event files hold float32: compare at that precision.
        assert float(row["val_loss_mean"]) == pytest.approx(statistics.fmean(vals), rel=1e-5)
        assert float(row["val_loss_std"]) == pytest.approx(statistics.stdev(vals), rel=1e-4, abs=1e-9)
        assert float(row["err10_mean"]) == pytest.approx(statistics.fmean(errs), rel=1e-5)
        assert float(row["err10_std"]) == pytest.approx(statistics.stdev(errs), rel=1e-4, abs=1e-9)


@pytest.mark.slow
def test_summary_figure_and_trials_table(sweep_run):
    _, out, _ = sweep_run
    assert (out / "error_vs_epochs.png").stat().st_size > 1000
    trials = read_csv(out / "trials.csv")
    assert len(trials) == 8 and {t["seed"] for t in trials} == {"0", "1"}
    acc = trial_events(out / "summary")
    assert "sweep/error_vs_epochs" in acc.Tags()["images"]


@pytest.mark.slow
def test_running_again_skips_finished_trials_and_redoes_only_missing_ones(sweep_run):
    workdir, out, first = sweep_run
    before = fingerprint(out)
    again = run_cli("sweep", *GRID, cwd=workdir, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "8 of 8 trials already finished" in again.stderr
    assert again.stdout == first.stdout
    trial_files = {k: v for k, v in before.items() if k.startswith("h")}
    assert {k: v for k, v in fingerprint(out).items() if k.startswith("h")} == trial_files
    # An interrupted sweep: two trials never finished. Only they are trained again.
    for name in ("h4_e60_lr0.01_s1", "h8_e20_lr0.01_s0"):
        shutil.rmtree(out / name)
    third = run_cli("sweep", *GRID, cwd=workdir, timeout=600)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "6 of 8 trials already finished" in third.stderr
    after = fingerprint(out)
    for key, digest in trial_files.items():
        if not key.startswith(("h4_e60_lr0.01_s1", "h8_e20_lr0.01_s0")):
            assert after[key] == digest, key
    # Same seeds, same numbers: the retrained trials land exactly where they were.
    assert third.stdout == first.stdout
    assert sorted(p.name for p in (workdir / "lightning_logs").iterdir()) == ["sweep_0"]


@pytest.mark.slow
def test_a_sweep_killed_mid_run_finishes_on_the_next_run_with_the_same_table(tmp_path, sweep_run):
    _, _, first = sweep_run
    # Its own process group, so SIGKILL takes the worker processes down with it, as a crash or
    # a killed job would.
    proc = subprocess.Popen(
        [*cli_command(), "sweep", *GRID], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    out = tmp_path / "lightning_logs" / "sweep_0"
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*/result.json")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no finished trial within 120 s"
            time.sleep(0.01)
        assert proc.poll() is None  # killed while trials were still running
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = len(list(out.glob("*/result.json")))
    assert 1 <= finished < 8
    again = run_cli("sweep", *GRID, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{finished} of 8 trials already finished" in again.stderr
    assert again.stdout == first.stdout  # the same table as a sweep never interrupted


@pytest.mark.slow
def test_a_yaml_config_holds_the_same_keys(tmp_path, sweep_run):
    _, out, first = sweep_run
    (tmp_path / "sweep.yaml").write_text(
        "hidden_sizes: [4, 8]\nepochs: [20, 60]\nlrs: [0.01]\nseeds: [0, 1]\nworkers: 2\nout: elsewhere\n"
    )
    proc = run_cli("sweep", "--config", "sweep.yaml", "--quiet", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.replace("elsewhere", "X") == first.stdout.replace("lightning_logs/sweep_0", "X")
    assert json.loads((tmp_path / "elsewhere" / "sweep.json").read_text())["grid"]["lrs"] == [0.01]


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--hidden_sizes"], "expected at least one argument"),
        (["--epochs", "0"], "--epochs values must be integers >= 1"),
        (["--hidden_sizes", "-2"], "--hidden_sizes values must be integers >= 1"),
        (["--lrs", "-0.1"], "--lrs values must be finite numbers > 0"),
        (["--lrs", "nan"], "Parser key \"lrs\" element 1: Expected a <class 'float'>. Got value: nan"),
        (["--seeds", "-1"], "--seeds values must be integers >= 0"),
        (["--workers", "0"], "--workers must be an integer >= 1"),
        (["--epochs", "ten"], "Parser key \"epochs\" element 1: Expected a <class 'int'>. Got value: ten"),
        (["--config", "missing.yaml"], "File does not exist"),
        (["--config", "unknown.yaml"], "Option 'hidden' is not accepted"),
        (["--config", "empty_list.yaml"], "--seeds is empty"),
        (["--config", "broken.yaml"], "Problems parsing config"),
        (["--out", "other_grid", "--epochs", "5"], "holds a sweep of another grid"),
    ],
)
def test_bad_sweep_input_is_one_line_exit_2(tmp_path, args, phrase):
    (tmp_path / "unknown.yaml").write_text("hidden: [4]\n")
    (tmp_path / "empty_list.yaml").write_text("seeds: []\n")
    (tmp_path / "broken.yaml").write_text("epochs: [1, 2\n")
    (tmp_path / "other_grid").mkdir()
    (tmp_path / "other_grid" / "sweep.json").write_text(json.dumps({"grid": {"epochs": [7]}}))
    before = fingerprint(tmp_path)
    proc = run_main("sweep", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert proc.stderr.count("\n") == 1 and phrase in proc.stderr and "Traceback" not in proc.stderr
    assert fingerprint(tmp_path) == before
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow
def test_a_diverged_trial_is_ranked_last_not_fatal(tmp_path):
    proc = run_cli(
        "sweep", "--hidden_sizes", "5", "--epochs", "60", "--lrs", "0.01", "3.0", "--seeds", "0",
        "--workers", "1", "--quiet", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_csv(tmp_path / "lightning_logs" / "sweep_0" / "results.csv")
    assert [float(r["lr"]) for r in rows] == [0.01, 3.0]
    assert rows[1]["val_loss_mean"] == "inf"
    result = json.loads((tmp_path / "lightning_logs" / "sweep_0" / "h5_e60_lr3_s0" / "result.json").read_text())
    assert "training diverged" in result["failed"]
