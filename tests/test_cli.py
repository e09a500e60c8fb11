"""The command line: the README's main job end to end as a subprocess (slow tier); predict,
configs, overrides and the bad-input table in-process through ``cli.main`` (fast tier).

Run: pytest tests/test_cli.py            (pytest -m "not slow" tests/test_cli.py for the fast part)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, fingerprint, fit_in_process, run_cli, run_main


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`regression-lab fit` with no arguments, in a fresh directory: the README's main job."""
    workdir = tmp_path_factory.mktemp("cli_run")
    return workdir, run_cli("fit", cwd=workdir)


@pytest.mark.slow
def test_fit_with_no_arguments_trains_the_lab_and_reports(cli_run):
    workdir, proc = cli_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    pred_line = next(line for line in lines if line.startswith("Model prediction for 10 is "))
    assert abs(float(pred_line.rsplit(" ", 1)[1]) - 32.0) < 0.05
    ckpt_line = next(line for line in lines if line.startswith("Checkpoint: "))
    ckpt = workdir / ckpt_line.removeprefix("Checkpoint: ")
    assert ckpt.is_file() and ckpt.name == "last.ckpt"
    assert ckpt.parent == workdir / "lightning_logs" / "version_0" / "checkpoints"
    assert (workdir / "lightning_logs" / "version_0" / "config.yaml").is_file()
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_predict_uses_the_newest_checkpoint_and_prints_csv(cli_run):
    workdir, fit = cli_run
    printed = float(
        next(line for line in fit.stdout.splitlines() if line.startswith("Model prediction")).rsplit(" ", 1)[1]
    )
    proc = run_cli("predict", "--x", "10", "--x", "11", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(",") for line in proc.stdout.strip().splitlines()]
    assert rows[0] == ["x", "prediction"]
    assert [r[0] for r in rows[1:]] == ["10", "11"]
    assert float(rows[1][1]) == pytest.approx(printed, abs=1e-4)
    assert abs(float(rows[2][1]) - 35.0) < 0.1


def test_predict_reads_a_file_or_stdin_and_agrees_with_torch_load(lab_ckpt, tmp_path):
    ckpt = lab_ckpt
    inputs = tmp_path / "xs.csv"
    inputs.write_text("x\n1\n# a comment\n\n2.5\n10\n")
    from_file = run_main("predict", "--ckpt_path", str(ckpt), "--input", str(inputs), cwd=tmp_path)
    from_stdin = run_main("predict", "--ckpt_path", str(ckpt), "--input", "-", cwd=tmp_path, stdin="1\n2.5\n10\n")
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_file.stderr + from_stdin.stderr
    assert from_file.stdout == from_stdin.stdout
    preds = [float(line.split(",")[1]) for line in from_file.stdout.strip().splitlines()[1:]]
    # The oracle: the checkpoint's own weights, computed by hand.
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    x = torch.tensor([[1.0], [2.5], [10.0]])
    hidden = torch.relu(x @ sd["net.linear1.weight"].T + sd["net.linear1.bias"])
    expected = (hidden @ sd["net.linear2.weight"].T + sd["net.linear2.bias"]).flatten().tolist()
    assert preds == pytest.approx(expected, abs=1e-5)
    assert preds[0] == pytest.approx(5.0, abs=0.05) and preds[1] == pytest.approx(9.5, abs=0.05)


