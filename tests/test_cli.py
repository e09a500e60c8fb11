"""The command line: the lab's fit as a process, predict from a file or stdin, configs and overrides, and the table of
bad input, each refused in one line with exit 2 and nothing touched (``-m "not slow"``: the fast part).
Run: pytest tests/test_cli.py"""

import importlib.util
import shutil
import sqlite3
import subprocess
import sys
import warnings

import pytest
import torch
import yaml
from helpers import LAST, REPO, RUN, fingerprint, one_error_line, run_cli, run_main

from regression_lab.errors import FLOAT32_MAX
from regression_lab.predict import Predictor


@pytest.mark.slow
def test_fit_with_no_arguments_trains_the_lab_reports_and_predict_agrees(tmp_path):
    proc = run_cli("fit", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Model prediction for 10 is 31.9979" in (lines := proc.stdout.splitlines())
    assert "Checkpoint: ./lightning_logs/version_0/checkpoints/last.ckpt" in lines
    assert (tmp_path / "lightning_logs/version_0/config.yaml").is_file() and "Traceback" not in proc.stderr
    pred = run_main(*"predict --x 10 --x 11".split(), cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    rows = [line.split(",") for line in pred.stdout.strip().splitlines()]
    assert rows[0] == ["x", "prediction"] and [r[0] for r in rows[1:]] == ["10", "11"]
    assert float(rows[1][1]) == pytest.approx(31.9979, abs=1e-4) and abs(float(rows[2][1]) - 35.0) < 0.1


def test_predict_reads_a_file_or_stdin_and_agrees_with_the_weights_by_hand(lab_ckpt, tmp_path):
    (tmp_path / "xs.csv").write_text('"x"\n"1"\n# a comment\n\n2.5\n10\n')  # quoted as spreadsheets write
    from_file = run_main("predict", "--ckpt_path", str(lab_ckpt), "--input", "xs.csv", cwd=tmp_path)
    from_stdin = run_main("predict", "--ckpt_path", str(lab_ckpt), "--input", "-", cwd=tmp_path, stdin="1\n2.5\n10\n")
    assert from_file.returncode == 0 and from_file.stdout == from_stdin.stdout, from_file.stderr + from_stdin.stderr
    preds = [float(line.split(",")[1]) for line in from_file.stdout.strip().splitlines()[1:]]
    sd = torch.load(lab_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    hidden = torch.relu(torch.tensor([[1.0], [2.5], [10.0]]) @ sd["net.linear1.weight"].T + sd["net.linear1.bias"])
    by_hand = hidden @ sd["net.linear2.weight"].T + sd["net.linear2.bias"]
    assert preds == pytest.approx(by_hand.flatten().tolist(), abs=1e-5)


def test_the_range_predict_answers_is_where_the_network_overflows_float32(lab_ckpt):
    predictor = Predictor(lab_ckpt)
    w1, w2 = predictor.model.linear1.weight[:, 0].detach().double(), predictor.model.linear2.weight[0].detach().double()
    # Far out, past every ReLU kink, the network is a line (the units on there); a steeper unit overflows first.
    slopes = [(w1 * w2)[w1 > 0].sum().abs(), (w1 * w2)[w1 < 0].sum().abs(), w1.abs().max()]
    assert predictor.max_abs_x == pytest.approx(FLOAT32_MAX / float(max(slopes)), rel=1e-3)
    assert predictor([predictor.max_abs_x * 0.999])[0][0] < float("inf")


def test_light_commands_do_not_import_lightning(lab_ckpt):
    # One fresh interpreter runs each command in turn, and looks for Lightning after each.
    light = [["predict", "--x", "10"], ["demo", "all"], "export --format torchscript --out m.pt".split()]
    code = (
        "import sys, io, os, contextlib; from regression_lab.cli import main\n"
        f"for args in {light!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()): rc = main(args)\n"
        "    bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]\n"
        "    assert rc == 0 and not bad, (args, rc, bad)\n"
        "r, w = os.pipe(); os.close(r); sys.stdout, err = open(w, 'w'), io.StringIO()\n"  # its reader gone (| head)
        "with contextlib.redirect_stderr(err): rc = main(['demo', 'all'])\n"
        "assert rc == 141 and not err.getvalue(), err.getvalue()\n"  # quiet, as Unix tools are
        # A full disk, then a closed standard output: one line each, exit 1.
        "for out in (open('/dev/full', 'w'), None):\n"
        "    sys.stdout, err = out, io.StringIO()\n"
        "    if out is None: os.close(1)\n"
        "    with contextlib.redirect_stderr(err): rc = main(['predict', '--x', '10'])\n"
        "    assert rc == 1 and err.getvalue().count(chr(10)) == 1, err.getvalue()\n"
        "    assert err.getvalue().startswith('error: cannot write: ' + ('No space' if out else 'Bad file'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=lab_ckpt.parents[3], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_no_command_is_the_usage_on_stderr_and_exit_2(tmp_path):
    proc = run_main(cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.startswith("usage: regression-lab <command>")
    assert run_main("--help", cwd=tmp_path).stdout == proc.stderr


@pytest.mark.parametrize("command", ["predict", "demo", "export", "serve", "landscape", "sweep"])
def test_each_commands_help_opens_with_its_first_sentence(command, tmp_path):
    help_text = run_main(command, "--help", cwd=tmp_path).stdout
    description = help_text.split("\n\n")[1]  # after the usage lines: the module docstring's first sentence
    assert description.startswith(f"The {command} command: ") and description.endswith(".")
    assert not any(mark in description for mark in ("::", ":func:", ":mod:", "regression-lab ")), description


def test_default_yaml_is_what_print_config_writes_and_overrides_change_the_model(tmp_path):
    printed = run_main("fit", "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    config = yaml.safe_load(printed.stdout)
    assert config == yaml.safe_load((REPO / "configs" / "default.yaml").read_text())  # regenerate it if not
    model, trainer = config["model"], config["trainer"]
    assert model["hidden_size"] == 5 and model["lr"] == 0.01 and config["data"]["batch_size"] is None
    assert trainer["max_epochs"] == 400 and trainer["accelerator"] == "auto"
    default = str(REPO / "configs" / "default.yaml")
    overridden = run_main("fit", "--config", default, *"--model.hidden_size 8 --print_config".split(), cwd=tmp_path)
    assert yaml.safe_load(overridden.stdout)["model"]["hidden_size"] == 8
    assert not (tmp_path / "lightning_logs").exists()
    one_error_line(run_main("fit", "--ckpt_path", "last", cwd=tmp_path), "no last.ckpt found")  # nothing to resume
    one_error_line(run_main("serve", cwd=tmp_path), "no checkpoint found")  # nor to serve


@pytest.fixture(scope="module")
def bad_input_dir(tmp_path_factory, lab_run) -> object:
    """A directory with a trained run and assorted bad files, for the bad-input table."""
    workdir = tmp_path_factory.mktemp("bad_input")
    shutil.copytree(lab_run[0] / "lightning_logs", workdir / "lightning_logs")
    (workdir / "truncated.ckpt").write_bytes((workdir / LAST).read_bytes()[:2000])
    (workdir / "a_dir.ckpt").mkdir()
    (workdir / "mine").mkdir()  # a user's own directory and files, not a sweep's or a study
    sqlite3.connect(workdir / "mine.db").execute("CREATE TABLE runs (x REAL)").connection.commit()
    torch.save({"state_dict": {"net.linear1.weight": torch.zeros(4, 2)}}, workdir / "other_shape.ckpt")
    torch.save({"weights": torch.zeros(3)}, workdir / "no_state.ckpt")
    with warnings.catch_warnings(action="ignore", category=DeprecationWarning):  # torch.jit's
        torch.jit.save(torch.jit.script(torch.nn.Linear(1, 1)), workdir / "script.pt")
    texts = {"empty.ckpt": "", "text.ckpt": "not a checkpoint\n", "xs_bad.txt": "1\nabc\n", "a_file": "",
             "xs_empty.txt": "# nothing\n", "bad.yaml": "model: [unclosed\n", "a.txt": "my notes\n",
             "unknown_key.yaml": "model:\n  hidden_sizes: 4\n", "mine/results.csv": "my own results\n",
             "empty.csv": "# no rows\n", "one_row.csv": "x,y\n1,5\n", "words.csv": "x,y\n1,5\none,8\n",
             "nan.csv": "1,5\n2,nan\n", "twice.csv": "x,x,y\n1,2,3\n", "wide.csv": "1," * 10**6 + "1\n",
             "ragged.csv": "1,5\n2\n", "lab.csv": "x,y\n1,5\n2,8\n3,11\n", "half.csv": "time,x\n1,5\n", "empty.db": "",
             "sweep_keys.yaml": "hidden: [4]\n", "no_seeds.yaml": "seeds: []\n", "seeds_text.yaml": "seeds: 0-3\n",
             "no_epochs.yaml": "epochs: []\n", "one_epochs.yaml": "epochs: 50\n"}  # fmt: skip
    for name, text in texts.items():
        (workdir / name).write_text(text)
    (workdir / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    return workdir


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="refused only without a CUDA device")
BAD_INPUT = [  # (arguments, a phrase the one error line must hold)
    (["predict", "--x", "abc"], "not a number in --x: 'abc'"), (["predict", "--x", "1_0"], "not a number in --x"),
    (["predict", "--x", "1e39"], "out of float32's range (|x| <= 3.403e+38) in --x: '1e39'"),
    (["predict", "--x", "10", "--x=-3e38"], "further out its prediction overflows float32): -3e+38"),
    (["predict"], "one of the arguments --x --input is required"),
    ("predict --x 1 --ckpt_path missing.ckpt".split(), "checkpoint not found"),
    ("predict --x 1 --ckpt_path a_dir.ckpt".split(), "is a directory"),
    (["predict", "--input", "xs_empty.txt"], "no x values"),
    ("predict --x 1 --ckpt_path empty.ckpt".split(), "empty"), (["frobnicate"], "unknown command"),
    ("predict --x 1 --ckpt_path truncated.ckpt".split(), "not a readable checkpoint"),
    ("predict --x 1 --ckpt_path other_shape.ckpt".split(), "not a regression-lab MyNN checkpoint"),
    ("predict --x 1 --ckpt_path no_state.ckpt".split(), "no state_dict"),
    ("predict --x 1 --ckpt_path script.pt".split(), "script.pt is a TorchScript export, not a checkpoint"),
    (["predict", "--x", "1", "--ckpt_path", "a" * 300], "a path is too long for this system: 'aaaa"),
    (["fit", "--trainer.default_root_dir", "bad\udcff"], "an argument is not valid UTF-8"),
    (["sweep", "--out", "s" * 300], "a path is too long"), (["export", "--format", "onnx", "--out", "o" * 300], "long"),
    (["predict", "--input", "xs_bad.txt"], "not a number in xs_bad.txt line 2: 'abc'"),
    (["predict", "--input", "missing.txt"], "input file not found"),
    ("predict --x 1 --bogus".split(), "unrecognized arguments: --bogus"),
    (["fit", "--model.hidden_size", "0"], "model.hidden_size must be an integer >= 1"),
    ("fit --data.csv lab.csv --data.slope 3.0".split(), "--data.slope describes the generated line"),  # its default
    (["fit", "--model.probe_x", "1e39"], "model.probe_x must be <= 3.403e+38, got 1e+39"),
    (["fit", "--model.probe_x", "3e38"], "--model.probe_x 3e+38: the line's value there, 9e+38, is past float32's"),
    (["fit", "--model.hidden_size", "10001"], "hidden_size must be <= 10,000"),
    (["fit", "--model.hidden_size", "abc"], "model.hidden_size"), (["fit", "--model.lr", "0"], "model.lr must be > 0"),
    (["fit", "--model.lr", "1e999"], "model.lr must be a finite number"),
    (["fit", "--model.momentum", "-1"], "model.momentum must be >= 0"),
    (["fit", "--model.first_seed", "3", "--model.seeds", "[1,2]"], "model.seeds names every seed: give it without"),
    (["fit", "--model.num_seeds", "1", "--model.seeds", "[1,2]"], "model.seeds names every seed"),  # the default too
    (["fit", "--trainer.max_epochs", "0"], "max_epochs must be >= 1"),
    (["fit", "--seed_everything", "4294967296"], "seed_everything must be in [0, 4294967295], got 4294967296"),
    (["fit", "--checkpoint.dirpath", "a_file"], "--checkpoint.dirpath is a file, not a directory: a_file"),
    (["fit", "--last_checkpoint.dirpath", f"{RUN}/checkpoints"], "holds checkpoints, which a new fit would overwrite"),
    (["validate", "--trainer.accelerator", "tpu"], "missing package"),  # found before its checkpoint notice
    (["fit", "--checkpoint.monitor", "nope"], "--checkpoint.monitor 'nope' is not a metric this model logs"),
    (["fit", "--trainer.callbacks+=LandscapeLogger", "--trainer.callbacks.resolution", "1"],
     "LandscapeLogger: --resolution must be an integer >= 2, got 1"),  # a class's own refusal, by its name
    ("fit --trainer.callbacks+=EarlyStopping --trainer.callbacks.monitor val/loss --trainer.callbacks.mode foo".split(),
     "EarlyStopping: `mode` can be min, max, got foo"),
    ("fit --trainer.callbacks+=LandscapeLogger --model.num_seeds 3".split(), "not an ensemble's"),
    ("fit --trainer.callbacks+=LandscapeLogger --trainer.logger CSVLogger".split(), "keep the default TensorBoard"),
    (["validate", "--data.val_samples", "1"], "data.val_samples must be an integer >= 2"),  # before its notice
    (["fit", "--weights_only", "false"], "--weights_only false is not allowed"),
    (["fit", "--bogus", "1"], "unrecognized arguments"), (["fit", "--config", "missing.yaml"], "does not exist"),
    (["fit", "--config", "bad.yaml"], "--config bad.yaml is not valid YAML"),
    (["fit", "--config", "unknown_key.yaml"], "model.hidden_sizes"),
    (["fit", "--config", "a_file"], "a --config file must be a YAML mapping of settings"),
    (["fit", "--ckpt_path", "text.ckpt"], "not a readable checkpoint"),
    (["validate", "--ckpt_path", "."], "is a directory"),
    (["test", "--ckpt_path", "other_shape.ckpt"], "not a regression-lab MyNN checkpoint"),
    (["fit", "--trainer.check_val_every_n_epoch", "0"], "check_val_every_n_epoch must be >= 1"),
    (["fit", "--trainer.strategy", "ddp_spawn"], "--trainer.strategy ddp_spawn: the processes it spawns cannot"),
    *[(["fit", f"--trainer.{key}", value], f"--trainer.{key} {value} converts the model, not its own float32 inputs")
      for key, value in [("precision", "64-true"), ("precision", "16-true"), ("precision", "bf16-true"),
                         ("plugins", "DoublePrecision"), ("plugins", "HalfPrecision")]],
    *[([c, "--conf", "x.yaml"], "unrecognized arguments: --conf")  # no abbreviated options, for any command
      for c in ("fit", "sweep", "landscape")],
    ("predict --x 1 --inp -".split(), "unrecognized arguments: --inp"),
    *[([*c.split(), "--ckpt_path", path], "--ckpt_path is empty")  # an unset "$CKPT": not the newest run
      for c, path in [("fit", ""), ("validate", ""), ("predict --x 1", ""), ("landscape", ""), ("serve", " "),
                      ("export --format onnx --out m.onnx", " ")]],
    (["test", "--data.test_samples", "1"], "data.test_samples must be an integer >= 2"),  # R² of one: undefined
    (["fit", "--data.csv", "empty.csv"], "empty.csv holds no (x, y) rows"),
    (["fit", "--data.csv", "one_row.csv"], "has 1 row: 3 at least"), (["test", "--data.csv", "."], "is a directory"),
    (["fit", "--data.csv", "words.csv"], "not a number in"), (["fit", "--data.csv", "nan.csv"], "not a finite number"),
    (["fit", "--data.csv", "twice.csv"], "names the column 'x' twice"),
    (["fit", "--data.csv", "wide.csv"], "wide.csv line 1 is longer than 10,000 characters"),
    (["fit", "--data.csv", "ragged.csv"], "ragged.csv line 2 has 1 columns where the first row has 2"),
    (["fit", "--data.csv", "binary.csv"], "--data.csv is not UTF-8 text"),
    (["validate", "--data.csv", "missing.csv"], "--data.csv not found: "),
    (["fit", "--data.val_fraction", "0.5"], "error: --data.val_fraction splits a --data.csv file: give --data.csv"),
    ("fit --data.csv lab.csv --data.val_csv lab.csv --data.val_fraction 0.3".split(), "every row of it trains"),
    (["fit", "--data.csv", "lab.csv", "--data.val_fraction", "1"], "--data.val_fraction must lie in (0, 1), got 1"),
    (["sweep", "--data_csv", "one_row.csv"], "one_row.csv has 1 row: 3 at least, 1 to train on and 2 to validate on"),
    (["landscape", "--data_csv", "one_row.csv"], "has 1 row: 2 at least for a least-squares line"),
    (["fit", "--data.csv", "half.csv"], "header (line 1) names a column x but none y: name both, or neither"),
    (["demo", "bogus"], "unknown demo 'bogus'"), ("demo forward --seed abc".split(), 'Parser key "seed"'),  # demo
    ("demo forward --seed -1".split(), "--seed must be an integer >= 0"),
    (["demo", "forward", "--seed", str(2**64)], "--seed must be <= 4,294,967,295"),
    ("demo forward --logdir x".split(), "has no model"),
    ("landscape --resolution 1".split(), "--resolution must be an integer >= 2"),  # landscape
    ("landscape --resolution 100000".split(), "--resolution must be <= 4,001"),
    ("landscape --w_range 5 -1".split(), "--w_range must be an increasing range"),
    ("landscape --span 0 0".split(), "--span must be an increasing range"),
    ("landscape --w_points 10000001".split(), "--w_points must be <= 10,000,000"),  # landscape.MAX_POINTS_1D
    ("landscape --w_range a 1".split(), "Expected a <class 'float'>. Got value: a"),
    ("landscape --interp_points 1".split(), "--interp_points"), ("landscape --seed -1".split(), "--seed must be an"),
    ("landscape --device tpu".split(), "--device must be auto, cpu or cuda"),
    ("landscape --ckpt_path missing.ckpt".split(), "checkpoint not found"),
    ("landscape --ckpt_path other_shape.ckpt".split(), "not a regression-lab MyNN checkpoint"),
    (["landscape", "--trajectory"], "has no trajectory in its run"),  # a run without a trajectory
    (["fit", "--model.num_seeds", "0"], "model.num_seeds must be an integer >= 1"),  # ensembles
    (["fit", "--model.num_seeds", "2000000"], "model.num_seeds must be <= 1,000,000"),
    (["fit", "--model.seeds", "[]"], "model.seeds is empty"), (["fit", "--model.seeds", "[1,1]"], "repeats a seed"),
    (["fit", "--model.seeds", "[-1]"], "model.seeds must be integers in [0, 4294967295]"),
    ("fit --model.first_seed 4294967295 --model.num_seeds 2".split(), "model.first_seed must be <= 4,294,967,294"),
    ("fit --model.hidden_size [4,0] --model.num_seeds 2".split(), "model.hidden_size must be an integer >= 1"),
    ("fit --model.lr [] --model.num_seeds 2".split(), "model.lr is empty"),
    ("fit --model.num_seeds 1000 --data.num_samples 100000000".split(), "more than half of this machine's memory"),
    (["fit", "--trajectory_every", "0"], "--trajectory_every must be an integer >= 1"),
    ("fit --trajectory_every 5 --model.num_seeds 2".split(), "--trajectory_every keeps one network's weights"),
    (["fit", "--data.num_samples", "0"], "data.num_samples must be an integer >= 1"),  # data settings
    (["fit", "--data.num_samples", "1000000000"], "data.num_samples must be <= 100,000,000"),
    (["fit", "--data.noise_std", "-1"], "data.noise_std must be >= 0"),
    ("fit --data.x_min 5 --data.x_max 1".split(), "data.x_min must be < data.x_max"),
    (["fit", "--data.batch_size", "0"], "data.batch_size must be an integer >= 1"),
    (["fit", "--data.slope", ".nan"], "data.slope must be a finite number, got nan"),
    (["fit", "--data.val_x_max", ".inf"], "data.val_x_max must be a finite number, got inf"),
    (["fit", "--data.x_max", "1e39"], "beyond float32's range 3.4e+38 (about 3e+39)"),
    (["fit", "--data.noise_std", "1e308"], "beyond float32's range 3.4e+38: scale"),
    ("export --format onnx --out m.onnx --ckpt_path missing.ckpt".split(), "checkpoint not found: missing.ckpt"),
    ("export --format onnx --out nodir/m.onnx".split(), "--out's directory does not exist"),
    ("export --format onnx --out a_dir.ckpt".split(), "--out is a directory"),
    (["export", "--format", "onnx", "--out", f"./{LAST}"], f"--out {LAST} is the checkpoint itself"),  # the newest
    ("export --format pickle --out m.onnx".split(), "format"),
    ("serve --ckpt_path missing.ckpt".split(), "checkpoint not found: missing.ckpt"),  # serve
    ("serve --ckpt_path text.ckpt".split(), "not a readable checkpoint"), (["serve", "--host", "10.0.0.1"], "host"),
    ("serve --port 80".split(), "--port must be an integer >= 1024"), ("serve --port 70000".split(), "<= 65,535"),
    ("serve --max_batch_size 0".split(), "--max_batch_size must be an integer >= 1"),
    (["serve", "--api_key", " "], "the API key (--api_key or $REGRESSION_LAB_API_KEY) is empty: give the key"),
    ("serve --batch_timeout 40".split(), "below the 30 s a request may wait, got 40"),
    pytest.param(["serve", "--accelerator", "cuda"], "this machine has no CUDA device", marks=NO_CUDA),
    (["sweep", "--hidden_sizes"], "expected at least one argument"),  # sweep
    (["sweep", "--epochs", "0"], "--epochs values must be an integer >= 1"),
    (["sweep", "--hidden_sizes", "4", "4"], "--hidden_sizes repeats a value"),
    (["sweep", "--hidden_sizes", "20000"], "--hidden_sizes values must be <= 10,000, got 20,000"),
    ("sweep --sampler tpe --hidden_range 1 20000".split(), "--hidden_range's HIGH must be <= 10,000"),
    pytest.param(["sweep", "--accelerator", "gpu"], "--accelerator gpu: this machine has no CUDA device",
                 marks=NO_CUDA),
    (["sweep", "--lrs", "-0.1"], "--lrs values must be > 0"),
    (["sweep", "--seeds", "-1"], "--seeds takes integers >= 0 or ranges like 0-999"),
    (["sweep", "--seeds", "9-3"], "--seeds range '9-3' is reversed"), (["sweep", "--seeds", "0-199999"], "100,000"),
    (["sweep", "--seeds", "1", "0-2"], "--seeds repeats a seed"), (["sweep", "--sampler", "random"], "sampler"),
    (["sweep", "--n_trials", "0"], "--n_trials must be an integer >= 1"), (["sweep", "--n_trials", "5"], "tpe"),
    (["sweep", "--log"], "--log is for --sampler tpe: the grid sampler does not use it"),
    ("sweep --sampler tpe --hidden_sizes 4".split(), "--hidden_sizes is for --sampler grid: the tpe sampler"),
    (["sweep", "--lr_range", "0.3", "0.001"], "--lr_range takes LOW HIGH with LOW <= HIGH"),
    (["sweep", "--hidden_range", "0", "4"], "--hidden_range values must be >= 1"),
    (["sweep", "--workers", "0"], "--workers must be an integer >= 1"),
    (["sweep", "--epochs", "ten"], "Expected a <class 'int'>. Got value: ten"),
    (["sweep", "--config", "sweep_keys.yaml"], "hidden"), (["sweep", "--config", "no_seeds.yaml"], "--seeds is empty"),
    (["sweep", "--config", "no_epochs.yaml"], "--epochs takes a list of one or more values, got []"),
    (["sweep", "--config", "one_epochs.yaml"], "given one value (in --config, write it as a YAML list, e.g. [50])"),
    (["sweep", "--config", "seeds_text.yaml"], "given one value (in --config, write it as a YAML list"),  # "0-3"
    (["sweep", "--storage", "nosuchdb://x"], "cannot open the storage nosuchdb://x"),
    (["sweep", "--report"], "--report needs the study's --storage"),
    (["sweep", "--report", "--storage", "sqlite:///new.db"], "no study named 'sweep' in sqlite:///new.db: there is no"),
    (["sweep", "--report", "--storage", "new.log"], "no study named 'sweep' in new.log: there is no such file"),
    ("sweep --out mine --seeds 0 --workers 999".split(), "mine exists and is not a sweep directory"),  # no note
    (["sweep", "--study_name", " "], "--study_name is empty"),
    ("sweep --storage new.log --out mine --seeds 0".split(), "mine exists and is not a sweep directory"),  # no study
    (["sweep", "--storage", "sqlite:///mine.db"], "mine.db is not an Optuna study (a SQLite database of another "
                                                  "schema)"),
    (["sweep", "--report", "--storage", "sqlite:///empty.db"], "empty.db is not an Optuna study (an empty file)"),
    (["sweep", "--storage", "a.txt"], "a.txt is not an Optuna study (a file that is not an Optuna journal)"),
    (["sweep", "--report", "--storage", "sqlite:///a.txt"], "a.txt is not an Optuna study (not a SQLite database)"),
    pytest.param(["fit", "--trainer.logger", "MLFlowLogger"], "a setting needs a missing package: pip install 'mlflow",
                 marks=pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is here")),
]  # fmt: skip


@pytest.mark.parametrize("args, phrase", BAD_INPUT, ids=[" ".join(getattr(r, "values", r)[0]) for r in BAD_INPUT])
def test_bad_input_gives_one_line_and_exit_2_and_touches_nothing(bad_input_dir, args, phrase):
    before = fingerprint(bad_input_dir)
    proc = run_main(*args, cwd=bad_input_dir)
    assert one_error_line(proc, phrase) and proc.stdout == ""
    assert fingerprint(bad_input_dir) == before


def test_a_bad_setting_is_the_whole_stderr_of_the_process(tmp_path):
    # Lightning logs to the process's own stderr (its seed line), which the in-process table cannot see.
    proc = run_cli("fit", "--model.hidden_size", "0", cwd=tmp_path)
    assert proc.stderr == "error: model.hidden_size must be an integer >= 1, got 0\n" and proc.stdout == ""
    assert proc.returncode == 2 and not list(tmp_path.iterdir())  # not even an empty lightning_logs
    refused = run_main(*"fit --model.num_seeds 0 --trainer.default_root_dir a/b".split(), cwd=tmp_path)
    assert one_error_line(refused, "model.num_seeds must be") and not list(tmp_path.iterdir())  # nor a/b


@pytest.mark.parametrize("option, output", [
    ("--trainer.logger CSVLogger", "for 10 is 32.6772"),
    ("--trainer.fast_dev_run true --trainer.callbacks+=LandscapeLogger --trajectory_every 1", "for 10 is 1.7772"),
    ("--trainer.callbacks EarlyStopping --trainer.callbacks.monitor val/loss", "for 10 is 32.6772"),
    ("--trainer.limit_val_batches 0", "for 10 is 32.6772"), ("--trainer.val_check_interval 0.5", "for 10 is 32.6772"),
    ("--trainer.callbacks TQDMProgressBar", "for 10 is 32.6772"),  # one callback, not a list: the bar replaced
    ("--trainer.max_time 00:00:00:01 --trainer.max_epochs 100000", "Model prediction for 10 is"),  # stops on time
    ("--model.probe_x 1.13e38 --model.num_seeds 2 --seed_everything 1",  # two members: no histogram of inf
     "warning: the prediction at --model.probe_x 1.13e+38 is past float32's range"),
])  # fmt: skip
@pytest.mark.filterwarnings("error::RuntimeWarning")  # an inf or NaN in the numbers, drawn or summed anyway
def test_lightnings_trainer_options_and_a_far_probe_work_with_the_projects_callbacks(tmp_path, option, output):
    proc = run_main("fit", "--trainer.max_epochs", "40", *option.split(), cwd=tmp_path)
    assert proc.returncode == 0 and output in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert "fast_dev_run" not in option or not list(tmp_path.iterdir()), list(tmp_path.rglob("*"))  # nor a last.ckpt
