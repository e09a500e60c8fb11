"""Hostile but realistic input, found by probing (the hardening issue): endless and closed
inputs, pipes, byte-order marks, huge lines, stray files where run directories go, seeds out of
range, crafted checkpoint values. Every case ends at once with one line and exit 2 (or works),
and leaves every file as it was. In-process (fast tier), with a property test of the x parser.

Run: pytest tests/test_hardening.py
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import cli_command, fingerprint, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from regression_lab.cli import main
from regression_lab.commands.predict import MAX_LINE_CHARS, parse_number, read_inputs
from regression_lab.core.checkpoints import reserve_numbered_dir
from regression_lab.core.errors import FLOAT32_MAX, QUOTE_CHARS, UsageError


def main_with_stdin(stdin: object, *args: str, cwd: Path) -> tuple[int, str, str]:
    """``cli.main(args)`` with ``sys.stdin`` replaced by ``stdin`` (a stream, or None: closed)."""
    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_stdin = Path.cwd(), sys.stdin
    os.chdir(cwd)
    sys.stdin = stdin
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(old_cwd)
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def test_an_endless_input_ends_with_one_line(lab_ckpt, tmp_path):
    with open("/dev/zero", encoding="latin-1") as zeros:  # noqa: PTH123
        code, out, err = main_with_stdin(zeros, "predict", "--ckpt_path", str(lab_ckpt), "--input", "-", cwd=tmp_path)
    assert code == 2 and out == ""
    assert err == f"error: stdin line 1 is longer than {MAX_LINE_CHARS} characters: not an x value\n"


def test_a_closed_stdin_is_one_line(lab_ckpt, tmp_path):
    code, _, err = main_with_stdin(None, "predict", "--ckpt_path", str(lab_ckpt), "--input", "-", cwd=tmp_path)
    assert code == 2 and err == "error: --input -: standard input is closed, there is nothing to read\n"


def test_a_named_pipe_and_a_byte_order_mark_are_valid_inputs(lab_ckpt, tmp_path):
    plain = run_main("predict", "--ckpt_path", str(lab_ckpt), "--x", "10", "--x", "3", cwd=tmp_path)
    fifo = tmp_path / "xs.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("10\n3\n"))
    writer.start()
    piped = run_main("predict", "--ckpt_path", str(lab_ckpt), "--input", str(fifo), cwd=tmp_path)
    writer.join()
    assert piped.returncode == 0 and piped.stdout == plain.stdout
    (tmp_path / "sheet.csv").write_bytes("\ufeffx,y\n10,32\n3,11\n".encode())  # a spreadsheet's CSV
    bom = run_main("predict", "--ckpt_path", str(lab_ckpt), "--input", "sheet.csv", cwd=tmp_path)
    assert bom.returncode == 0 and bom.stdout == plain.stdout


def test_errors_quote_a_bad_value_briefly(lab_ckpt, tmp_path):
    (tmp_path / "bad.txt").write_text("10\n" + "z" * 900 + "\n")
    proc = run_main("predict", "--ckpt_path", str(lab_ckpt), "--input", "bad.txt", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"error: not a number in bad.txt line 2: '{'z' * QUOTE_CHARS}...'\n"


def test_a_stray_file_where_a_run_directory_goes_is_skipped_not_looped_on(tmp_path):
    (tmp_path / "version_0").write_text("not a run")
    (tmp_path / "version_2").write_text("nor this")
    (tmp_path / "version_1").mkdir()
    assert reserve_numbered_dir(tmp_path, "version_").name == "version_3"
    (tmp_path / "sweep_0").write_text("a file")
    assert reserve_numbered_dir(tmp_path, "sweep_").name == "sweep_1"
    with pytest.raises(UsageError, match="is not a directory"):
        reserve_numbered_dir(tmp_path / "version_0", "version_")


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--seed_everything", "-1"], "seed_everything must be in [0, 4294967295], got -1"),
        (["--seed_everything", "4294967296"], "seed_everything must be in [0, 4294967295], got 4294967296"),
        (["--data.num_samples", "1000000000"], "data.num_samples must be <= 100,000,000"),
        (["--checkpoint.dirpath", "a_file"], "--checkpoint.dirpath is a file, not a directory: a_file"),
    ],
)
def test_fit_refuses_out_of_range_settings_in_one_line(tmp_path, args, phrase):
    (tmp_path / "a_file").write_text("mine")
    before = fingerprint(tmp_path)
    proc = run_main("fit", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: {phrase}" or phrase in proc.stderr.strip().splitlines()[-1]
    assert fingerprint(tmp_path) == before


def test_a_checkpoint_whose_hidden_size_is_a_string_is_named_as_such(lab_ckpt, tmp_path):
    ckpt = torch.load(lab_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["hidden_size"] = "5"
    torch.save(ckpt, tmp_path / "crafted.ckpt")
    proc = run_main("predict", "--ckpt_path", "crafted.ckpt", "--x", "10", cwd=tmp_path)
    assert proc.returncode == 2
    assert "hyper_parameters.hidden_size is not an integer ('5')" in proc.stderr


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30)), max_size=20))
def test_the_input_parser_returns_exactly_the_finite_numbers_or_says_which_line(values):
    text = "\n".join(str(v) for v in values)
    lines = [line.strip() for line in text.split("\n")]
    try:
        got = read_inputs(io.StringIO(text), "in")
    except UsageError as err:
        message = str(err)
        assert "\n" not in message and len(message) < 200
        assert message.startswith(
            ("not a number in in line", "not a finite number in in line", "out of float32's range", "no x values in")
        )
        return
    # Accepted: one finite float per line that is not blank or a comment; the first such line
    # may instead be an "x" header.
    content = [line.split(",")[0].strip() for line in lines if line and not line.startswith("#")]
    kept = content[1:] if content and content[0].strip('"').lower() == "x" else content
    assert got == [float(v) for v in kept] and all(math.isfinite(v) for v in got)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=60), st.floats().map(repr), st.integers().map(str)))
def test_the_number_parser_accepts_exactly_the_finite_float32_values(text):
    try:
        value = parse_number(text, " in --x")
    except UsageError as err:
        message = str(err)
        assert "\n" not in message and len(message) <= 100 + QUOTE_CHARS
        assert message.startswith(("not a number in --x", "not a finite number in --x", "out of float32's range"))
        with contextlib.suppress(ValueError):  # a float Python reads: not finite, or past float32
            assert not (math.isfinite(float(text)) and abs(float(text)) <= FLOAT32_MAX)
        return
    assert value == float(text) and math.isfinite(value) and abs(value) <= FLOAT32_MAX


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(10**400), 10**400) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, st.fixed_dictionaries({"x": JSON}), st.fixed_dictionaries({"x": st.lists(JSON, max_size=8)})))
def test_the_request_parser_accepts_exactly_x_as_finite_numbers_or_says_what_is_wrong(body):
    from regression_lab.commands.serve_api import parse_x

    def number(v: object) -> bool:
        # A Python int compares exactly with a float, so a 400-digit one is simply too large.
        return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= FLOAT32_MAX

    x = body.get("x") if isinstance(body, dict) and set(body) == {"x"} else None
    valid = x is not None and (number(x) or (isinstance(x, list) and 0 < len(x) <= 4 and all(map(number, x))))
    try:
        xs, scalar = parse_x(body, max_items=4)
    except ValueError as err:
        assert not valid and "\n" not in str(err) and len(str(err)) < 200
        return
    assert valid and scalar == (not isinstance(x, list))
    assert xs == ([float(x)] if scalar else [float(v) for v in x])


def test_a_checkpoint_whose_tensor_expands_to_a_huge_shape_is_refused_before_it_grows(lab_ckpt, tmp_path):
    ckpt = torch.load(lab_ckpt, weights_only=True)
    # One stored value, viewed as a billion: a 12 kB file that would become 4 GB if copied.
    ckpt["state_dict"]["net.linear1.weight"] = torch.zeros(1, 1).expand(10**9, 1)
    torch.save(ckpt, tmp_path / "expanding.ckpt")
    assert (tmp_path / "expanding.ckpt").stat().st_size < 100_000
    proc = run_main("predict", "--ckpt_path", "expanding.ckpt", "--x", "10", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "error: checkpoint's hidden size 1,000,000,000 is outside [1, 10,000]: expanding.ckpt\n"


def test_a_hidden_size_over_the_limit_is_refused(tmp_path):
    proc = run_main("fit", "--model.hidden_size", "10001", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("hidden_size must be <= 10,000, got 10,001")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_fit_says_so_exits_128_plus_n_and_resumes(tmp_path, signum):
    proc = subprocess.Popen(
        [*cli_command(), "fit", "--trainer.max_epochs", "1000000", "--trainer.enable_progress_bar", "false",
         "--last_checkpoint.train_time_interval", "0:00:00.3"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-2000:]
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1].startswith(f"interrupted by {name} (the newest last.ckpt")
    assert "Traceback" not in err
    epoch = torch.load(last, weights_only=True)["epoch"]
    resumed = run_main("fit", "--ckpt_path", "last", "--trainer.max_epochs", str(epoch + 3),
                       "--trainer.enable_progress_bar", "false", "--last_checkpoint.train_time_interval",
                       "0:00:00.3", cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Model prediction for 10 is" in resumed.stdout


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_light_command_says_so_and_exits_128_plus_n(lab_ckpt, tmp_path, signum):
    # predict waits on a named pipe that is open and stays silent: the process is surely past
    # its start (its handlers are in place) once the pipe's writer end opens.
    fifo = tmp_path / "xs.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [*cli_command(), "predict", "--ckpt_path", str(lab_ckpt), "--input", str(fifo)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    with fifo.open("w") as writer:  # blocks until predict opens the pipe for reading
        writer.write("10\n")
        writer.flush()
        time.sleep(0.3)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-2000:]
    name = signal.Signals(signum).name
    assert err == f"interrupted by {name} (no file is written by predict: run it again)\n"
    assert out == ""


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--trainer.max_epochs", "3"], "has trained 6 epochs: --trainer.max_epochs must be >= 6 to resume it (now 3)"),
        (["--trainer.max_epochs", "9", "--model.hidden_size", "8"], "was trained with model.hidden_size=5"),
    ],
)
def test_a_rejected_resume_touches_nothing(tmp_path, args, phrase):
    from helpers import fit_in_process

    fit_in_process(tmp_path, "--trainer.max_epochs", "6")
    before = fingerprint(tmp_path)
    proc = run_main("fit", "--ckpt_path", "last", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert phrase in proc.stderr.strip().splitlines()[-1]
    assert fingerprint(tmp_path) == before  # config.yaml and the event files too


def test_predict_echoes_x_as_given_and_refuses_float32_overflow(lab_ckpt, tmp_path):
    proc = run_main("predict", "--ckpt_path", str(lab_ckpt), "--x", "1234567", "--x", "0.1000", cwd=tmp_path)
    assert proc.returncode == 0
    assert [line.split(",")[0] for line in proc.stdout.splitlines()] == ["x", "1234567", "0.1000"]
    for big in ("1e39", "-1e308"):
        proc = run_main("predict", "--ckpt_path", str(lab_ckpt), f"--x={big}", cwd=tmp_path)
        assert proc.returncode == 2 and f"out of float32's range (|x| <= 3.403e+38) in --x: '{big}'" in proc.stderr


def test_a_quoted_header_after_a_comment_is_a_header(lab_ckpt, tmp_path):
    plain = run_main("predict", "--ckpt_path", str(lab_ckpt), "--x", "10", cwd=tmp_path)
    proc = run_main("predict", "--ckpt_path", str(lab_ckpt), "--input", "-", cwd=tmp_path,
                    stdin='# exported by a spreadsheet\n"x","y"\n10,32\n')  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == plain.stdout


@pytest.mark.parametrize(
    "value, phrase",
    [
        (torch.full((5, 1), float("nan")), "holds NaN or infinite values"),
        (torch.ones(5, 1, dtype=torch.int64), "holds torch.int64 values, not real numbers"),
        (torch.ones(5, 1, dtype=torch.bool), "holds torch.bool values"),
        (torch.ones(5, 1, dtype=torch.complex64), "holds torch.complex64 values"),
    ],
)
def test_checkpoint_weights_must_be_finite_real_numbers(lab_ckpt, tmp_path, value, phrase):
    ckpt = torch.load(lab_ckpt, weights_only=True)
    ckpt["state_dict"]["net.linear1.weight"] = value
    torch.save(ckpt, tmp_path / "crafted.ckpt")
    before = fingerprint(tmp_path)
    for command in (
        ["predict", "--x", "10"],
        ["validate"],
        ["landscape", "--resolution", "5", "--out", "o"],
        ["export", "--format", "onnx", "--out", "m.onnx"],
    ):
        proc = run_main(*command, "--ckpt_path", "crafted.ckpt", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-500:]
        assert f"checkpoint's linear1.weight {phrase}" in proc.stderr
    assert fingerprint(tmp_path) == before


def test_written_files_follow_the_umask_like_config_yaml(tmp_path):
    from regression_lab.core.safe_io import atomic_write

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "results.csv", "w") as fh:
            fh.write("a\n")
        (tmp_path / "plain.txt").write_text("a\n")
    finally:
        os.umask(old)
    assert (tmp_path / "results.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644
