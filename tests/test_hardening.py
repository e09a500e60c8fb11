"""Hostile but realistic input: endless, closed and odd inputs, numbers past float32, crafted checkpoints, YAML bombs,
unwritable destinations, devices and links as outputs; each refusal one line; the parsers property-tested.
Run: pytest tests/test_hardening.py"""

import contextlib
import io
import json
import math
import os
import resource
import signal
import stat
import threading
from pathlib import Path

import pytest
import torch
from helpers import LAST, RUN, edited, fingerprint, fit_in_process, one_error_line, put, run_main
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from regression_lab import csvfile, predict
from regression_lab.checkpoint import INITIAL_STATE_KEY
from regression_lab.errors import FLOAT32_MAX, QUOTE_CHARS, UsageError
from regression_lab.files import atomic_write, reserve_numbered_dir
from regression_lab.predict import MAX_LINE_CHARS, parse_number, read_inputs
from regression_lab.serve import PredictRequest


@contextlib.contextmanager
def piped(fifo: Path, other_end):
    """A named pipe at ``fifo``, ``other_end(fifo)`` (its writer or reader) in a thread joined as the block ends."""
    os.mkfifo(fifo)
    thread = threading.Thread(target=other_end, args=(fifo,), daemon=True)  # daemon: a failed test does not hang
    thread.start()
    yield fifo
    thread.join(timeout=60)


def test_endless_closed_piped_and_spreadsheet_inputs(lab_ckpt, tmp_path):
    ckpt = ["predict", "--ckpt_path", str(lab_ckpt)]
    with open("/dev/zero", encoding="latin-1") as zeros:  # noqa: PTH123
        proc = run_main(*ckpt, "--input", "-", cwd=tmp_path, stdin=zeros)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: stdin line 1 is longer than {MAX_LINE_CHARS:,} characters: not a row of numbers\n"
    proc = run_main(*ckpt, "--input", "-", cwd=tmp_path, stdin=None)
    assert proc.stderr == "error: --input -: standard input is closed, there is nothing to read\n"
    plain = run_main(*ckpt, *"--x 10 --x 3".split(), cwd=tmp_path)
    with piped(tmp_path / "xs.fifo", lambda fifo: fifo.write_text("10\n3\n")) as fifo:
        assert run_main(*ckpt, "--input", str(fifo), cwd=tmp_path).stdout == plain.stdout
    (tmp_path / "sheet.csv").write_bytes('\ufeff# exported by a spreadsheet\n"x","y"\n10,32\n3,11\n'.encode())
    assert run_main(*ckpt, "--input", "sheet.csv", cwd=tmp_path).stdout == plain.stdout
    (tmp_path / "named.csv").write_text("load_kg,extension_cm\n10,6.7\n3,2.1\n")  # a --data.csv file's header
    assert run_main(*ckpt, "--input", "named.csv", cwd=tmp_path).stdout == plain.stdout
    (tmp_path / "yx.csv").write_text("id,y,X\n1,32,10\n2,11,3\n")  # x by its header, as --data.csv's
    assert run_main(*ckpt, "--input", "yx.csv", cwd=tmp_path).stdout == plain.stdout
    (tmp_path / "bad.txt").write_text("10\n" + "z" * 900 + "\n")
    bad = run_main(*ckpt, "--input", "bad.txt", cwd=tmp_path).stderr
    assert bad == f"error: not a number in bad.txt line 2: '{'z' * QUOTE_CHARS}...'\n"
    echoed = run_main(*ckpt, *"--x 1234567 --x 0.1000".split(), cwd=tmp_path)
    assert [line.split(",")[0] for line in echoed.stdout.splitlines()] == ["x", "1234567", "0.1000"]


def test_an_input_or_data_file_past_its_row_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "MAX_INPUT_VALUES", 3)
    monkeypatch.setattr(csvfile, "MAX_ROWS", 3)
    assert read_inputs(io.StringIO("x\n1\n2\n3\n"), "stdin") == [1.0, 2.0, 3.0]  # the header is no value
    with pytest.raises(UsageError, match="^stdin holds more than 3 x values$"):
        read_inputs(io.StringIO("1\n2\n3\n4\n"), "stdin")
    (tmp_path / "d.csv").write_text("x,y\n1,5\n2,8\n3,11\n")
    assert csvfile.read_xy(tmp_path / "d.csv")[0].flatten().tolist() == [1.0, 2.0, 3.0]
    (tmp_path / "d.csv").write_text("x,y\n1,5\n2,8\n3,11\n4,14\n")
    with pytest.raises(UsageError, match="d.csv holds more than 3 rows$"):
        csvfile.read_xy(tmp_path / "d.csv")


