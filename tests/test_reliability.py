"""Reliability: resumes kept in their run, clean divergence, SIGKILL-safe checkpoints, a bit-identical resume, signals
ending every command in one line, and concurrent runs in their own directories. Run: pytest tests/test_reliability.py"""

import concurrent.futures
import contextlib
import os
import re
import signal
import subprocess
import threading
from dataclasses import asdict
from pathlib import Path

import optuna
import pytest
import torch
from helpers import LAST, RUN, fingerprint, fit_in_process, one_error_line, run_main, signal_when, start, wait_for

from regression_lab import errors
from regression_lab.cli import on_disk
from regression_lab.study import open_study
from regression_lab.sweep import StudySpec, resolve_out


def assert_checkpoints_whole(ckpt_dir: Path) -> list[Path]:
    """Every file under a final checkpoint name loads weights-only and holds finite weights."""
    for path in (files := sorted(ckpt_dir.glob("*.ckpt"))):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values()), path
    return files


@pytest.mark.parametrize("key", ["best_k_models", "best_model_path", "kth_best_model_path", "last_model_path", None])
def test_a_resume_never_follows_its_checkpoint_out_of_the_run(lab_ckpt, tmp_path, key):
    # Lightning removes the files a resumed ModelCheckpoint state names as it saves newer ones.
    (tmp_path / "victim").write_text("a file beside the run")
    (tmp_path / "victim_dir").mkdir()
    ckpt = torch.load(lab_ckpt, weights_only=True)
    for state in (s for s in ckpt["callbacks"].values() if key and "dirpath" in s):  # as written: it is restored
        outside = f"{state['dirpath']}/../../../victim" + ("_dir" if key == "last_model_path" else "")
        state[key] = {outside: torch.tensor(float("inf"))} if key == "best_k_models" else outside
    if key is None:  # saved with --checkpoint.save_weights_only true: nothing to resume
        del ckpt["optimizer_states"], ckpt["loops"]
    torch.save(ckpt, lab_ckpt)
    before = fingerprint(tmp_path)
    every_epoch = "--checkpoint.every_n_epochs 1 --trainer.check_val_every_n_epoch 1 --trainer.max_epochs 420"
    line = one_error_line(run_main("fit", "--ckpt_path", "last", *every_epoch.split(), cwd=tmp_path), "refusing")
    assert ("outside its checkpoint directory" if key else "holds no training state") in line
    assert fingerprint(tmp_path) == before and (tmp_path / "victim_dir").is_dir()


def test_divergence_stops_at_the_first_non_finite_loss_and_writes_no_bad_checkpoint(tmp_path):
    # Checkpoints every epoch, so a bad one would be written if anything let it through.
    every_epoch = "--checkpoint.every_n_epochs 1 --trainer.check_val_every_n_epoch 1 --checkpoint.save_top_k -1"
    proc = run_main("fit", *f"--model.lr 3.0 {every_epoch} --trainer.enable_progress_bar false".split(), cwd=tmp_path)
    line = one_error_line(proc, "training diverged: loss inf at epoch", code=1)
    assert line.endswith("lower --model.lr (now 3)") and "Model prediction" not in proc.stdout  # not the data
    epoch = int(line.split("at epoch ")[1].split(",")[0])
    assert len(assert_checkpoints_whole(tmp_path / RUN / "checkpoints")) >= epoch - 2


def _diverge_in_a_long_epoch(workdir: Path, every: int, *extra: str) -> str:
    """Train lr 3 over 200 batches an epoch, the guard reading its flag every ``every`` steps."""
    long_epoch = "--model.lr 3.0 --data.num_samples 2000 --data.batch_size 10 --trainer.log_every_n_steps"
    with pytest.raises(errors.TrainingFailed) as info:
        fit_in_process(workdir, *long_epoch.split(), str(every), *extra)
    return str(info.value)


