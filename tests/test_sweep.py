"""The sweep as an Optuna study (processes as a user runs them): its table against members.csv and lone fits, the
storage, TensorBoard, re-runs, workers, pruning, TPE, SIGKILL and SIGTERM. Run: pytest tests/test_sweep.py"""

import contextlib
import csv
import math
import os
import signal
import statistics
import threading
from pathlib import Path

import optuna
import pytest
from helpers import events, fingerprint, fit_in_process, one_error_line, run_main, signal_when, start, wait_for
from optuna.trial import TrialState

from regression_lab.pictures import setting_name
from regression_lab.study import mask
from regression_lab.sweep import build_parser, capped, cores, parse_seeds, seed_ranges
from regression_lab.sweep_report import MEMBERS_ATTR, mean_ci, trial_name

GRID = "--hidden_sizes 4 8 --epochs 20 60 --seeds 0-29 --quiet".split()
PG = "postgresql+psycopg://"


def table_of(stdout: str) -> str:
    """The ranked table and verdict: what a sweep prints, less the line naming its directory."""
    return "\n".join(line for line in stdout.splitlines() if not line.startswith("results: "))


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def study_in(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'study.db'}")


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    proc = run_main("sweep", *GRID, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, workdir / "lightning_logs" / "sweep_0", proc


@pytest.mark.slow
def test_the_table_is_the_statistics_of_members_csv_and_the_study_and_tensorboard_hold_them(sweep_run, tmp_path):
    _, out, proc = sweep_run
    rows, members = read_csv(out / "results.csv"), read_csv(out / "members.csv")
    setting_of = lambda row: (row["hidden_size"], row["epochs"])  # noqa: E731 (a row's or a member's)
    assert list(rows[0])[:8] == "hidden_size epochs lr n_seeds val_loss_mean val_loss_std err10_mean err10_std".split()
    assert sorted(setting_of(r) for r in rows) == [("4", "20"), ("4", "60"), ("8", "20"), ("8", "60")]
    means = [float(r["val_loss_mean"]) for r in rows]
    assert means == sorted(means) and len(members) == 120 and {int(m["seed"]) for m in members} == set(range(30))
    assert f"best: hidden_size={rows[0]['hidden_size']}, epochs={rows[0]['epochs']}, lr=0.01" in proc.stdout
    assert ("clearly ahead of" in proc.stdout) != ("within the noise of" in proc.stdout)
    assert "2 settings x 30 seeds" in proc.stderr
    by_loss = sorted(members, key=lambda m: float(m["val_loss"]))  # each seed's best setting: its first lowest loss
    winners = [setting_of(next(m for m in by_loss if m["seed"] == str(seed))) for seed in range(30)]
    for row in rows:
        mine = [m for m in members if setting_of(m) == setting_of(row)]
        vals, errs = [float(m["val_loss"]) for m in mine], [abs(float(m["prediction"]) - 32.0) for m in mine]
        half = 2.045 * statistics.stdev(vals) / math.sqrt(30)  # Student's t, 29 degrees of freedom
        assert float(row["val_loss_mean"]) == pytest.approx(statistics.fmean(vals), rel=1e-9)
        assert float(row["val_loss_ci_high"]) == pytest.approx(statistics.fmean(vals) + half, rel=1e-6)
        assert float(row["err10_mean"]) == pytest.approx(statistics.fmean(errs), rel=1e-6)
        assert float(row["val_loss_median"]) == pytest.approx(statistics.median(vals), rel=1e-9)
        units = [int(m["active_units"]) for m in mine]
        assert float(row["all_dead_share"]) == pytest.approx(sum(u == 0 for u in units) / 30)
        assert float(row["dead_unit_share"]) == pytest.approx(sum(u < int(row["hidden_size"]) for u in units) / 30)
        assert float(row["best_share"]) == pytest.approx(winners.count(setting_of(row)) / 30)
    trials = study_in(out).get_trials(states=(TrialState.COMPLETE,))  # the value is the 60-epoch mean
    assert sorted((t.params["hidden_size"], t.params["lr"]) for t in trials) == [(4, 0.01), (8, 0.01)]
    for t in trials:
        row = next(r for r in rows if setting_of(r) == (str(t.params["hidden_size"]), "60"))
        assert t.value == pytest.approx(float(row["val_loss_mean"]), rel=1e-5)  # rounded to 6 digits for Optuna
        # Every member's numbers in the storage, out of what optuna-dashboard draws: its attributes are short.
        assert set(t.system_attrs[MEMBERS_ATTR]) == {"20", "60"} and set(t.user_attrs) == {"seconds", "diverged"}
    assert study_in(out).metric_names == ["mean val loss over the seeds at 60 epochs"]
    for hidden, epochs, seed in [(8, 20, 3), (4, 60, 0)]:  # a member is the same setting and seed fitted alone
        setting = f"--model.hidden_size {hidden} --trainer.max_epochs {epochs} --seed_everything {seed}"
        lone = fit_in_process(tmp_path, *setting.split()).final_metrics
        m = next(m for m in members if m["name"] == trial_name(hidden, epochs, 0.01, seed))
        assert float(m["prediction"]) == pytest.approx(lone["prediction"], abs=1e-5)
        assert float(m["val_loss"]) == pytest.approx(lone["val_loss"], rel=1e-4, abs=1e-6)
    # TensorBoard: a run per trial, and a summary.
    assert (out / "error_vs_epochs.png").stat().st_size > 1000 and (out / "optuna_optimization_history.png").is_file()
    for trial in study_in(out).trials:
        hidden, acc = str(trial.params["hidden_size"]), events(out / f"trial_{trial.number}", histograms=0, scalars=0)
        for epochs in ("20", "60"):  # the members' validation losses at each validation: log10, so the tail shows
            (hist,) = [h for h in acc.Histograms(f"members_val_loss_log10/h{hidden}_lr0.01") if h.step == int(epochs)]
            vals = [math.log10(max(float(m["val_loss"]), 1e-12)) for m in members if setting_of(m) == (hidden, epochs)]
            assert hist.histogram_value.num == 30 and hist.histogram_value.sum == pytest.approx(sum(vals), rel=1e-5)
        assert len(acc.Scalars(f"train_loss_percentiles/h{hidden}_lr0.01/p50")) == 3  # steps 20, 40, 60
    acc = events(out / "summary", images=0)
    assert {"sweep/error_vs_epochs", "sweep/abs_error_box", "optuna/optimization_history"} <= set(acc.Tags()["images"])
    assert (out / "error_box.png").stat().st_size > 1000
    assert sorted(t["state"] for t in read_csv(out / "trials.csv")) == ["COMPLETE", "COMPLETE"]  # Optuna's dataframe


@pytest.mark.slow
def test_running_again_continues_the_study_and_another_space_is_refused(sweep_run):
    workdir, out, first = sweep_run
    before = read_csv(out / "results.csv")
    again = run_main("sweep", *GRID, cwd=workdir)
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr[-2000:]
    assert read_csv(out / "results.csv") == before and len(list(out.glob("trial_*"))) == 2  # nothing trained again
    report = run_main("sweep", "--report", "--out", str(out), cwd=workdir)
    assert report.returncode == 0 and report.stdout == table_of(first.stdout) + "\n"
    for own in (GRID, ["--seeds", "0-29"]):  # the study's own options, all or some
        assert run_main("sweep", "--report", *own, "--out", str(out), cwd=workdir).stdout == report.stdout
    files = fingerprint(out)
    proc = run_main(*"sweep --report --hidden_sizes 5 --out".split(), str(out), cwd=workdir)  # never ignored
    one_error_line(proc, "searches another space (sampler grid, seeds ['0-29'], hidden_sizes [4, 8]")
    proc = run_main(*"sweep --hidden_sizes 5 --epochs 20 --seeds 0-29 --out".split(), str(out), cwd=workdir)
    one_error_line(proc, "searches another space (sampler grid, seeds ['0-29'], hidden_sizes [4, 8]")
    other = run_main("sweep", *GRID, "--out", str(out), "--storage", f"sqlite:///{workdir / 'other.db'}", cwd=workdir)
    one_error_line(other, f"{out} holds the sweep of study 'sweep' in sqlite:///")
    assert fingerprint(out) == files and not (workdir / "other.db").exists()


@pytest.mark.slow
def test_a_diverged_setting_is_ranked_last_and_pruning_stops_hopeless_trials(tmp_path):
    grid = "--hidden_sizes 4 8 --epochs 60 --lrs 0.01 0.5 --seeds 0-9 --pruner median --seed 0 --quiet"
    proc = run_main("sweep", *grid.split(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "lightning_logs" / "sweep_0"
    trials = study_in(out).trials
    # lr 0.5 kills every unit (val loss 243): behind the first two trials' median at epoch index 19, pruned there.
    for t in trials[2:]:
        if t.params["lr"] == 0.5:
            assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [19]
            assert t.intermediate_values[19] > statistics.median(s.intermediate_values[19] for s in trials[:2])
    assert all(t.state == TrialState.COMPLETE for t in trials if t.params["lr"] == 0.01)
    rows = read_csv(out / "results.csv")
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    assert pruned >= 1 and [r["state"] for r in rows] == ["COMPLETE"] * (4 - pruned) + ["PRUNED"] * pruned
    assert "pruned (val loss 243 when stopped)" in proc.stdout
    flat = [r for r in rows if r["lr"] == "0.5" and r["state"] == "COMPLETE"]  # ranked last of the completed
    assert all(float(r["all_dead_share"]) == 1.0 for r in flat)
    assert rows[len(rows) - pruned - len(flat) : len(rows) - pruned] == flat


@pytest.mark.slow
def test_tpe_is_reproducible_with_its_seed_and_a_journal_file_storage_works(tmp_path):
    tpe = "--sampler tpe --n_trials 1 --seed 3 --hidden_range 2 8 --lr_range 0.005 0.05 --log --epochs_range 20 60"
    args = [*tpe.split(), "--seeds", "0-4", "--pruner", "hyperband", "--quiet"]  # a lone trial: none to prune
    first = run_main("sweep", *args, "--out", "a", cwd=tmp_path)
    second = run_main("sweep", *args, *"--storage study.log --out b".split(), cwd=tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert table_of(first.stdout) == table_of(second.stdout)
    assert (tmp_path / "study.log").stat().st_size > 0 and not (tmp_path / "b" / "study.db").exists()
    (trial,) = study_in(tmp_path / "a").trials
    assert 2 <= trial.params["hidden_size"] <= 8 and 20 <= trial.params["epochs"] <= 60
    assert trial.state == TrialState.COMPLETE and trial.intermediate_values  # reported to the pruner
    report = run_main(*"sweep --storage study.log --report".split(), cwd=tmp_path)
    assert report.returncode == 0 and table_of(report.stdout) == table_of(second.stdout)


def _ended(pid: int) -> bool:
    """Gone, or a zombie its parent (the fork server) has not reaped yet."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def _workers_of(pid: int) -> list[int]:
    """The sweep's worker processes: the children of its multiprocessing fork server."""
    kids = lambda p: Path(f"/proc/{p}/task/{p}/children").read_text().split()  # noqa: E731
    server = [c for c in kids(pid) if b"forkserver" in Path(f"/proc/{c}/cmdline").read_bytes()]
    return [int(c) for s in server for c in kids(s)]


SLOW_GRID = "--hidden_sizes 4 8 --epochs 20 100 --seeds 0-199 --quiet".split()


@pytest.mark.slow
def test_workers_share_the_study_retry_a_killed_one_and_end_with_their_sweep(tmp_path):
    args = [*SLOW_GRID, *"--out w --heartbeat_interval 1".split()]
    proc = start("sweep", *args, "--workers", "2", cwd=tmp_path, start_new_session=True)
    started = lambda: list((tmp_path / "w" / "trial_1").glob("events.out.tfevents.*"))  # noqa: E731
    wait_for(lambda: started() and len(_workers_of(proc.pid)) == 2, proc, "the second trial, two workers")
    killed = int(started()[0].name.split(".")[-2])  # the event file's name holds its writer's pid: trial 1's worker
    (survivor,) = set(_workers_of(proc.pid)) - {killed}
    os.kill(killed, signal.SIGKILL)
    # Two settings, three trials: the survivor ends its own and, once the dead one's heartbeat is stale, runs its retry.
    wait_for(lambda: (tmp_path / "w" / "trial_2").is_dir(), proc, "the third trial")
    proc.kill()  # the parent alone, not its process group: its worker sees it end, and stops
    assert "Traceback" not in proc.communicate(timeout=120)[1]  # EOF once its fork server and worker are gone too
    wait_for(lambda: _ended(survivor), None, "the end of the worker whose sweep was killed")
    trials = study_in(tmp_path / "w").trials
    assert [t.state for t in trials].count(TrialState.RUNNING) == 0  # the dead one's and the running one marked failed
    (stale,) = [t for t in trials[:2] if t.state == TrialState.FAIL]
    assert stale.params in [t.params for t in trials[2:]]  # retried by the survivor
    done = signal_when(lambda: (tmp_path / "w" / "trial_3").is_dir(), signal.SIGTERM)
    stopped = run_main("sweep", *args, cwd=tmp_path)  # the retry again, stopped by SIGTERM
    done.set()
    last = stopped.stderr.strip().splitlines()[-1]
    assert stopped.returncode == 143 and last.startswith("interrupted by SIGTERM (the running trials"), last
    again = run_main("sweep", *args, cwd=tmp_path)  # one process finishes what the signals stopped
    uninterrupted = run_main("sweep", *SLOW_GRID, "--out", "ref", cwd=tmp_path)
    assert again.returncode == uninterrupted.returncode == 0, again.stderr[-2000:] + uninterrupted.stderr[-2000:]
    assert table_of(again.stdout) == table_of(uninterrupted.stdout)
    trained = [t.params["hidden_size"] for t in study_in(tmp_path / "w").trials if t.state == TrialState.COMPLETE]
    assert sorted(trained) == [4, 8]


@pytest.mark.slow
def test_a_storage_damaged_mid_sweep_is_one_line_exit_1(tmp_path):
    started = lambda: (tmp_path / "w" / "trial_0").is_dir()  # noqa: E731
    damage = lambda: wait_for(started, None, "a trial") or os.truncate(tmp_path / "w" / "study.db", 10_000)  # noqa: E731
    threading.Thread(target=damage, daemon=True).start()  # another process cutting the file while a trial trains
    proc = run_main(*"sweep --hidden_sizes 4 5 --epochs 20 300 --seeds 0-9 --quiet --out w".split(), cwd=tmp_path)
    one_error_line(proc, "the study's storage sqlite:///w/study.db failed during the sweep: ", code=1)


def test_names_masks_intervals_and_seed_ranges(capsys):
    assert capped(cores()) == cores() and capsys.readouterr().err == ""
    assert capped(10**6) == cores()
    assert f"--workers 1000000 capped at this machine's {cores()} cores" in capsys.readouterr().err
    assert mask(f"{PG}user:s3cret@db:5432/optuna") == f"{PG}user:***@db:5432/optuna"
    assert trial_name(5, 400, 0.01, 0) == "h5_e400_lr0.01_s0"
    assert setting_name({"hidden_size": 5, "lr": 0.01}) != setting_name({"hidden_size": 5, "lr": 0.0100001})  # repr
    mean, std, low, high = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert (mean, std) == (2.5, statistics.stdev([1.0, 2.0, 3.0, 4.0]))
    assert high - mean == pytest.approx(3.182 * std / 2)
    assert seed_ranges([0, 1, 2, 7, 9, 10]) == ["0-2", "7", "9-10"]
    config = build_parser().parse_string("seeds: [0, 1, 5-7]")  # a YAML list of numbers and ranges
    given = build_parser().parse_args(["--seeds", "0", "1", "5-7"])
    assert parse_seeds(config.seeds) == [0, 1, 5, 6, 7] == parse_seeds(given.seeds)


def test_an_unreachable_storage_is_one_line_with_the_password_masked(tmp_path):
    proc = run_main("sweep", "--storage", f"{PG}u:p@127.0.0.1:1/db", cwd=tmp_path)
    line = one_error_line(proc, f"cannot open the storage {PG}u:***@127.0.0.1:1/db: ")
    assert "Connection refused" in line and "port 1" in line and ":p@" not in line  # "psycopg" and "port" stay readable