def test_a_stray_file_where_a_run_directory_goes_is_skipped(tmp_path):
    (tmp_path / "version_0").write_text("not a run")
    (tmp_path / "version_2").write_text("nor this")
    (tmp_path / "version_1").mkdir()
    assert reserve_numbered_dir(tmp_path).name == "version_3"
    with pytest.raises(UsageError, match="is not a directory"):
        reserve_numbered_dir(tmp_path / "version_0")


class Payload:
    """Unpickling this calls os.mkdir("PWNED") where it is read: a stand-in for any code a crafted file could run."""

    def __reduce__(self):
        return (os.mkdir, ("PWNED",))


W1 = "net.linear1.weight"
CRAFTED = [
    (put(W1, torch.full((5, 1), math.nan)), "checkpoint's linear1.weight holds NaN or infinite values"),
    (put(W1, torch.ones(5, 1, dtype=torch.int64)), "linear1.weight holds torch.int64 values, not real numbers"),
    (put(W1, torch.ones(5, 1, dtype=torch.complex64)), "holds torch.complex64 values"),
    (put("net.linear2.bias", torch.ones(3)), "checkpoint's linear2.bias has shape (3,), not (1,)"),
    # One stored value viewed as a billion: a 12 kB file that would be 4 GB if copied.
    (put(W1, torch.zeros(1, 1).expand(10**9, 1)), "hidden size 1,000,000,000 is outside [1, 10,000]"),
    (lambda c: c["hyper_parameters"].update(hidden_size="5"), "hyper_parameters.hidden_size is not an integer ('5')"),
    (lambda c: c.__setitem__("hyper_parameters", [1, 2]), "hyper_parameters are a list, not a mapping"),
    (put(3, torch.zeros(1)), "has keys that are not names"), (put("evil", torch.ones(1)), "keys its model has not"),
    (lambda c: c["hyper_parameters"].pop("hidden_size"), "hyper_parameters.hidden_size is missing"),
    (lambda c: c[INITIAL_STATE_KEY].__setitem__("linear2.bias", torch.ones(3)), "initial_state_dict.linear2.bias has"),
    (lambda c: c.__setitem__("callbacks", {"innocent": Payload()}), "refusing to load crafted.ckpt: it holds an object "
     "of type posix.mkdir that a weights-only load does not allow"),  # never unpickled: PWNED never appears
]  # fmt: skip


