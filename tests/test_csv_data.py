"""(x, y) rows from a CSV file: read by predict's rules, split by the data seed, recorded (never copied) in a
checkpoint and refused once changed; fit, validate, landscape and sweep on it (bad files: test_cli's table).
Run: pytest tests/test_csv_data.py"""

import hashlib
import importlib.util

import pytest
import torch
from helpers import LAST, REPO, fit_in_process, one_error_line, run_main

from regression_lab import api
from regression_lab.data import RegressionDataModule
from regression_lab.models import MyNN

#: A bent line with a wobble: 24 rows of x in [0, 5.75], y in the second column (found by the header).
ROWS = "".join(f"{x / 4},{3 * x / 4 + 2 + 0.2 * (-1) ** x}\n" for x in range(24))


def test_a_csv_is_read_by_the_predict_rules_and_split_by_the_data_seed(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\ufeff# measured\r\nY,X\r\n" + "".join(f"{3 * i + 2},{i}\r\n" for i in range(10)), newline="")
    dm = RegressionDataModule(csv=str(path))
    dm.setup("fit")
    x, y = torch.cat([dm.train_x, dm.val_x]), torch.cat([dm.train_y, dm.val_y])
    assert sorted(x.flatten().tolist()) == list(range(10)) and torch.equal(y, 3 * x + 2) and len(dm.val_x) == 2
    assert torch.equal(RegressionDataModule(csv=str(path)).samples("val")[0], dm.val_x)  # seeded by data.seed
    assert not torch.equal(RegressionDataModule(csv=str(path), seed=1).samples("val")[0], dm.val_x)
    assert dm.source["csv"] == {"path": str(path), "size": path.stat().st_size,
                                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}  # fmt: skip
    assert dm.line_at(10.0) is None  # no known truth
    (tmp_path / "plain.csv").write_text("1,5,first\n2,8,second\n3,11,third\n")  # no header: the first two columns
    apart = RegressionDataModule(csv=str(tmp_path / "plain.csv"), val_csv=str(path))
    apart.setup("fit")
    assert apart.train_y.flatten().tolist() == [5.0, 8.0, 11.0] and len(apart.val_x) == 10


def test_fit_validate_and_landscape_find_the_files_data_and_refuse_it_changed(tmp_path):
    (tmp_path / "d.csv").write_text("x,y\n" + ROWS)
    fitted = fit_in_process(tmp_path, "--data.csv", "d.csv", "--trainer.max_epochs", "40")
    ckpt = torch.load(tmp_path / LAST, map_location="cpu", weights_only=True)
    assert set(ckpt["RegressionDataModule"]) == {"shuffle_generator", "source"}  # the file's record, not its rows
    net = MyNN(5)
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()})
    vx, vy = RegressionDataModule(csv=str(tmp_path / "d.csv")).samples("val")
    with torch.no_grad():
        by_hand = float(torch.mean((net(vx) - vy) ** 2))
    assert float(fitted.trainer.callback_metrics["val/loss"]) == pytest.approx(by_hand, rel=1e-5)
    # No --data.csv, from another directory: the checkpoint's data, and beside it the --data.* options given.
    for named in ([], ["--data.batch_size", "2"]):
        validated = fit_in_process(tmp_path / "o", "--ckpt_path", str(tmp_path / LAST), *named, command="validate")
        assert float(validated.trainer.callback_metrics["val/loss"]) == pytest.approx(by_hand, rel=1e-5)
    proc = run_main("validate", "--data.slope", "3", cwd=tmp_path)  # the line's, at its default: not ignored
    one_error_line(proc, "--data.slope describes the generated line: it does not apply to --data.csv")
    # A run on a noisy line, validated on the file: another source, so none of the checkpoint's line settings.
    line = fit_in_process(tmp_path / "line", "--data.noise_std", "0.5", "--trainer.max_epochs", "5").model.net
    on_file = fit_in_process(tmp_path, "--ckpt_path", f"line/{LAST}", "--data.csv", "d.csv", command="validate")
    with torch.no_grad():
        on_line = float(torch.mean((line(vx) - vy) ** 2))
    assert float(on_file.trainer.callback_metrics["val/loss"]) == pytest.approx(on_line, rel=1e-5)
    (tmp_path / "d.csv").write_text("x,y\n" + ROWS + "6,20.5\n")
    for command in (["validate"], ["landscape", "--no_tensorboard"], ["fit", "--ckpt_path", "last"]):
        one_error_line(run_main(*command, cwd=tmp_path), "d.csv has changed since")
    # Every row of a file, with or without a checkpoint: least squares as the normal equations give it.
    proc = run_main("landscape", "--no_tensorboard", "--data_csv", "d.csv", "--resolution", "21", cwd=tmp_path)
    rows = torch.tensor([[float(v) for v in line.split(",")] for line in (ROWS + "6,20.5\n").splitlines()])
    design = torch.stack([rows[:, 0], torch.ones(len(rows))], 1).double()
    w, b = torch.linalg.solve(design.T @ design, design.T @ rows[:, 1:].double()).flatten().tolist()
    assert proc.returncode == 0 and f"least squares w = {w:.4f}, b = {b:.4f}" in proc.stdout, proc.stderr[-2000:]


def test_a_sweep_on_a_file_ranks_by_validation_loss_without_an_error_column(tmp_path, monkeypatch, capsys):
    (tmp_path / "d.csv").write_text("x,y\n" + ROWS)
    monkeypatch.chdir(tmp_path)
    rows = api.sweep(data_csv="d.csv", seeds="0-3", hidden_sizes=[1, 8], epochs=[30], out="s", quiet=True)
    assert len(rows) == 2 and all(r["err10_mean"] != r["err10_mean"] for r in rows)  # NaN
    assert [r["val_loss_mean"] for r in rows] == sorted(r["val_loss_mean"] for r in rows)
    assert "val loss, mean [95% CI]" in (out := capsys.readouterr().out) and "|pred(" not in out
    (tmp_path / "d.csv").write_text("x,y\n" + ROWS + "6,20\n")  # the study searched the file as it was
    again = run_main(*"sweep --data_csv d.csv --seeds 0-3 --hidden_sizes 1 8 --epochs 30 --out s".split(), cwd=tmp_path)
    one_error_line(again, "d.csv has changed since study 'sweep'")


def test_the_example_data_set_is_what_its_script_makes(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_spring", REPO / "examples" / "make_spring.py")
    spec.loader.exec_module(script := importlib.util.module_from_spec(spec))
    script.main(tmp_path / "spring.csv")
    assert (tmp_path / "spring.csv").read_bytes() == (REPO / "examples" / "spring.csv").read_bytes()
    x, y = RegressionDataModule(csv=str(tmp_path / "spring.csv")).samples("train")
    line = torch.linalg.lstsq(torch.cat([x, torch.ones_like(x)], 1), y).solution
    residual = y - torch.cat([x, torch.ones_like(x)], 1) @ line  # a bend: the best line misses by far more than noise
    assert float(residual.std()) > 3 * script.NOISE_CM
