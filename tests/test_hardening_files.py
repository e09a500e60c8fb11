"""Hostile but realistic files (the hardening issues): YAML alias bombs and endless --config
files, checkpoints whose saved data settings are crafted, landscapes too fine to draw,
unwritable destinations, a --trainer.default_root_dir that must be honoured. In-process (fast
tier); every refusal is one line, exit 2, and leaves every file as it was.

Run: pytest tests/test_hardening_files.py
"""

from __future__ import annotations

import math
import os
import shutil
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fingerprint, run_main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from regression_lab.config_guard import MAX_CONFIG_BYTES, MAX_CONFIG_VALUES, expanded_size
from regression_lab.core.errors import UsageError
from regression_lab.core.landscape import MAX_LANDSCAPE_SAMPLES, training_samples
from regression_lab.core.landscape_plots import MAX_DRAWN_AXIS

BOMB = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)  # 9^10 = 3.5 billion strings once expanded, from 400 bytes


def one_line_refusal(proc, phrase: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and phrase in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_the_expanded_size_of_a_yaml_document_is_counted_without_expanding_it():
    import yaml

    assert expanded_size(yaml.safe_load("a: [1, 2]\nb: {c: 3}\n")) == 1 + (1 + 2) + (1 + 1)
    shared = yaml.safe_load("x: &x [1, 2, 3]\ny: [*x, *x]\n")
    assert expanded_size(shared) == 1 + 4 + (1 + 4 + 4)  # each use of x counts its 4 values
    with pytest.raises(UsageError, match=f"more than {MAX_CONFIG_VALUES:,} values"):
        expanded_size(yaml.safe_load(BOMB))
    with pytest.raises(UsageError, match="refers to itself"):
        expanded_size(yaml.safe_load("a: &a [1, *a]\n"))


@pytest.mark.parametrize("command", ["fit", "validate", "landscape", "sweep"])  # those with --config
def test_a_yaml_alias_bomb_in_config_is_refused_by_every_command(tmp_path, command):
    (tmp_path / "bomb.yaml").write_text(BOMB)
    before = fingerprint(tmp_path)
    proc = run_main(command, "--config", "bomb.yaml", cwd=tmp_path)
    one_line_refusal(proc, f"--config: the YAML expands to more than {MAX_CONFIG_VALUES:,} values")
    assert fingerprint(tmp_path) == before


def test_an_endless_or_giant_config_is_refused_and_a_piped_one_is_read(tmp_path):
    one_line_refusal(run_main("fit", "--config", "/dev/zero", cwd=tmp_path), f"goes on past {MAX_CONFIG_BYTES:,} bytes")
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(MAX_CONFIG_BYTES + 1)  # sparse: no disk used
    one_line_refusal(run_main("landscape", "--config", "big.yaml", cwd=tmp_path), "at most")
    # A named pipe (what <(...) gives) is a valid config, read up to the limit.
    fifo = tmp_path / "settings.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("resolution: 7\nw_points: 9\n"))
    writer.start()
    proc = run_main("landscape", f"--config={fifo}", "--no_tensorboard", "--out", "o", cwd=tmp_path)
    writer.join()
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "o" / "linear_2d.npz")["loss"].shape == (7, 7)
    assert len((tmp_path / "o" / "lab_1d.csv").read_text().splitlines()) == 1 + 9


def crafted(lab_ckpt: Path, tmp_path: Path, data: object) -> Path:
    ckpt = torch.load(lab_ckpt, weights_only=True)
    if isinstance(data, dict):
        ckpt["datamodule_hyper_parameters"] = {**ckpt["datamodule_hyper_parameters"], **data}
    else:
        ckpt["datamodule_hyper_parameters"] = data
    path = tmp_path / "crafted.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    "data, phrase",
    [
        ({"num_samples": 10**9}, "(saved data settings): data.num_samples must be <= 100,000,000"),
        ({"num_samples": "5"}, "(saved data settings): data.num_samples must be an integer >= 1, got '5'"),
        ({"x_min": "a"}, "(saved data settings): data.x_min must be a finite number, got 'a'"),
        ({"x_max": math.nan}, "(saved data settings): data.x_max must be a finite number, got nan"),
        ({"x_min": 9.0, "x_max": 1.0}, "data.x_min must be < data.x_max"),
        ({"noise_std": -1.0}, "data.noise_std must be >= 0"),
        ({"seed": -3}, "data.seed must be an integer >= 0"),
        ({"slope": 1e30, "x_max": 1e10}, "give samples beyond float32's range 3.4e+38 (about 1e+40)"),
        ([1, 2], "the saved data settings are a list, not a mapping"),
    ],
)
def test_landscape_checks_a_checkpoints_data_settings_like_the_datamodule(lab_ckpt, tmp_path, data, phrase):
    path = crafted(lab_ckpt, tmp_path, data)
    before = fingerprint(tmp_path)
    one_line_refusal(run_main("landscape", "--ckpt_path", str(path), "--resolution", "5", cwd=tmp_path), phrase)
    assert fingerprint(tmp_path) == before