@pytest.mark.parametrize("edit, phrase", CRAFTED, ids=[p for _, p in CRAFTED])
def test_crafted_checkpoint_values_are_refused_by_every_reader(lab_ckpt, tmp_path, edit, phrase, monkeypatch):
    path = edited(lab_ckpt, tmp_path / "crafted.ckpt", edit)
    assert path.stat().st_size < 100_000
    monkeypatch.chdir(tmp_path)
    torch.load(path, weights_only=False)  # an unsafe load runs a payload (it is live); the readers below never do
    assert Path("PWNED").is_dir() == ("posix.mkdir" in phrase)
    with contextlib.suppress(FileNotFoundError):
        Path("PWNED").rmdir()
    before = fingerprint(tmp_path)
    for command in (["predict", "--x", "10"], ["validate"], ["test"], ["fit"], ["serve"], ["landscape", "--out", "o"],
                    "export --format onnx --out m.onnx".split()):  # fmt: skip
        one_error_line(run_main(*command, "--ckpt_path", "crafted.ckpt", cwd=tmp_path), phrase)
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("edit", [lambda c: c.pop("pytorch-lightning_version"), lambda c: c.__setitem__("loops", "x")])
def test_validate_and_test_refuse_a_checkpoint_without_lightnings_bookkeeping(lab_ckpt, tmp_path, edit):
    path = edited(lab_ckpt, tmp_path / "crafted.ckpt", edit)
    one_error_line(run_main("validate", "--ckpt_path", str(path), cwd=tmp_path), "lacks Lightning's bookkeeping")
    assert run_main("predict", "--x", "10", "--ckpt_path", str(path), cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("data, phrase", [
    ({"num_samples": 10**9}, "(saved data settings): data.num_samples must be <= 100,000,000"),
    ({"num_samples": "5"}, "(saved data settings): data.num_samples must be an integer >= 1, got '5'"),
    ({"x_max": math.nan}, "data.x_max must be a finite number, got nan"),
    ({"slope": 1e30, "x_max": 1e10}, "give samples beyond float32's range 3.4e+38 (about 1e+40)"),
    ({"bogus": 1}, "unexpected keyword argument 'bogus'"),
    ([1, 2], "the saved data settings are a list, not a mapping"),
])  # fmt: skip
def test_landscape_checks_a_checkpoints_data_settings_as_the_datamodule_does(lab_ckpt, tmp_path, data, phrase):
    def edit(ckpt):
        saved = ckpt["datamodule_hyper_parameters"]
        ckpt["datamodule_hyper_parameters"] = {**saved, **data} if isinstance(data, dict) else data

    path = edited(lab_ckpt, tmp_path / "crafted.ckpt", edit)
    before = fingerprint(tmp_path)
    one_error_line(run_main("landscape", "--ckpt_path", str(path), "--resolution", "5", cwd=tmp_path), phrase)
    assert fingerprint(tmp_path) == before


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30)), max_size=20))
@example(["id,X", "1,10", "2,3"]).via("x named in the second column")
def test_the_input_parser_returns_exactly_the_finite_numbers_or_says_which_line(values):
    text = "\n".join(str(v) for v in values)
    try:
        got = read_inputs(io.StringIO(text), "in")
    except UsageError as err:
        starts = ("not a number in in line", "not a finite number in in line", "out of float32's", "no x values")
        assert "\n" not in str(err) and len(str(err)) < 200 and str(err).startswith(starts)
        return
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line and not line.startswith("#")]
    rows = [[f.strip().strip('"').strip() for f in line.split(",")] for line in lines]
    header = bool(rows) and (rows[0][0].lower() == "x" or (len(rows[0]) > 1 and csvfile.is_header(rows[0])))
    col = next((j for j, f in enumerate(rows[0]) if f.lower() == "x"), 0) if header else 0  # the header's x
    kept = [row[col] for row in rows[header:]]
    assert got == [float(v) for v in kept] and all(math.isfinite(v) for v in got)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=60), st.floats().map(repr), st.integers().map(str)))
@example("1_0").via("Python reads it as 10")
@example("\uff11\uff10").via("fullwidth digits, which Python reads too")
def test_the_number_parser_accepts_exactly_the_finite_float32_values(text):
    plain = text.isascii() and "_" not in text  # as a user types it: Python's float() takes 1_0 and fullwidth digits
    try:
        value = parse_number(text, " in --x")
    except UsageError as err:
        assert "\n" not in str(err) and len(str(err)) <= 100 + QUOTE_CHARS
        with contextlib.suppress(ValueError):  # a float Python reads: not finite, past float32, or not plain ASCII
            assert not (math.isfinite(float(text)) and abs(float(text)) <= FLOAT32_MAX and plain)
        return
    assert value == float(text) and math.isfinite(value) and abs(value) <= FLOAT32_MAX and plain


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(10**400), 10**400) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.one_of(JSON, st.fixed_dictionaries({"x": JSON}), st.fixed_dictionaries({"x": st.lists(JSON, max_size=8)})))
def test_the_request_model_accepts_exactly_x_as_finite_float32_numbers(body):
    def number(v: object) -> bool:  # a Python int compares exactly with a float: 400 digits are too large
        return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= FLOAT32_MAX

    x = body.get("x") if isinstance(body, dict) and set(body) == {"x"} else None
    valid = x is not None and (
        number(x) or (isinstance(x, list) and 0 < len(x) <= PredictRequest.max_items and all(map(number, x)))
    )
    try:
        request = PredictRequest.model_validate(json.loads(json.dumps(body)))  # what FastAPI parses
    except (ValidationError, ValueError):
        assert not valid
        return
    assert valid and request.x == (float(x) if not isinstance(x, list) else [float(v) for v in x])