def test_divergence_inside_a_long_epoch_is_caught_within_the_check_interval(tmp_path):
    exact = _diverge_in_a_long_epoch(tmp_path / "every_step", 1)  # the oracle: checked every step
    first_bad = int(re.search(r"at epoch 1, step (\d+);", exact)[1])  # the step itself: no "(finite up to step N)"
    message = _diverge_in_a_long_epoch(tmp_path / "every_7", 7)  # no host sync in between
    step, finite_up_to = map(int, re.search(r"at epoch 1, step (\d+) \(finite up to step (\d+)\);", message).groups())
    assert finite_up_to < first_bad <= step < first_bad + 7
    # last.ckpt due at every step: some save falls between the overflowing update and the next check, and refuses it.
    _diverge_in_a_long_epoch(tmp_path / "timed", 50, "--last_checkpoint.train_time_interval", "0:00:00")
    assert [f.name for f in assert_checkpoints_whole(tmp_path / "timed" / RUN / "checkpoints")] == ["last.ckpt"]


LONG_RUN = (
    "fit --trainer.max_epochs 1000000 --trainer.enable_progress_bar false "
    "--last_checkpoint.train_time_interval 0:00:00.05 --trainer.check_val_every_n_epoch 100"
).split()


def test_interrupted_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    shuffled = (
        "--data.num_samples 64 --data.batch_size 16 --data.shuffle true --data.noise_std 0.3 --model.momentum 0.9 "
        "--model.lr 0.003 --seed_everything 5 --trainer.check_val_every_n_epoch 5"
    ).split()
    straight = fit_in_process(tmp_path / "straight", *shuffled, "--trainer.max_epochs", "30")
    first = fit_in_process(tmp_path / "resumed", *shuffled, "--trainer.max_epochs", "13")
    initial = {k: v.clone() for k, v in first.model.initial_state.items()}
    resumed = fit_in_process(tmp_path / "resumed", *shuffled, *"--trainer.max_epochs 30 --ckpt_path last".split())
    assert resumed.trainer.global_step == straight.trainer.global_step == 30 * 4
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in straight.model.state_dict().items())
    ckpt = torch.load(tmp_path / "resumed" / LAST, weights_only=True)
    assert all(torch.equal(ckpt["initial_state_dict"][k], v) for k, v in initial.items())  # the first run's


