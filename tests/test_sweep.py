"""The sweep: one ensemble fit of a small real grid, its table against trials.csv and against
lone fits, TensorBoard, re-runs, chunks and divergence (slow tier, a subprocess as a user runs
it); bad input (fast tier, in-process).

Run: pytest tests/test_sweep.py
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
from helpers import fingerprint, fit_in_process, run_cli, run_main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from regression_lab.commands.sweep import mean_ci, seed_ranges

GRID = ["--hidden_sizes", "4", "8", "--epochs", "20", "60", "--seeds", "0-29", "--quiet"]
SETTINGS = {("4", "20"), ("4", "60"), ("8", "20"), ("8", "60")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    proc = run_cli("sweep", *GRID, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, workdir / "lightning_logs" / "sweep_0", proc


@pytest.mark.slow
def test_the_table_has_one_row_per_setting_ranked_by_val_loss(sweep_run):
    _, out, proc = sweep_run
    rows = read_csv(out / "results.csv")
    assert list(rows[0])[:8] == [
        "hidden_size", "epochs", "lr", "n_seeds", "val_loss_mean", "val_loss_std", "err10_mean", "err10_std",
    ]  # fmt: skip
    assert {(r["hidden_size"], r["epochs"]) for r in rows} == SETTINGS and len(rows) == 4
    assert all(r["n_seeds"] == "30" and float(r["lr"]) == 0.01 for r in rows)
    means = [float(r["val_loss_mean"]) for r in rows]
    assert means == sorted(means)
    best = rows[0]
    assert f"best: hidden_size={best['hidden_size']}, epochs={best['epochs']}, lr=0.01" in proc.stdout
    assert ("clearly ahead of" in proc.stdout) != ("within the noise of" in proc.stdout)
    assert len([line for line in proc.stdout.splitlines() if line[:4].strip().isdigit()]) == 4
    assert "120 trials (4 settings x 30 seeds)" in proc.stderr and "snapshots at 20" in proc.stderr


@pytest.mark.slow
def test_the_table_is_the_statistics_of_trials_csv(sweep_run):
    _, out, _ = sweep_run
    trials = read_csv(out / "trials.csv")
    assert len(trials) == 120
    assert {"hidden_size", "epochs", "lr", "seed", "prediction", "val_loss", "train_loss"} <= set(trials[0])
    assert {int(t["seed"]) for t in trials} == set(range(30))
    best_of_seed: dict[str, tuple[float, tuple]] = {}
    for t in trials:
        key = (t["hidden_size"], t["epochs"])
        if t["seed"] not in best_of_seed or float(t["val_loss"]) < best_of_seed[t["seed"]][0]:
            best_of_seed[t["seed"]] = (float(t["val_loss"]), key)
    for row in read_csv(out / "results.csv"):
        mine = [t for t in trials if (t["hidden_size"], t["epochs"]) == (row["hidden_size"], row["epochs"])]
        vals = [float(t["val_loss"]) for t in mine]
        errs = [abs(float(t["prediction"]) - 32.0) for t in mine]
        assert float(row["val_loss_mean"]) == pytest.approx(statistics.fmean(vals), rel=1e-9)
        assert float(row["val_loss_std"]) == pytest.approx(statistics.stdev(vals), rel=1e-9)
        assert float(row["err10_mean"]) == pytest.approx(statistics.fmean(errs), rel=1e-6)
        assert float(row["val_loss_median"]) == pytest.approx(statistics.median(vals), rel=1e-9)
        assert float(row["err10_median"]) == pytest.approx(statistics.median(errs), rel=1e-6)
        # The 95% interval of the mean with Student's t for 29 degrees of freedom.
        half = 2.045 * statistics.stdev(vals) / math.sqrt(30)
        assert float(row["val_loss_ci_low"]) == pytest.approx(statistics.fmean(vals) - half, rel=1e-6, abs=1e-9)
        assert float(row["val_loss_ci_high"]) == pytest.approx(statistics.fmean(vals) + half, rel=1e-6)
        units = [int(t["active_units"]) for t in mine]
        assert float(row["all_dead_share"]) == pytest.approx(sum(u == 0 for u in units) / 30)
        assert float(row["dead_unit_share"]) == pytest.approx(sum(u < int(row["hidden_size"]) for u in units) / 30)
        wins = sum(key == (row["hidden_size"], row["epochs"]) for _, key in best_of_seed.values())
        assert float(row["best_share"]) == pytest.approx(wins / 30)


@pytest.mark.slow
def test_a_trial_equals_the_same_setting_and_seed_fitted_alone(sweep_run, tmp_path):
    _, out, _ = sweep_run
    trials = {t["name"]: t for t in read_csv(out / "trials.csv")}
    for hidden, epochs, seed in [(8, 20, 3), (4, 60, 0)]:
        lone = fit_in_process(
            tmp_path, "--model.hidden_size", str(hidden), "--trainer.max_epochs", str(epochs),
            "--seed_everything", str(seed),
        )  # fmt: skip
        trial = trials[f"h{hidden}_e{epochs}_lr0.01_s{seed}"]
        assert float(trial["prediction"]) == pytest.approx(lone.final_metrics["prediction"], abs=1e-5)
        assert float(trial["val_loss"]) == pytest.approx(lone.final_metrics["val_loss"], rel=1e-4, abs=1e-6)
        assert float(trial["train_loss"]) == pytest.approx(lone.final_metrics["train_loss"], rel=1e-4, abs=1e-7)


@pytest.mark.slow
def test_one_tensorboard_run_with_pictures_per_setting(sweep_run):
    _, out, _ = sweep_run
    assert (out / "error_vs_epochs.png").stat().st_size > 1000
    run = out / "ensemble"
    acc = EventAccumulator(str(run), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    trials = read_csv(out / "trials.csv")
    for hidden, epochs in SETTINGS:
        name = f"h{hidden}_e{epochs}_lr0.01"
        (hist,) = acc.Histograms(f"ensemble_val_loss/{name}")
        vals = [float(t["val_loss"]) for t in trials if (t["hidden_size"], t["epochs"]) == (hidden, epochs)]
        assert hist.histogram_value.num == 30
        assert hist.histogram_value.sum == pytest.approx(sum(vals), rel=1e-5)
        assert (run / "hparams" / name).is_dir()
    for hidden in ("4", "8"):
        assert len(acc.Scalars(f"train_loss_percentiles/h{hidden}_lr0.01/p50")) == 3  # steps 20, 40, 60
    assert {"sweep/error_vs_epochs", "ensemble/abs_error_at_10"} <= set(acc.Tags()["images"])
    assert "sweep/results/text_summary" in acc.Tags()["tensors"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ensemble"]


@pytest.mark.slow
def test_running_again_reports_the_same_table_and_touches_nothing(sweep_run):
    workdir, out, first = sweep_run
    before = fingerprint(out)
    again = run_cli("sweep", *GRID, cwd=workdir, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already holds this grid's results" in again.stderr
    assert again.stdout == first.stdout
    assert fingerprint(out) == before
    assert sorted(p.name for p in (workdir / "lightning_logs").iterdir()) == ["sweep_0"]


@pytest.mark.slow
def test_chunks_give_the_same_trials_as_one_fit(sweep_run, tmp_path):
    _, out, first = sweep_run
    (tmp_path / "sweep.yaml").write_text(
        "hidden_sizes: [4, 8]\nepochs: [20, 60]\nlrs: [0.01]\nseeds: ['0-29']\nchunk_size: 24\nout: chunked\n"
    )
    proc = run_main("sweep", "--config", "sweep.yaml", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "chunk 3/3: seeds 24-29" in proc.stderr
    assert read_csv(tmp_path / "chunked" / "trials.csv") == read_csv(out / "trials.csv")
    assert proc.stdout.replace("chunked", "X") == first.stdout.replace("lightning_logs/sweep_0", "X")
    assert json.loads((tmp_path / "chunked" / "sweep.json").read_text())["grid"]["seeds"] == ["0-29"]


@pytest.mark.slow
def test_a_diverged_setting_is_ranked_last_not_fatal(tmp_path):
    proc = run_main(
        "sweep", "--hidden_sizes", "5", "--epochs", "60", "--lrs", "0.01", "3.0", "--seeds", "0", "1", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_csv(tmp_path / "lightning_logs" / "sweep_0" / "results.csv")
    assert [float(r["lr"]) for r in rows] == [0.01, 3.0]
    assert rows[1]["val_loss_mean"] == "inf" and float(rows[1]["diverged_share"]) == 1.0
    assert float(rows[0]["diverged_share"]) == 0.0 and float(rows[0]["val_loss_mean"]) < 1.0
    trials = read_csv(tmp_path / "lightning_logs" / "sweep_0" / "trials.csv")
    assert [t["diverged"] for t in trials if t["lr"] == "3.0"] == ["1", "1"]


def test_mean_ci_and_seed_ranges():
    mean, std, low, high = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert (mean, std) == (2.5, statistics.stdev([1.0, 2.0, 3.0, 4.0]))
    assert high - mean == pytest.approx(3.182 * std / 2)  # t(3) = 3.182
    assert mean - low == pytest.approx(high - mean)
    assert seed_ranges([0, 1, 2, 7, 9, 10]) == ["0-2", "7", "9-10"]


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--hidden_sizes"], "expected at least one argument"),
        (["--epochs", "0"], "--epochs values must be integers >= 1"),
        (["--hidden_sizes", "-2"], "--hidden_sizes values must be integers >= 1"),
        (["--hidden_sizes", "4", "4"], "--hidden_sizes repeats a value"),
        (["--lrs", "-0.1"], "--lrs values must be finite numbers > 0"),
        (["--lrs", "nan"], "Parser key \"lrs\" element 1: Expected a <class 'float'>. Got value: nan"),
        (["--seeds", "-1"], "--seeds takes integers >= 0 or ranges like 0-999"),
        (["--seeds", "9-3"], "--seeds range '9-3' is reversed"),
        (["--seeds", "0-99999999"], "--seeds asks for more than 10,000,000 seeds"),
        (["--seeds", "1", "0-2"], "--seeds repeats a seed"),
        (["--chunk_size", "2"], "--chunk_size must be an integer >= 3"),
        (["--workers", "2"], "unrecognized arguments: --workers"),
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