def test_yaml_bombs_giant_and_endless_configs_are_refused_and_a_piped_one_is_read(tmp_path):
    bomb = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
    )  # 9^10 = 3.5 billion strings once expanded, from 400 bytes
    (tmp_path / "bomb.yaml").write_text(bomb)
    with (tmp_path / "big.yaml").open("wb") as fh:
        fh.truncate(17 * 2**20)  # sparse: no disk used
    (tmp_path / "long.yaml").write_text("model:\n  hidden_size: " + "x" * 2_000_000 + "\n")
    before = fingerprint(tmp_path)
    for command in ("fit", "landscape"):  # one loader reads every command's --config
        proc = run_main(command, "--config", "bomb.yaml", cwd=tmp_path)
        one_error_line(proc, "YAML aliases (*name) are not accepted")
    proc = run_main("fit", "-c", "/dev/zero", cwd=tmp_path)
    one_error_line(proc, "--config /dev/zero is larger than 16,777,216 bytes")
    one_error_line(run_main("landscape", "--config=big.yaml", cwd=tmp_path), "is larger than 16,777,216 bytes")
    one_error_line(run_main("fit", "--model.hidden_size", "&a [5, *a]", cwd=tmp_path), "YAML aliases")
    assert len(one_error_line(run_main("fit", "-c", "long.yaml", cwd=tmp_path), "hidden_size")) < 1100  # not 2 MB
    assert fingerprint(tmp_path) == before
    # What <(...) gives: a valid config, read up to the limit.
    with piped(tmp_path / "settings.fifo", lambda fifo: fifo.write_text("resolution: 7\nw_points: 9\n")) as fifo:
        proc = run_main("landscape", f"--config={fifo}", "--no_tensorboard", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "o" / "lab_1d.csv").read_text().splitlines()) == 1 + 9


def test_unwritable_destinations_are_refused_before_the_work(lab_ckpt, tmp_path):
    (tmp_path / "o" / "lab_1d.csv").mkdir(parents=True)  # a directory where a result file goes
    (tmp_path / "afile").write_text("mine")
    before = fingerprint(tmp_path)
    one_error_line(run_main("landscape", "--ckpt_path", str(lab_ckpt), *"--resolution 5 --out o".split(), cwd=tmp_path),
                   "cannot write the results in --out o: Is a directory")  # fmt: skip
    one_error_line(run_main(*"landscape --resolution 5 --out afile/o --no_tensorboard".split(), cwd=tmp_path),
                   "--out afile/o: afile is a file, not a directory")  # fmt: skip
    one_error_line(run_main("fit", "--trainer.default_root_dir", "afile", cwd=tmp_path), "afile/lightning_logs")
    assert fingerprint(tmp_path) == before and stat.S_ISREG((tmp_path / "afile").stat().st_mode)
    read_only = Path("/sys/kernel")  # sysfs: read-only even for root
    with contextlib.suppress(OSError):
        (read_only / "regression-lab-probe").touch()
        pytest.skip("no read-only directory on this machine")
    proc = run_main("landscape", "--resolution", "5", "--out", str(read_only), "--no_tensorboard", cwd=tmp_path)
    one_error_line(proc, f"cannot write --out in {read_only}")
    proc = run_main("fit", "--trainer.default_root_dir", str(read_only), cwd=tmp_path)
    one_error_line(proc, f"cannot write logs in {read_only}")