@pytest.mark.parametrize(
    "args", [["predict", "--x", "10"], ["landscape", "--resolution", "5", "--no_tensorboard"]], ids=lambda a: a[0]
)
def test_light_commands_do_not_import_lightning(lab_ckpt, args):
    workdir = lab_ckpt.parents[3]
    code = (
        "import sys, io, contextlib; from regression_lab.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()): rc = main({args!r})\n"
        "assert rc == 0, rc; bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]\n"
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_default_yaml_is_the_default_config(tmp_path):
    plain = run_main("fit", "--print_config", cwd=tmp_path)
    with_file = run_main("fit", "--config", str(REPO / "configs" / "default.yaml"), "--print_config", cwd=tmp_path)
    assert plain.returncode == 0 and with_file.returncode == 0, plain.stderr + with_file.stderr
    config = yaml.safe_load(plain.stdout)
    assert config == yaml.safe_load(with_file.stdout)
    assert config["model"]["hidden_size"] == 5 and config["model"]["lr"] == 0.01
    assert config["trainer"]["max_epochs"] == 400 and config["trainer"]["accelerator"] == "auto"
    assert config["data"]["batch_size"] is None
    assert not (tmp_path / "lightning_logs").exists()


def test_overrides_change_the_model(tmp_path):
    cli = fit_in_process(tmp_path, "--model.hidden_size", "8", "--trainer.max_epochs", "10")
    assert cli.model.net.linear1.out_features == 8
    assert cli.trainer.current_epoch == 10
    ckpt = torch.load(
        tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", map_location="cpu", weights_only=True
    )
    assert ckpt["hyper_parameters"]["hidden_size"] == 8


@pytest.fixture(scope="module")
def bad_input_dir(tmp_path_factory, lab_run) -> Path:
    """A directory with a trained run and assorted bad files, for the bad-input table."""
    workdir = tmp_path_factory.mktemp("bad_input")
    lab_dir, _ = lab_run
    shutil.copytree(lab_dir / "lightning_logs", workdir / "lightning_logs")
    good = workdir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    (workdir / "empty.ckpt").write_bytes(b"")
    (workdir / "text.ckpt").write_text("not a checkpoint\n")
    (workdir / "truncated.ckpt").write_bytes(good.read_bytes()[:2000])
    (workdir / "a_dir.ckpt").mkdir()
    torch.save({"state_dict": {"net.linear1.weight": torch.zeros(4, 2)}}, workdir / "other_shape.ckpt")
    torch.save({"weights": torch.zeros(3)}, workdir / "no_state.ckpt")
    (workdir / "xs_bad.txt").write_text("1\nabc\n")
    (workdir / "xs_empty.txt").write_text("# nothing\n")
    return workdir


BAD_INPUT = [
    # (arguments, a phrase the one-line error must contain)
    (["predict", "--x", "abc"], "not a number"),
    (["predict", "--x", "nan"], "not a finite number"),
    (["predict", "--x", "inf"], "not a finite number"),
    (["predict"], "one of the arguments --x --input is required"),
    (["predict", "--x", "1", "--ckpt_path", "missing.ckpt"], "checkpoint not found"),
    (["predict", "--x", "1", "--ckpt_path", "a_dir.ckpt"], "is a directory"),
    (["predict", "--x", "1", "--ckpt_path", "empty.ckpt"], "empty"),
    (["predict", "--x", "1", "--ckpt_path", "text.ckpt"], "not a readable checkpoint"),
    (["predict", "--x", "1", "--ckpt_path", "truncated.ckpt"], "not a readable checkpoint"),
    (["predict", "--x", "1", "--ckpt_path", "other_shape.ckpt"], "not a regression-lab MyNN checkpoint"),
    (["predict", "--x", "1", "--ckpt_path", "no_state.ckpt"], "no state_dict"),
    (["predict", "--input", "xs_bad.txt"], "line 2"),
    (["predict", "--input", "xs_empty.txt"], "no x values"),
    (["predict", "--input", "missing.txt"], "input file not found"),
    (["predict", "--x", "1", "--bogus"], "unrecognized arguments: --bogus"),
    (["fit", "--model.hidden_size", "0"], "hidden_size must be an integer >= 1"),
    (["fit", "--model.hidden_size", "abc"], "model.hidden_size"),
    (["fit", "--model.lr", "0"], "lr must be > 0"),
    (["fit", "--model.lr", "-0.1"], "lr must be > 0"),
    (["fit", "--model.lr", "nan"], "model.lr"),
    (["fit", "--model.lr", "inf"], "model.lr"),
    (["fit", "--model.lr", "1e999"], "lr must be a finite number"),
    (["fit", "--trainer.max_epochs", "0"], "max_epochs must be >= 1"),
    (["fit", "--data.num_samples", "0"], "num_samples"),
    (["fit", "--data.noise_std", "-1"], "noise_std must be >= 0"),
    (["fit", "--bogus", "1"], "unrecognized arguments"),
    (["fit", "--ckpt_path", "missing.ckpt"], "checkpoint not found"),
    (["fit", "--ckpt_path", "text.ckpt"], "not a readable checkpoint"),
    (["validate", "--ckpt_path", "truncated.ckpt"], "not a readable checkpoint"),
    (["test", "--ckpt_path", "other_shape.ckpt"], "not a regression-lab MyNN checkpoint"),
    (["frobnicate"], "unknown command"),
]


@pytest.mark.parametrize("args, phrase", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_gives_one_line_and_exit_2_and_touches_nothing(bad_input_dir, args, phrase):
    before = fingerprint(bad_input_dir)
    proc = run_main(*args, cwd=bad_input_dir)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert phrase in errors[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert fingerprint(bad_input_dir) == before


def test_resume_without_any_run_is_a_usage_error(tmp_path):
    proc = run_main("fit", "--ckpt_path", "last", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no last.ckpt found" in proc.stderr and "Traceback" not in proc.stderr
