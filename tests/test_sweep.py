"""The sweep as an Optuna study: a small real grid, its table against members.csv and against
lone fits, the study in its storage, TensorBoard, re-runs, workers, pruning, TPE, SIGKILL and
SIGTERM (slow tier, subprocesses as a user runs them); bad input (fast tier, in-process).

Run: pytest tests/test_sweep.py
"""

from __future__ import annotations

import csv
import math
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from helpers import cli_command, fingerprint, fit_in_process, run_cli, run_main
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from regression_lab.commands.sweep_report import mean_ci, seed_ranges
from regression_lab.commands.sweep_study import mask

GRID = ["--hidden_sizes", "4", "8", "--epochs", "20", "60", "--seeds", "0-29", "--quiet"]
SETTINGS = {("4", "20"), ("4", "60"), ("8", "20"), ("8", "60")}


def table_of(stdout: str) -> str:
    """The ranked table and verdict: what a sweep prints, less the line naming its directory."""
    return "\n".join(line for line in stdout.splitlines() if not line.startswith("results: "))


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
    assert "2 settings x 30 seeds" in proc.stderr
    # The study: one trial per (hidden size, lr), its value the mean validation loss at 60 epochs.
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted((t.params["hidden_size"], t.params["lr"]) for t in trials) == [(4, 0.01), (8, 0.01)]
    for t in trials:
        row = next(r for r in rows if r["hidden_size"] == str(t.params["hidden_size"]) and r["epochs"] == "60")
        assert t.value == pytest.approx(float(row["val_loss_mean"]), rel=1e-9)
        assert set(t.user_attrs["members"]) == {"20", "60"}


@pytest.mark.slow
def test_the_table_is_the_statistics_of_members_csv(sweep_run):
    _, out, _ = sweep_run
    trials = read_csv(out / "members.csv")
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
    trials = {t["name"]: t for t in read_csv(out / "members.csv")}
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
@pytest.mark.slow
def test_tensorboard_runs_per_trial_and_a_summary(sweep_run):
    _, out, _ = sweep_run
    assert (out / "error_vs_epochs.png").stat().st_size > 1000
    assert (out / "optuna_optimization_history.png").stat().st_size > 1000
    members = read_csv(out / "members.csv")
    for number, hidden in enumerate(("8", "4")):
        run = out / f"trial_{number}"
        acc = EventAccumulator(str(run), size_guidance={"histograms": 0, "scalars": 0})
        acc.Reload()
        for epochs in ("20", "60"):
            name = f"h{hidden}_e{epochs}_lr0.01"
            (hist,) = acc.Histograms(f"ensemble_val_loss/{name}")
            vals = [float(t["val_loss"]) for t in members if (t["hidden_size"], t["epochs"]) == (hidden, epochs)]
            assert hist.histogram_value.num == 30
            assert hist.histogram_value.sum == pytest.approx(sum(vals), rel=1e-5)
            assert (run / "hparams" / name).is_dir()  # one HParams row per trial and epoch count
        assert len(acc.Scalars(f"train_loss_percentiles/h{hidden}_lr0.01/p50")) == 3  # steps 20, 40, 60
    acc = EventAccumulator(str(out / "summary"), size_guidance={"images": 0})
    acc.Reload()
    assert {"sweep/error_vs_epochs", "optuna/optimization_history"} <= set(acc.Tags()["images"])
    assert "sweep/results/text_summary" in acc.Tags()["tensors"]
    trials = read_csv(out / "trials.csv")  # Optuna's own dataframe: one row per trial
    assert sorted((t["params_hidden_size"], t["state"]) for t in trials) == [("4", "COMPLETE"), ("8", "COMPLETE")]