def test_a_rejected_resume_touches_nothing(tmp_path):
    fit_in_process(tmp_path, "--trainer.max_epochs", "6")  # one run, each refusal checked against it untouched
    before = fingerprint(tmp_path)
    for args, phrase in [
        ("3", "has trained 6 epochs: --trainer.max_epochs must be >= 6 to resume it (now 3)"),
        ("9 --model.hidden_size 8", "was trained with model.hidden_size=5"),
        ("9 --checkpoint.monitor val/bogus", "'val/bogus' is not a metric this model logs"),
        ("9 --model.num_seeds 3", "was trained with model.num_seeds=1; --model.num_seeds 3 cannot change"),  # one MyNN
    ]:
        one_error_line(run_main(*f"fit --ckpt_path last --trainer.max_epochs {args}".split(), cwd=tmp_path), phrase)
        assert fingerprint(tmp_path) == before, args  # config.yaml and the event files too
    one_error_line(run_main("validate", "--model.seeds", "[1, 2]", cwd=tmp_path), "was trained with model.seeds=None")
    assert fingerprint(tmp_path) == before  # no run of its own either


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_fit_saves_its_last_checkpoint_says_so_and_resumes_that_run(tmp_path, signum):
    fit_in_process(tmp_path, "--trainer.max_epochs", "2")  # an older run, which the resume must not take
    run = tmp_path / "lightning_logs/version_1"
    every = ("--trajectory_every", "1")  # the weights after each epoch, in the run's trajectory.pt
    signal_when((run / "config.yaml").is_file, signum)  # the fit has begun; no timed save for an hour
    proc = run_main(*LONG_RUN, "--last_checkpoint.train_time_interval", "1:00:00", *every, cwd=tmp_path)
    assert proc.returncode == 128 + signum, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"interrupted by {signal.Signals(signum).name} ({on_disk('fit')})"
    epoch = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["epoch"]
    assert torch.load(run / "trajectory.pt", weights_only=True)["epochs"].tolist() == list(range(epoch + 1))
    resumed = fit_in_process(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs", str(epoch + 3), *every)
    assert Path(resumed.trainer.log_dir).name == "version_1" and resumed.trainer.current_epoch == epoch + 3
    assert torch.load(run / "trajectory.pt", weights_only=True)["epochs"].tolist() == list(range(epoch + 4))


def test_a_runs_config_yaml_given_as_config_trains_a_new_run_and_leaves_the_old_one_whole(tmp_path):
    fit_in_process(tmp_path, "--trainer.max_epochs", "6")
    before = fingerprint(tmp_path / RUN)
    again = fit_in_process(tmp_path, "--config", f"{RUN}/config.yaml")
    assert Path(again.trainer.log_dir).name == "version_1" and again.trainer.current_epoch == 6
    assert fingerprint(tmp_path / RUN) == before
    # A config.yaml written before this fix names its run: refused, not trained into.
    saved = (tmp_path / RUN / "config.yaml").read_text()
    (tmp_path / "old.yaml").write_text(saved.replace("version: null", "version: 0"))
    before = fingerprint(tmp_path)
    one_error_line(run_main("fit", "--config", "old.yaml", cwd=tmp_path), f"{RUN} holds a run, which a new fit would")
    assert fingerprint(tmp_path) == before
    quick = run_main("fit", "--ckpt_path", "last", "--trainer.fast_dev_run", "true", cwd=tmp_path)  # one epoch: <6
    one_error_line(quick, "You restored a checkpoint with current_epoch=6, but you have set Trainer(max_epochs=1)")
    assert fingerprint(tmp_path) == before
    # A resumed run's config.yaml starts a new run too (a resume of its 8 epochs would refuse max_epochs 4).
    fit_in_process(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs", "8")
    fresh = fit_in_process(tmp_path, "--config", "lightning_logs/version_1/config.yaml", "--trainer.max_epochs", "4")
    assert Path(fresh.trainer.log_dir).name == "version_2" and fresh.trainer.current_epoch == 4
    # Without a logger, Lightning writes config.yaml and checkpoints/ into the root directory: a second fit is refused.
    bare = ("fit", "--trainer.logger", "false", "--trainer.max_epochs", "2", "--trainer.default_root_dir", "bare")
    fit_in_process(tmp_path, *bare[1:])
    before = fingerprint(tmp_path)
    one_error_line(run_main(*bare, cwd=tmp_path), "bare holds a run, which a new fit would overwrite")
    assert fingerprint(tmp_path) == before


SIGNALLED = [  # a command reading a named pipe, what it says it left on disk
    ("predict --input", "predict wrote nothing that a rerun does not write again"),
    ("landscape --no_tensorboard --data_csv", "each --out file is whole or the previous one: run it again"),
    ("validate --data.csv", "validate wrote nothing that a rerun does not write again"),
    ("test --data.csv", "test wrote nothing that a rerun does not write again"),
]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("command, on_disk", SIGNALLED, ids=[c.split()[0] for c, _ in SIGNALLED])
def test_a_signalled_light_command_says_so_and_exits_128_plus_n(lab_ckpt, tmp_path, signum, command, on_disk):
    # Each waits on a named pipe that stays open and silent: signalled while it reads.
    fifo = tmp_path / "xs.fifo"
    os.mkfifo(fifo)
    opened, answered = threading.Event(), threading.Event()

    def writer() -> None:
        with fifo.open("w") as fh:  # blocks until the command opens the pipe for reading
            opened.set()
            print("1,5", file=fh, flush=True)
            answered.wait(120)  # open until the command has ended

    threading.Thread(target=writer, daemon=True).start()
    signal_when(opened.is_set, signum)
    proc = run_main(*command.split(), str(fifo), "--ckpt_path", str(lab_ckpt), cwd=tmp_path)
    answered.set()
    assert proc.returncode == 128 + signum and proc.stdout == "", proc.stderr
    assert proc.stderr == f"interrupted by {signal.Signals(signum).name} ({on_disk})\n"


def test_in_a_deferred_block_a_first_signal_waits_for_its_end_and_a_second_cuts_at_once():
    previous, reached = errors.handle_signals(), []
    try:  # a fit runs deferred: the first stops it at a batch end and saves; after a second, forced, nothing is saved
        with pytest.raises(errors.Interrupted, match="^SIGINT$"), errors.deferred():
            signal.raise_signal(signal.SIGTERM)
            reached.append(errors.forced())
            signal.raise_signal(signal.SIGINT)
            reached.append("after the second signal")
        assert reached == [False] and errors.forced()
    finally:
        errors.restore_signals(previous)


def _run_held_by(proc: subprocess.Popen) -> Path | None:
    """The run directory a fit process holds: its flock is on an open descriptor of that directory."""
    for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if re.search(r"/version_\d+$", target := os.readlink(fd)):
                return Path(target)
    return None


@pytest.mark.slow
def test_fits_started_together_keep_to_their_runs_refuse_a_resume_of_them_and_survive_sigkill(tmp_path):
    procs = [start(*LONG_RUN, "--checkpoint.every_n_epochs", "200", cwd=tmp_path) for _ in range(2)]
    try:
        # Two checkpoints in each run: both fits hold their run directory and are training.
        busy = lambda p: (run := _run_held_by(p)) is not None and len(list(run.glob("checkpoints/*.ckpt"))) >= 2  # noqa: E731
        for proc in procs:
            wait_for(lambda: busy(proc), proc, "two checkpoints")  # noqa: B023
        held = {_run_held_by(p).name: p for p in procs}
        assert sorted(held) == ["version_0", "version_1"]  # an atomic mkdir each
        # The newest run's last.ckpt, version_1's, is the one "last" resumes: refused while its fit holds it.
        before = fingerprint(tmp_path / "lightning_logs")
        second = run_main(*"fit --ckpt_path last --trainer.max_epochs 10000000".split(), cwd=tmp_path)
        one_error_line(second, "lightning_logs/version_1 is in use by another fit (training or resuming it now)")
        changed = {k for k, v in fingerprint(tmp_path / "lightning_logs").items() if before.get(k) != v}
        assert all(re.match(r"version_[01]/(checkpoints/|events\.out\.tfevents)", k) for k in changed), changed
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    held["version_1"].send_signal(signal.SIGKILL)
    held["version_0"].send_signal(signal.SIGTERM)
    err = held["version_0"].communicate(timeout=120)[1]
    held["version_1"].communicate(timeout=120)
    assert held["version_1"].returncode == -signal.SIGKILL and held["version_0"].returncode == 143, err[-2000:]
    for run in (tmp_path / "lightning_logs" / f"version_{i}" for i in range(2)):
        assert len(list(run.glob("events.out.tfevents.*"))) == 1 and (run / "config.yaml").is_file()
        assert run / "checkpoints" / "last.ckpt" in assert_checkpoints_whole(run / "checkpoints")
    # The kernel released the killed fit's flock: its run resumes, in place.
    step = torch.load(tmp_path / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)["global_step"]
    resumed = fit_in_process(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs", str(step + 20))
    assert resumed.trainer.global_step == step + 20
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0", "version_1"]


def test_identical_default_sweeps_started_together_choose_one_directory_and_one_study(tmp_path, monkeypatch):
    # Threads at a barrier: they race where processes would, in mkdir, flock and SQLite's schema creation.
    (spec := StudySpec(hidden_sizes=[4, 8], epochs=[20], seeds=["0-9"])).check()

    def start_sweep(barrier: threading.Barrier) -> Path:
        barrier.wait()
        out = resolve_out(None, spec)
        open_study(StudySpec(**{**asdict(spec), "out_dir": str(out), "storage": f"sqlite:///{out / 'study.db'}"}))
        return out

    for attempt in range(3):
        (tmp_path / str(attempt)).mkdir()
        monkeypatch.chdir(tmp_path / str(attempt))
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            assert list(pool.map(start_sweep, [threading.Barrier(3)] * 3)) == [Path("lightning_logs/sweep_0")] * 3
        assert [d.name for d in Path("lightning_logs").iterdir()] == ["sweep_0"]
        assert optuna.get_all_study_names("sqlite:///lightning_logs/sweep_0/study.db") == ["sweep"]
