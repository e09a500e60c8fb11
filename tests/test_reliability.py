"""Reliability and security: untrusted checkpoints, divergence, SIGKILL and resume,
reproducibility, concurrent runs, and bad input to every command. The CLI runs in-process
(fast tier) except where a real process must die or race (slow tier).

Run: pytest tests/test_reliability.py
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import cli_command, fingerprint, fit_in_process, run_main

from regression_lab.core.errors import TrainingFailed


def assert_checkpoints_whole(ckpt_dir: Path) -> list[Path]:
    """Every file under a final checkpoint name loads weights-only and holds finite weights."""
    files = sorted(ckpt_dir.glob("*.ckpt"))
    for path in files:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()), path
    return files


# --------------------------------------------------------------------------- untrusted checkpoints


class _Payload:
    """Unpickling this calls os.mkdir(marker): a stand-in for any code a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def evil_ckpt(lab_ckpt, tmp_path) -> tuple[Path, Path]:
    """A real lab checkpoint with a code-running object slipped in, and the marker it would create."""
    marker = tmp_path / "PWNED"
    ckpt = torch.load(lab_ckpt, map_location="cpu", weights_only=True)
    ckpt["callbacks"] = {"innocent": _Payload(marker)}
    path = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    torch.save(ckpt, path)
    # The payload is live: an unsafe load runs it.
    torch.load(path, weights_only=False)
    assert marker.is_dir()
    marker.rmdir()
    return path, marker


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "--x", "10", "--ckpt_path", "{ckpt}"],
        ["predict", "--x", "10"],  # the newest checkpoint is the crafted one
        ["landscape", "--ckpt_path", "{ckpt}", "--resolution", "5"],
        ["validate", "--ckpt_path", "{ckpt}"],
        ["test", "--ckpt_path", "{ckpt}"],
        ["fit", "--ckpt_path", "{ckpt}"],
        ["fit", "--ckpt_path", "last"],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(evil_ckpt, tmp_path, args):
    path, marker = evil_ckpt
    before = fingerprint(tmp_path / "lightning_logs")
    proc = run_main(*(a.format(ckpt=path) for a in args), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refusing to load" in proc.stderr and "posix.mkdir" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()
    assert fingerprint(tmp_path / "lightning_logs") == before


# --------------------------------------------------------------------------- divergence


def test_divergence_stops_at_the_first_non_finite_loss_and_writes_no_bad_checkpoint(tmp_path):
    # Checkpoints every epoch, so a bad one would be written if anything let it through.
    proc = run_main(
        "fit", "--model.lr", "3.0", "--checkpoint.every_n_epochs", "1", "--trainer.check_val_every_n_epoch", "1",
        "--checkpoint.save_top_k", "-1", "--trainer.enable_progress_bar", "false", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "training diverged: loss inf at epoch" in errors[0] and "lower --model.lr (now 3)" in errors[0]
    epoch = int(errors[0].split("at epoch ")[1].split(",")[0])
    files = assert_checkpoints_whole(tmp_path / "lightning_logs" / "version_0" / "checkpoints")
    assert len(files) >= epoch - 2  # one per finite epoch, and last.ckpt
    assert "Model prediction" not in proc.stdout


def _diverge_in_a_long_epoch(workdir: Path, every: int) -> str:
    """Train lr 3 over 200 batches an epoch, the guard reading its flag every ``every`` steps."""
    workdir.mkdir()
    with pytest.raises(TrainingFailed) as info:
        fit_in_process(
            workdir, "--model.lr", "3.0", "--data.num_samples", "2000", "--data.batch_size", "10",
            "--trainer.log_every_n_steps", str(every),
        )  # fmt: skip
    return str(info.value)


def test_divergence_inside_a_long_epoch_is_caught_within_the_check_interval(tmp_path):
    # The oracle: the same run checked every step stops at the first non-finite loss.
    exact = _diverge_in_a_long_epoch(tmp_path / "every_step", 1)
    first_bad = int(exact.split(", step ")[1].split(";")[0])
    assert "(finite up to" not in exact and "epoch 1," in exact
    # Checked every 7th step (no host sync in between), it stops within 7 steps of that loss.
    message = _diverge_in_a_long_epoch(tmp_path / "every_7", 7)
    assert message.startswith("training diverged: loss ") and "lower --model.lr (now 3)" in message
    step = int(message.split(", step ")[1].split(" ")[0])
    finite_up_to = int(message.split("(finite up to step ")[1].split(")")[0])
    assert finite_up_to < first_bad <= step < first_bad + 7
    assert "epoch 1," in message  # caught inside the first epoch, not at its end
    for run in ("every_step", "every_7"):
        assert not (tmp_path / run / "lightning_logs" / "version_0" / "checkpoints").exists()


def test_timed_checkpoints_never_hold_non_finite_weights(tmp_path):
    # last.ckpt is due at every step (interval 0), so some save falls between the step whose
    # update overflowed and the next check of the loss: the save itself refuses it.
    with pytest.raises(TrainingFailed, match="training diverged: "):
        fit_in_process(
            tmp_path, "--model.lr", "3.0", "--data.num_samples", "2000", "--data.batch_size", "10",
            "--trainer.log_every_n_steps", "50", "--last_checkpoint.train_time_interval", "0:00:00",
        )  # fmt: skip
    files = assert_checkpoints_whole(tmp_path / "lightning_logs" / "version_0" / "checkpoints")
    assert [f.name for f in files] == ["last.ckpt"]
    assert torch.load(files[0], map_location="cpu", weights_only=True)["global_step"] >= 1


# --------------------------------------------------------------------------- crash and resume


LONG_RUN = [
    "fit", "--trainer.max_epochs", "1000000", "--trainer.enable_progress_bar", "false",
    "--last_checkpoint.train_time_interval", "0:00:00.05", "--checkpoint.every_n_epochs", "200",
    "--trainer.check_val_every_n_epoch", "100",
]  # fmt: skip


def kill_during_training(workdir: Path, after_s: float) -> Path:
    """Start a long fit, let it write last.ckpt a few times, SIGKILL it; return the run dir."""
    proc = subprocess.Popen([*cli_command(), *LONG_RUN], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = workdir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no last.ckpt within 120 s"
            time.sleep(0.02)
        time.sleep(after_s)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return last.parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.0, 0.37, 1.1])
def test_sigkill_leaves_loadable_checkpoints_and_the_run_resumes(tmp_path, after_s):
    random.seed(after_s)
    run = kill_during_training(tmp_path, after_s + random.random() * 0.05)
    files = assert_checkpoints_whole(run / "checkpoints")
    assert run / "checkpoints" / "last.ckpt" in files
    step = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert step >= 1
    epochs = step + 20  # one step per epoch here
    resumed = fit_in_process(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs", str(epochs))
    assert resumed.trainer.global_step == epochs
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == epochs


SHUFFLED = [
    "--data.num_samples", "64", "--data.batch_size", "16", "--data.shuffle", "true", "--data.noise_std", "0.3",
    "--model.momentum", "0.9", "--model.lr", "0.003", "--seed_everything", "5",
    "--trainer.check_val_every_n_epoch", "5",
]  # fmt: skip


def test_interrupted_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    straight = fit_in_process(tmp_path / "straight", *SHUFFLED, "--trainer.max_epochs", "30")
    first = fit_in_process(tmp_path / "resumed", *SHUFFLED, "--trainer.max_epochs", "13")
    initial = {k: v.clone() for k, v in first.model.initial_state.items()}
    resumed = fit_in_process(tmp_path / "resumed", *SHUFFLED, "--trainer.max_epochs", "30", "--ckpt_path", "last")
    assert resumed.trainer.global_step == straight.trainer.global_step == 30 * 4
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    # The weights before any training stay the first run's, for the landscape's interpolation.
    ckpt = torch.load(
        tmp_path / "resumed" / "lightning_logs/version_0/checkpoints/last.ckpt", map_location="cpu", weights_only=True
    )
    for key, value in initial.items():
        assert torch.equal(ckpt["initial_state_dict"][key], value)


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_checkpoints_and_the_seed_is_recorded(tmp_path):
    states = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        fit_in_process(tmp_path / name, *SHUFFLED, "--trainer.max_epochs", "7")
        run = tmp_path / name / "lightning_logs" / "version_0"
        states.append(
            torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        )
        assert yaml.safe_load((run / "hparams.yaml").read_text())["seed_everything"] == 5
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


# --------------------------------------------------------------------------- concurrent runs


@pytest.mark.slow
def test_two_runs_started_at_once_get_their_own_run_directories(tmp_path):
    args = ["fit", "--trainer.max_epochs", "40", "--trainer.enable_progress_bar", "false"]
    procs = [
        subprocess.Popen(
            [*cli_command(), *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    runs = sorted(p.name for p in (tmp_path / "lightning_logs").iterdir())
    assert runs == ["version_0", "version_1"]
    printed = sorted(line for out, _ in outs for line in out.splitlines() if line.startswith("Checkpoint:"))
    assert printed == [f"Checkpoint: ./lightning_logs/version_{i}/checkpoints/last.ckpt" for i in range(2)]
    for run in runs:
        d = tmp_path / "lightning_logs" / run
        assert len(list(d.glob("events.out.tfevents.*"))) == 1
        assert (d / "config.yaml").is_file()
        assert torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 40


# --------------------------------------------------------------------------- more bad input


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["fit", "--config", "missing.yaml"], "File does not exist"),
        (["fit", "--config", "."], "not a file"),
        (["fit", "--config", "bad.yaml"], "Problems parsing config"),
        (["fit", "--config", "unknown_key.yaml"], "does not accept option 'model.hidden_sizes'"),
        (["fit", "--config", "a_file"], "a --config file must be a YAML mapping of settings"),
        (["fit", "--data.batch_size", "0"], "batch_size must be an integer >= 1"),
        (["fit", "--data.x_min", "5", "--data.x_max", "1"], "x_min must be < data.x_max"),
        (["fit", "--model.momentum", "-1"], "momentum must be >= 0"),
        (["fit", "--trainer.logger.init_args.save_dir", "a_file"], "cannot write logs under a_file"),
        (["fit", "--trainer.accelerator", "tpu"], "missing package"),
        (["fit", "--weights_only", "false"], "--weights_only false is not allowed"),
        (["validate", "--ckpt_path", "."], "is a directory"),
        (["test", "--ckpt_path", "bad.yaml"], "not a readable checkpoint"),
    ],
)
def test_more_bad_input_is_one_line_exit_2(tmp_path, args, phrase):
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    (tmp_path / "unknown_key.yaml").write_text("model:\n  hidden_sizes: 4\n")
    (tmp_path / "a_file").write_text("")
    before = fingerprint(tmp_path)
    proc = run_main(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1500:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and phrase in errors[0], proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
    assert fingerprint(tmp_path) == before
    assert not (tmp_path / "lightning_logs").exists() or not any((tmp_path / "lightning_logs").iterdir())


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from regression_lab.core.safe_io import atomic_write

    target = tmp_path / "results.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temporary file left
    with atomic_write(target, "w") as fh:
        fh.write("new\n")
    assert target.read_text() == "new\n"


def test_checkpoints_are_written_through_the_atomic_writer(tmp_path):
    from regression_lab.lit.callbacks import AtomicCheckpointIO

    cli = fit_in_process(tmp_path, "--trainer.max_epochs", "3")
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    ckpt_dir = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]  # no temporary files left