def test_a_full_disk_under_a_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    fit_in_process(tmp_path, *"--model.num_seeds 1000 --trainer.max_epochs 2".split())
    before, (soft, hard) = fingerprint(tmp_path / RUN / "checkpoints"), resource.getrlimit(resource.RLIMIT_FSIZE)
    # Past a file-size limit a write fails as on a full disk (EFBIG instead of ENOSPC), in this process only.
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, ((tmp_path / LAST).stat().st_size // 2, hard))
    try:
        proc = run_main("fit", *"--ckpt_path last --trainer.max_epochs 4 --model.num_seeds 1000".split(), cwd=tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    one_error_line(proc, "cannot write: File too large", code=1)
    assert fingerprint(tmp_path / RUN / "checkpoints") == before  # the old last.ckpt, whole; no temporary file


def test_default_root_dir_is_honoured_like_lightnings_default_logger(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAB_RUNS", "runs")  # a quoted ~ and $VAR: expanded for the logs and the checkpoints alike
    cli = fit_in_process(tmp_path, *"--trainer.max_epochs 3 --trainer.default_root_dir ~/$LAB_RUNS".split())
    run = tmp_path / "home/runs" / RUN
    assert cli.last_path == str(run / "checkpoints/last.ckpt") and cli.trainer.log_dir == str(run)
    assert (run / "checkpoints/last.ckpt").is_file() and list(run.glob("events.out.tfevents.*"))
    assert [p.name for p in tmp_path.iterdir()] == ["home"]  # no ./lightning_logs
    resume = "--trainer.max_epochs 5 --trainer.default_root_dir runs --ckpt_path last"  # a relative DIR, in home
    fit_in_process(tmp_path / "home", *resume.split())
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 5
    # The overwrite refusals see through a quoted ~ too: a directory holding a run's files is not written again.
    proc = run_main("fit", "--last_checkpoint.dirpath", f"~/runs/{RUN}/checkpoints", cwd=tmp_path)
    one_error_line(proc, f"~/runs/{RUN}/checkpoints holds checkpoints, which a new fit would overwrite")
    bare = ("fit", "--trainer.logger", "false", "--trainer.max_epochs", "2", "--trainer.default_root_dir", "~/bare")
    fit_in_process(tmp_path, *bare[1:])
    one_error_line(run_main(*bare, cwd=tmp_path), "/home/bare holds a run, which a new fit would overwrite")


@pytest.mark.parametrize("args, code, advice", [
    (["--data.x_max", "1e20"], 1, "the training data reach about 3e+20, whose squares overflow float32"),
    ("--data.slope 1e30 --model.num_seeds 3".split(), 1, "the training data reach about 5e+30"),
    (["--data.csv", "huge.csv"], 1, "whose squares overflow float32 whatever the rate: scale the file's x and y"),
    (["--data.x_max", "100"], 0, "lower --model.lr (now 0.01), or scale the data down"),  # every unit dies
    # The lab's data, where the learning rate alone is the cause: test_reliability's divergence test.
])  # fmt: skip
def test_divergence_advice_names_the_actual_cause(tmp_path, args, code, advice):
    (tmp_path / "huge.csv").write_text("x,y\n" + "".join(f"{i}e30,{i}\n" for i in range(1, 6)))
    proc = run_main("fit", *args, *"--trainer.max_epochs 40 --trainer.enable_progress_bar false".split(), cwd=tmp_path)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == code and advice in last, proc.stderr[-1000:]
    assert ("diverged" if code else "every hidden ReLU unit is off") in last
    assert ("lower --model.lr" in last) != ("squares overflow" in last)


def test_outputs_go_through_pipes_and_links_and_keep_the_umask(lab_ckpt, tmp_path):
    # The output path logic is the same for every format: an exported program is quick to write.
    export = ["export", "--ckpt_path", str(lab_ckpt), "--format", "exported_program", "--out"]
    assert run_main(*export, "plain.pt2", cwd=tmp_path).returncode == 0
    received: list[bytes] = []  # renamed over, a pipe (or /dev/null, as root) would become a file
    with piped(tmp_path / "model.fifo", lambda fifo: received.append(fifo.read_bytes())) as fifo:
        assert run_main(*export, str(fifo), cwd=tmp_path).returncode == 0
    assert stat.S_ISFIFO(fifo.stat().st_mode) and received == [(tmp_path / "plain.pt2").read_bytes()]
    # A device is written in place: a full one is a failed run (exit 1), not a destination refused (exit 2).
    one_error_line(run_main(*export, "/dev/full", cwd=tmp_path), "cannot write: No space left on device", code=1)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.pt2").write_bytes(b"old")
    (tmp_path / "current.pt2").symlink_to(tmp_path / "models" / "m.pt2")
    assert run_main(*export, "current.pt2", cwd=tmp_path).returncode == 0
    assert (tmp_path / "current.pt2").is_symlink() and (tmp_path / "models" / "m.pt2").read_bytes() == received[0]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m.pt2"]
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "results.csv", "w") as fh:
            fh.write("a\n")
    finally:
        os.umask(old)
    assert (tmp_path / "results.csv").stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "results.csv", "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("interrupted")
    assert (tmp_path / "results.csv").read_text() == "a\n" and not list(tmp_path.glob(".results.csv.*"))