@pytest.mark.slow
def test_running_again_continues_the_study_and_reports_the_same_table(sweep_run):
    workdir, out, first = sweep_run
    before = read_csv(out / "results.csv")
    again = run_cli("sweep", *GRID, cwd=workdir, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout == first.stdout
    assert read_csv(out / "results.csv") == before
    assert sorted(p.name for p in (workdir / "lightning_logs").iterdir()) == ["sweep_0"]
    assert sorted(p.name for p in out.glob("trial_*")) == ["trial_0", "trial_1"]  # nothing trained again
    report = run_cli("sweep", "--report", "--out", str(out), cwd=workdir)
    assert report.returncode == 0, report.stderr[-2000:]
    assert report.stdout == "\n".join(first.stdout.splitlines()[:-1]) + "\n"  # all but the "results:" line


@pytest.mark.slow
def test_a_study_of_another_search_space_is_refused_and_left_unchanged(sweep_run):
    workdir, out, _ = sweep_run
    before = fingerprint(out)
    proc = run_main("sweep", "--hidden_sizes", "5", "--epochs", "20", "--seeds", "0-29", "--out", str(out), cwd=workdir)
    assert proc.returncode == 2
    assert "searches another space (sampler grid, seeds ['0-29'], hidden_sizes [4, 8]" in proc.stderr
    assert fingerprint(out) == before


@pytest.mark.slow
def test_a_diverged_setting_is_ranked_last_and_pruning_stops_hopeless_trials(tmp_path):
    proc = run_main(
        "sweep", "--hidden_sizes", "4", "5", "8", "--epochs", "60", "--lrs", "0.01", "0.5", "--seeds", "0-9",
        "--pruner", "median", "--seed", "0", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "lightning_logs" / "sweep_0"
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'study.db'}")
    trials = {(t.params["hidden_size"], t.params["lr"]): t for t in study.trials}
    # The grid's order with --seed 0: (8, .5) and (5, .01) first, which start the median; then
    # lr 0.5 (every unit dead: a flat fit, val loss 243) is behind at its first validation.
    assert [t.params for t in study.trials][:2] == [{"hidden_size": 8, "lr": 0.5}, {"hidden_size": 5, "lr": 0.01}]
    for key in ((4, 0.5), (5, 0.5)):
        assert trials[key].state == TrialState.PRUNED and list(trials[key].intermediate_values) == [20]
        median = statistics.median(t.intermediate_values[20] for t in study.trials[:2])
        assert trials[key].intermediate_values[20] > median
    assert all(trials[(h, 0.01)].state == TrialState.COMPLETE for h in (4, 5, 8))
    rows = read_csv(out / "results.csv")
    assert [r["state"] for r in rows] == ["COMPLETE"] * 4 + ["PRUNED"] * 2
    assert rows[3]["lr"] == "0.5" and float(rows[3]["all_dead_share"]) == 1.0  # the flat fits, ranked last
    assert "pruned (val loss 243 when stopped)" in proc.stdout


@pytest.mark.slow
def test_tpe_is_reproducible_with_its_seed(tmp_path):
    args = ["--sampler", "tpe", "--n_trials", "4", "--seed", "3", "--hidden_range", "2", "8", "--lr_range",
            "0.005", "0.05", "--log", "--epochs_range", "20", "60", "--seeds", "0-4", "--quiet"]  # fmt: skip
    first = run_main("sweep", *args, "--out", "a", cwd=tmp_path)
    second = run_main("sweep", *args, "--out", "b", cwd=tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr[-2000:]
    assert table_of(first.stdout) == table_of(second.stdout)
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 'a' / 'study.db'}")
    assert len(study.trials) == 4
    for t in study.trials:
        assert 2 <= t.params["hidden_size"] <= 8 and 0.005 <= t.params["lr"] <= 0.05
        assert 20 <= t.params["epochs"] <= 60


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*cli_command(), "sweep", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


def _wait_for_trials(out: Path, finished: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``finished`` trials are done: trial N's run directory appears when it starts.
    (Not through the study: opening a new database while the sweep creates it races with it.)"""
    deadline = time.monotonic() + timeout
    while not (out / f"trial_{finished}").is_dir():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.05)


def _workers_of(pid: int) -> list[int]:
    """The sweep's worker processes (multiprocessing's spawned children, not its resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


SLOW_GRID = ["--hidden_sizes", "4", "5", "8", "--epochs", "100", "400", "--seeds", "0-199", "--quiet"]


@pytest.fixture(scope="module")
def slow_grid_table(tmp_path_factory) -> str:
    proc = run_cli("sweep", *SLOW_GRID, "--out", "ref", cwd=tmp_path_factory.mktemp("ref"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return table_of(proc.stdout)


@pytest.mark.slow
def test_a_sigkilled_sweep_is_retried_through_the_heartbeat_and_ends_with_the_same_table(tmp_path, slow_grid_table):
    args = [*SLOW_GRID, "--out", "s", "--heartbeat_interval", "1"]
    proc = _start(args, tmp_path)
    try:
        _wait_for_trials(tmp_path / "s", 1, proc)
        time.sleep(0.3)  # into the next trial
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert [t.state for t in study.trials].count(TrialState.RUNNING) == 1  # left running by the dead worker
    again = run_cli("sweep", *args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert table_of(again.stdout) == slow_grid_table
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 3  # failed, then retried


@pytest.mark.slow
def test_sigterm_to_the_parent_stops_its_workers_in_one_line_with_143_and_the_next_run_finishes(
    tmp_path, slow_grid_table
):
    args = [*SLOW_GRID, "--out", "s", "--workers", "2"]
    proc = _start(args, tmp_path)
    _wait_for_trials(tmp_path / "s", 1, proc)
    time.sleep(0.3)
    workers = _workers_of(proc.pid)
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGTERM)  # the parent only, not its process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("sweep stopped (SIGTERM)") and "Traceback" not in err
    for pid in workers:  # gone (reaped by the parent), not training on
        assert not Path(f"/proc/{pid}").exists()
    again = run_cli("sweep", *args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert table_of(again.stdout) == slow_grid_table


@pytest.mark.slow
def test_two_local_workers_share_the_study_and_train_each_setting_once(tmp_path, slow_grid_table):
    proc = run_cli("sweep", *SLOW_GRID, "--out", "w", "--workers", "2", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert table_of(proc.stdout) == slow_grid_table
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 'w' / 'study.db'}")
    trained = [t for t in study.trials if "members" in t.user_attrs]
    assert sorted(t.params["hidden_size"] for t in trained) == [4, 5, 8]


@pytest.mark.slow
def test_a_sigkilled_worker_does_not_hang_the_sweep_and_its_trial_is_retried(tmp_path, slow_grid_table):
    proc = _start([*SLOW_GRID, "--out", "w", "--workers", "2", "--heartbeat_interval", "1"], tmp_path)
    _wait_for_trials(tmp_path / "w", 1, proc)
    os.kill(_workers_of(proc.pid)[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "warning: worker(s) 0 ended with status -9" in err and "Traceback" not in err
    assert table_of(out) == slow_grid_table  # the dead worker's trial was run again by the other


def test_credentials_are_masked():
    assert mask("postgresql+psycopg://user:s3cret@db:5432/optuna") == "postgresql+psycopg://user:***@db:5432/optuna"
    assert mask("sqlite:///x.db") == "sqlite:///x.db"


def test_a_storage_that_cannot_be_reached_is_one_line_with_the_password_masked(tmp_path):
    # Port 1 on the loopback: refused at once. The password appears nowhere; words that merely
    # contain its letters ("psycopg", "port") stay readable.
    proc = run_main("sweep", "--storage", "postgresql+psycopg://u:p@127.0.0.1:1/db", cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith("error: cannot open the storage postgresql+psycopg://u:***@127.0.0.1:1/db: ")
    assert "Connection refused" in line and "port 1" in line and ":p@" not in line
    assert "\n" not in line and not (tmp_path / "lightning_logs").exists()


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
        (["--epochs", "0"], "--epochs values must be an integer >= 1"),
        (["--hidden_sizes", "-2"], "--hidden_sizes values must be an integer >= 1"),
        (["--hidden_sizes", "4", "4"], "--hidden_sizes repeats a value"),
        (["--lrs", "-0.1"], "--lrs values must be > 0"),
        (["--lrs", "nan"], "Parser key \"lrs\" element 1: Expected a <class 'float'>. Got value: nan"),
        (["--seeds", "-1"], "--seeds takes integers >= 0 or ranges like 0-999"),
        (["--seeds", "9-3"], "--seeds range '9-3' is reversed"),
        (["--seeds", "0-199999"], "at most 100,000"),
        (["--seeds", "1", "0-2"], "--seeds repeats a seed"),
        (["--sampler", "random"], "sampler"),
        (["--pruner", "always"], "pruner"),
        (["--n_trials", "0"], "--n_trials must be an integer >= 1"),
        (["--lr_range", "0.3", "0.001"], "--lr_range takes LOW HIGH with LOW <= HIGH"),
        (["--hidden_range", "0", "4"], "--hidden_range values must be an integer >= 1"),
        (["--epochs_range", "800", "50"], "--epochs_range takes LOW HIGH"),
        (["--workers", "0"], "--workers must be an integer >= 1"),
        (["--epochs", "ten"], "Parser key \"epochs\" element 1: Expected a <class 'int'>. Got value: ten"),
        (["--config", "missing.yaml"], "File does not exist"),
        (["--config", "unknown.yaml"], "Option 'hidden' is not accepted"),
        (["--config", "empty_list.yaml"], "--seeds is empty"),
        (["--config", "broken.yaml"], "Problems parsing config"),
        (
            ["--storage", "postgresql+psycopg://me:s3cret@127.0.0.1:1/db"],
            "cannot open the storage postgresql+psycopg://me:***@",
        ),
        (["--storage", "nosuchdb://x"], "cannot open the storage nosuchdb://x"),
        (["--report"], "--report needs the study's --storage"),
        (["--report", "--storage", "sqlite:///none.db"], "no study database at none.db"),
    ],
)
def test_bad_sweep_input_is_one_line_exit_2(tmp_path, args, phrase):
    (tmp_path / "unknown.yaml").write_text("hidden: [4]\n")
    (tmp_path / "empty_list.yaml").write_text("seeds: []\n")
    (tmp_path / "broken.yaml").write_text("epochs: [1, 2\n")
    before = fingerprint(tmp_path)
    proc = run_main("sweep", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert proc.stderr.count("\n") == 1 and phrase in proc.stderr and "Traceback" not in proc.stderr
    assert "s3cret" not in proc.stderr
    after = fingerprint(tmp_path)
    # An unreachable storage may leave the new, empty sweep directory it was to fill: nothing else.
    assert {k: v for k, v in after.items() if not k.startswith("lightning_logs")} == before
    assert not [k for k in after if k.startswith("lightning_logs")]


@pytest.mark.slow
def test_a_journal_file_storage_and_the_hyperband_pruner(tmp_path):
    args = ["--hidden_sizes", "4", "8", "--epochs", "40", "--seeds", "0-4", "--quiet"]
    proc = run_main("sweep", *args, "--storage", "study.log", "--pruner", "hyperband", "--out", "j", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "study.log").stat().st_size > 0 and not (tmp_path / "j" / "study.db").exists()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    study = optuna.load_study(study_name="sweep", storage=storage)
    assert sorted(t.params["hidden_size"] for t in study.trials) == [4, 8]
    # Each trial reported its mean validation loss at every validation until it finished, or
    # until Hyperband's bracket stopped it (pruned trials show as such in the table).
    for t in study.trials:
        assert (t.state, sorted(t.intermediate_values)) in ((TrialState.COMPLETE, [20, 40]), (TrialState.PRUNED, [20]))
        assert (f"pruned (val loss {t.intermediate_values[20]:.3g}" in proc.stdout) == (t.state == TrialState.PRUNED)
    report = run_main("sweep", "--storage", "study.log", "--report", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert table_of(report.stdout) == table_of(proc.stdout)


def test_a_foreign_out_directory_is_refused_and_left_alone(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "results.csv").write_text("my own results\n")
    before = fingerprint(tmp_path)
    proc = run_main("sweep", "--out", "mine", "--seeds", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "mine exists and is not a sweep directory" in proc.stderr
    assert fingerprint(tmp_path) == before


def test_names_of_close_settings_stay_apart():
    from regression_lab.commands.sweep_report import trial_name
    from regression_lab.lit.ensemble_metrics import setting_name

    assert trial_name(5, 400, 0.01, 0) == "h5_e400_lr0.01_s0"
    assert trial_name(5, 400, 0.01) != trial_name(5, 400, 0.0100001)
    a, b = ({"hidden_size": 5, "lr": lr} for lr in (0.01, 0.0100001))
    assert setting_name(a, 400) == "h5_e400_lr0.01" and setting_name(a) != setting_name(b)


@pytest.mark.slow
def test_workers_are_capped_at_the_cores(tmp_path):
    cores = len(os.sched_getaffinity(0))
    proc = run_main("sweep", "--hidden_sizes", "4", "--epochs", "5", "--seeds", "0", "--workers", "64", "--quiet",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"note: --workers 64 capped at this machine's {cores} cores" in proc.stderr
