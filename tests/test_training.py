"""The training pipeline, trained for real: the lab's numbers, checkpoints, TensorBoard, evaluation and resume.
Run: pytest tests/test_training.py"""

from pathlib import Path

import pytest
import torch
import yaml
from helpers import LAST, RUN, edited, events, fit_in_process, one_error_line, run_main
from tensorboard.plugins.hparams import plugin_data_pb2

from regression_lab.callbacks import AtomicCheckpointIO, RunProgressBar
from regression_lab.module import RegressionModule


def test_lab_training_learns_y_equals_3x_plus_2(lab_run):
    _, run = lab_run  # api.train(), which returns the trained objects and the last checkpoint
    assert run.trainer.current_epoch == 400 and run.trainer.callback_metrics["train/loss"].item() < 1e-3
    assert run.metrics["prediction"] == pytest.approx(31.9979, abs=1e-4) and run.checkpoint == Path(LAST)
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    torch.testing.assert_close(run.model(x), 3 * x + 2, atol=0.01, rtol=0)


def test_a_too_large_learning_rate_kills_every_unit_and_says_so(tmp_path, capsys):
    # lr 0.1 pushes every ReLU unit off the five inputs: the net is flat at its output bias, the targets' mean (11).
    cli = fit_in_process(tmp_path, *"--model.lr 0.1 --trainer.max_epochs 50".split())
    assert int(cli.model.active_units(cli.datamodule.train_x)) == 0
    flat = cli.model(torch.arange(1.0, 6.0).unsqueeze(1)).flatten()
    assert torch.all(flat == flat[0]) and flat[0].item() == pytest.approx(11.0, abs=0.2)
    err = capsys.readouterr().err
    assert "warning: every hidden ReLU unit is off on all training inputs (dead)" in err
    assert "lower --model.lr (now 0.1)" in err


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path):
    args = ("--trainer.max_epochs", "20", "--seed_everything")
    a, b, c = (fit_in_process(tmp_path / run, *args, seed).model for run, seed in (("a", "3"), ("b", "3"), ("c", "4")))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.net.linear1.weight, c.net.linear1.weight)
    assert "seed_everything: 3" in (tmp_path / "a" / RUN / "hparams.yaml").read_text()  # recorded with the run


def test_checkpoints_are_last_and_best_and_load_weights_only(lab_run):
    workdir, run = lab_run
    files = sorted(p.name for p in (workdir / RUN / "checkpoints").iterdir())
    assert files == ["best-epoch=399-step=400.ckpt", "last.ckpt"]  # written atomically: no temporary files left
    assert isinstance(run.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    best = run.trainer.checkpoint_callback
    assert best.monitor == "val/loss" and best.best_model_score < 1e-3
    path = workdir / LAST
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["hidden_size"] == 5 and ckpt["hyper_parameters"]["lr"] == 0.01
    x = torch.tensor([[10.0], [11.0]])
    expected = run.model.net(x)
    restored = RegressionModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)  # Lightning's
    torch.testing.assert_close(restored(x), expected)


def test_tensorboard_events_hold_curves_hparams_and_graph(lab_run):
    workdir, run = lab_run
    (file,) = (workdir / RUN).glob("events.out.tfevents.*")
    acc = events(file, scalars=0)
    assert {"train/loss", "val/loss", "val/mae", "val/r2"} <= set(acc.Tags()["scalars"])
    train = acc.Scalars("train/loss")
    assert [e.step for e in train] == list(range(19, 400, 20)) and train[-1].value < 1e-3 < train[0].value
    assert len(acc.Scalars("val/loss")) == 20 and acc.Scalars("val/r2")[-1].value == pytest.approx(1.0, abs=1e-3)
    assert acc.Tags()["graph"] is True
    acc = events(workdir / RUN / "hparams" / "h5_e400_lr0.01", scalars=0)  # the HParams row of this fit
    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["hidden_size"].number_value == 5 and hparams["lr"].number_value == pytest.approx(0.01)
    assert hparams["data.num_samples"].number_value == 5 and hparams["seed_everything"].number_value == 0
    assert not [k for k in hparams if k.startswith("_")]  # no LightningCLI bookkeeping (_instantiator)
    (prediction,) = acc.Scalars("hp/prediction")
    assert prediction.step == 400 and prediction.value == pytest.approx(run.metrics["prediction"], rel=1e-6)
    assert acc.Scalars("hp/abs_error")[-1].value == pytest.approx(abs(prediction.value - 32.0), abs=1e-5)
    for split in ("train", "val"):  # the final losses are the model's MSE on the DataModule's own data
        x, y = getattr(run.datamodule, f"{split}_x"), getattr(run.datamodule, f"{split}_y")
        expected = torch.mean((run.model(x) - y) ** 2).item()
        assert acc.Scalars(f"hp/{split}_loss")[-1].value == pytest.approx(expected, rel=1e-5, abs=1e-12)