def test_a_checkpoint_trained_on_many_samples_gets_an_evenly_thinned_landscape():
    settings = {"num_samples": 1_000_001, "x_min": 0.0, "x_max": 1.0, "noise_std": 0.5, "seed": 4}
    x, y, note = training_samples(settings)
    stride = math.ceil(1_000_001 / MAX_LANDSCAPE_SAMPLES)  # 11
    assert len(x) == math.ceil(1_000_001 / stride) <= MAX_LANDSCAPE_SAMPLES
    assert float(x[0]) == 0.0 and float(x[1]) == pytest.approx(stride / 1_000_000)
    # The samples kept are exactly those of the whole set (noise included) at every stride-th index.
    from regression_lab.core.samples import line_split

    full_x, full_y = line_split(settings, "train")
    assert torch.equal(x, full_x[::stride]) and torch.equal(y, full_y[::stride])
    assert note == f"the run trained on 1,000,001 samples; the landscape uses every {stride}th ({len(x):,})"
    assert training_samples({})[2] == ""  # the lab's five points: all of them, no note


def test_a_landscape_finer_than_a_picture_is_drawn_thinned_and_kept_whole(lab_ckpt, tmp_path):
    ckpt = tmp_path / "alone.ckpt"  # outside a run: its events go to a new version_N under --logdir
    shutil.copy(lab_ckpt, ckpt)
    res = 2 * MAX_DRAWN_AXIS + 1
    proc = run_main(
        "landscape", "--ckpt_path", str(ckpt), "--resolution", str(res), "--out", "o", "--logdir", "tb", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert f"the figures and 3D meshes show {MAX_DRAWN_AXIS} of the {res} points per axis" in proc.stderr
    assert np.load(tmp_path / "o" / "linear_2d.npz")["loss"].shape == (res, res)
    (events,) = (tmp_path / "tb" / "version_0").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    vertices = acc.Tensors("landscape/linear_2d_surface_VERTEX")[0].tensor_proto
    assert [d.size for d in vertices.tensor_shape.dim] == [1, MAX_DRAWN_AXIS**2, 3]
    # The summaries still come from every point: the grid minimum is the least-squares line.
    assert acc.Scalars("landscape/linear_2d/argmin_w")[0].value == pytest.approx(3.0, abs=4 / (res - 1))


def test_a_landscape_destination_that_cannot_be_written_is_refused_before_the_work(lab_ckpt, tmp_path):
    (tmp_path / "o" / "lab_1d.csv").mkdir(parents=True)  # a directory where a result file goes
    before = fingerprint(tmp_path)
    proc = run_main("landscape", "--ckpt_path", str(lab_ckpt), "--resolution", "5", "--out", "o", cwd=tmp_path)
    one_line_refusal(proc, "cannot write the results in --out o: Is a directory (o/lab_1d.csv)")
    (tmp_path / "afile").write_text("mine")
    before = fingerprint(tmp_path)
    proc = run_main("landscape", "--resolution", "5", "--out", "afile/o", "--no_tensorboard", cwd=tmp_path)
    one_line_refusal(proc, "--out afile/o: afile is a file, not a directory")
    assert fingerprint(tmp_path) == before


def read_only_directory() -> Path | None:
    """A directory no file can be created in, even by root (sysfs), or None on this machine."""
    candidate = Path("/sys/kernel")
    try:
        (candidate / "regression-lab-probe").touch()
    except OSError:
        return candidate
    return None


def test_read_only_destinations_are_one_line(tmp_path):
    ro = read_only_directory()
    if ro is None:
        pytest.skip("no read-only directory on this machine")
    proc = run_main("landscape", "--resolution", "5", "--out", str(ro), "--no_tensorboard", cwd=tmp_path)
    one_line_refusal(proc, f"cannot write --out in {ro}")
    proc = run_main("landscape", "--resolution", "5", "--logdir", str(ro / "runs"), cwd=tmp_path)
    one_line_refusal(proc, f"cannot write TensorBoard events in {ro}")
    proc = run_main("fit", "--trainer.default_root_dir", str(ro), cwd=tmp_path)
    one_line_refusal(proc, f"cannot write logs under {ro}/lightning_logs")
    assert not (tmp_path / "lightning_logs").exists()


def test_default_root_dir_is_honoured_like_lightnings_default_logger(tmp_path):
    proc = run_main(
        "fit", "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", "runs", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "lightning_logs" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and list(run.glob("events.out.tfevents.*"))
    assert not (tmp_path / "lightning_logs").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    # Resume and evaluation find the newest run there too.
    resumed = run_main(
        "fit", "--trainer.max_epochs", "5", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", "runs", "--ckpt_path", "last", cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 5
    (tmp_path / "afile").write_text("mine")
    before = fingerprint(tmp_path)
    proc = run_main("fit", "--trainer.default_root_dir", "afile", cwd=tmp_path)
    one_line_refusal(proc, "cannot write logs under afile/lightning_logs: Not a directory")
    assert fingerprint(tmp_path) == before
    assert stat.S_ISREG((tmp_path / "afile").stat().st_mode)


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--data.noise_std", "1e308"], "error: the data settings give samples beyond float32's range 3.4e+38: scale"),
        (
            ["--data.x_max", "1e39"],
            "error: the data settings give samples beyond float32's range 3.4e+38 (about 3e+39)",
        ),
    ],
)
def test_data_beyond_float32_are_refused_before_anything_is_written(tmp_path, args, phrase):
    proc = run_main("fit", *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(phrase), proc.stderr[-1000:]
    assert fingerprint(tmp_path) == {}


@pytest.mark.parametrize(
    "args, code, advice",
    [
        # Squares past float32: no learning rate helps, and the advice says so.
        (["--data.x_max", "1e20"], 1, "the training data reach about 3e+20, whose squares overflow float32 whatever"),
        (["--data.slope", "1e30"], 1, "the training data reach about 5e+30, whose squares overflow float32 whatever"),
        (["--data.x_max", "1e20", "--model.num_seeds", "3"], 1, "the training data reach about 3e+20"),
        # Large data kill every ReLU unit within a few steps: both causes are named.
        (["--data.x_max", "100"], 0, "lower --model.lr (now 0.01), or scale the data down"),
        # The lab's data: the learning rate alone.
        (["--model.lr", "3"], 1, "lower --model.lr (now 3)"),
    ],
)
def test_divergence_advice_names_the_actual_cause(tmp_path, args, code, advice):
    proc = run_main("fit", *args, "--trainer.max_epochs", "40", "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == code and advice in last, proc.stderr[-1000:]
    assert ("diverged" if code else "every hidden ReLU unit is off") in last
    if "squares overflow" in advice:
        assert "lower --model.lr" not in last
    if advice == "lower --model.lr (now 3)":  # the lab's data are small: not named
        assert "scale the data" not in last


def test_a_named_pipe_or_a_symlink_as_the_destination_is_written_through_not_replaced(lab_ckpt, tmp_path):
    # Renaming a finished file over --out would turn a pipe (or /dev/null, as root) into a
    # plain file, and a symlink into a file beside its target.
    plain = tmp_path / "plain.onnx"
    assert run_main("export", "--ckpt_path", str(lab_ckpt), "--format", "onnx", "--out", str(plain),
                    cwd=tmp_path).returncode == 0  # fmt: skip
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    proc = run_main("export", "--ckpt_path", str(lab_ckpt), "--format", "onnx", "--out", str(fifo), cwd=tmp_path)
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and received == [plain.read_bytes()]
    target = tmp_path / "models" / "m.onnx"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "current.onnx"
    link.symlink_to(target)
    proc = run_main("export", "--ckpt_path", str(lab_ckpt), "--format", "onnx", "--out", str(link), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and target.read_bytes() == plain.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.onnx"]