def test_validate_and_test_evaluate_the_checkpoint_with_its_own_hyperparameters(lab_run, tmp_path):
    ckpt = str(lab_run[0] / LAST)
    val = fit_in_process(tmp_path, "--ckpt_path", ckpt, command="validate")
    (own := tmp_path / "config.yaml").write_text("mine\n")  # without a logger, no run of its own: nothing over this
    test = fit_in_process(tmp_path, "--ckpt_path", ckpt, "--trainer.logger", "false", command="test")
    config = yaml.safe_load((tmp_path / "lightning_logs/version_0/config.yaml").read_text())  # validate's own
    assert own.read_text() == "mine\n" and config["ckpt_path"] == ckpt  # which checkpoint it evaluated
    assert val.trainer.callback_metrics["val/loss"].item() < 1e-3
    assert val.trainer.callback_metrics["val/r2"].item() == pytest.approx(1.0, abs=1e-3)
    assert 0 <= test.trainer.callback_metrics["test/mae"].item() < 0.1 and test.model.hparams.hidden_size == 5
    proc = run_main("test", "--ckpt_path", ckpt, "--model.hidden_size", "8", cwd=tmp_path)  # never silently ignored
    one_error_line(proc, "was trained with model.hidden_size=5; --model.hidden_size 8 cannot change its model")
    edited(ckpt, tmp_path / "lr.ckpt", lambda c: c["hyper_parameters"].update(lr=0.02))  # a default given is given
    proc = run_main("validate", "--ckpt_path", "lr.ckpt", "--model.lr", "0.01", cwd=tmp_path)
    one_error_line(proc, "was trained with model.lr=0.02; --model.lr 0.01 cannot change its model")


def test_last_checkpoint_holds_the_final_weights_the_bar_counts_resumes_too_and_checkpoints_can_be_off(tmp_path):
    # Scheduled saves come every 100 epochs: 120 epochs end 20 epochs after the last of them; 3 batches an epoch.
    on = ("--trainer.enable_progress_bar", "true", "--data.num_samples", "20", "--data.batch_size", "8")
    cli = fit_in_process(tmp_path, *on, "--trainer.max_epochs", "120")
    bar = cli.trainer.progress_bar_callback
    assert isinstance(bar, RunProgressBar) and bar.train_progress_bar.total == bar.train_progress_bar.n == 120 * 3
    ckpt = torch.load(tmp_path / LAST, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 120 * 3
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in cli.model.state_dict().items())
    # Resuming the finished run trains nothing and reports the same numbers; resumed further, the bar counts on.
    again = fit_in_process(tmp_path, *on, *"--trainer.max_epochs 120 --ckpt_path last".split())
    assert again.trainer.global_step == 120 * 3
    assert set(again.final_metrics) == {"prediction", "train_loss", "val_loss", "abs_error"}
    assert again.final_metrics == pytest.approx(cli.final_metrics, rel=1e-6, abs=1e-9)
    resumed = fit_in_process(tmp_path, *on, *"--trainer.max_epochs 130 --ckpt_path last".split())
    assert resumed.trainer.progress_bar_callback.train_progress_bar.n == 130 * 3  # from where the run was
    validated = fit_in_process(tmp_path, *on[:2], "--ckpt_path", str(tmp_path / LAST), command="validate")
    assert validated.trainer.progress_bar_callback
    cli = fit_in_process(tmp_path / "off", *"--trainer.max_epochs 5 --trainer.enable_checkpointing false".split())
    assert cli.trainer.checkpoint_callback is None and not (tmp_path / "off" / RUN / "checkpoints").exists()
