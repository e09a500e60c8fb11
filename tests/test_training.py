"""The training pipeline, trained for real: accuracy, reproducibility, checkpoints, TensorBoard.

Run: pytest tests/test_training.py
"""

from pathlib import Path

import pytest
import torch
from helpers import cli_in_process, fit_in_process
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from regression_lab.core.checkpoints import INITIAL_STATE_KEY, load_mynn
from regression_lab.core.models import MyNN
from regression_lab.lit.module import RegressionModule


def run_dir(workdir: Path, version: int = 0) -> Path:
    return workdir / "lightning_logs" / f"version_{version}"


def test_lab_training_learns_y_equals_3x_plus_2(lab_run):
    _, cli = lab_run
    model: RegressionModule = cli.model
    assert cli.trainer.current_epoch == 400
    assert cli.trainer.callback_metrics["train/loss"].item() < 1e-3
    assert abs(model.predict_value(10.0) - 32.0) < 0.05
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    torch.testing.assert_close(model(x), 3 * x + 2, atol=0.01, rtol=0)
    assert model.active_units(x) == 2  # seed 0: two units carry the line, three are off on x = 1..5


def test_a_run_whose_relu_units_all_die_says_so(tmp_path, capsys):
    # lr 0.1 pushes every unit off the training inputs within a few steps: no divergence, no
    # error, only a flat answer over the training data, which the output bias draws towards
    # the mean of the training targets (3 * 3 + 2 = 11).
    cli = fit_in_process(tmp_path, "--model.lr", "0.1", "--trainer.max_epochs", "50")
    assert cli.model.active_units(cli.datamodule.train_x) == 0
    with torch.no_grad():
        flat = cli.model(torch.arange(1.0, 6.0).unsqueeze(1)).flatten()
    assert torch.all(flat == flat[0]) and flat[0].item() == pytest.approx(11.0, abs=0.2)
    err = capsys.readouterr().err
    assert "warning: every hidden ReLU unit is off on all training inputs (dead)" in err
    assert "lower --model.lr (now 0.1)" in err


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        (tmp_path / name).mkdir()
        cli = fit_in_process(tmp_path / name, "--trainer.max_epochs", "20", "--seed_everything", str(seed))
        runs[name] = cli.model.net.state_dict()
    for key in runs["a"]:
        assert torch.equal(runs["a"][key], runs["b"][key]), key
    assert not torch.equal(runs["a"]["linear1.weight"], runs["c"]["linear1.weight"])


def test_checkpoint_loads_weights_only_into_plain_mynn(lab_run):
    workdir, cli = lab_run
    ckpt_path = run_dir(workdir) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["hidden_size"] == 5 and ckpt["hyper_parameters"]["lr"] == 0.01
    net = MyNN(ckpt["hyper_parameters"]["hidden_size"])
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    x = torch.tensor([[10.0], [11.0]])
    expected = cli.model.net(x)
    torch.testing.assert_close(net(x), expected)
    # The same through the project's loader and through Lightning's own.
    plain, _ = load_mynn(ckpt_path)
    torch.testing.assert_close(plain(x), expected)
    restored = RegressionModule.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(restored(x), expected)
    # The weights before training travel with the checkpoint (for the landscape's interpolation).
    init = ckpt[INITIAL_STATE_KEY]
    assert set(init) == {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}
    assert not torch.equal(init["linear1.weight"], ckpt["state_dict"]["net.linear1.weight"])
    torch.testing.assert_close(restored.initial_state["linear2.bias"], init["linear2.bias"])


def test_checkpoints_are_last_and_best_by_val_loss(lab_run):
    workdir, cli = lab_run
    files = sorted(p.name for p in (run_dir(workdir) / "checkpoints").iterdir())
    assert files == ["best-epoch=399-step=400.ckpt", "last.ckpt"]
    cb = cli.trainer.checkpoint_callback
    assert cb.monitor == "val/loss" and cb.best_model_score is not None
    assert cb.best_model_score.item() < 1e-3


def test_tensorboard_events_hold_curves_hparams_and_graph(lab_run):
    workdir, cli = lab_run
    (events,) = run_dir(workdir).glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for key in ("train/loss", "val/loss", "val/mae", "val/r2"):
        assert key in tags["scalars"], key
    train = acc.Scalars("train/loss")
    assert [e.step for e in train] == list(range(19, 400, 20))  # every 20th step
    assert train[-1].value < 1e-3 < train[0].value
    val = acc.Scalars("val/loss")
    assert len(val) == 20  # validation every 20th epoch
    assert acc.Scalars("val/r2")[-1].value == pytest.approx(1.0, abs=1e-3)
    assert tags["graph"] is True
    # HParams tab: the hyperparameters and the final metrics beside them.
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["hidden_size"].number_value == 5
    assert hparams["lr"].number_value == pytest.approx(0.01)
    assert hparams["data.num_samples"].number_value == 5
    assert hparams["seed_everything"].number_value == 0
    assert not [k for k in hparams if k.startswith("_")]  # no LightningCLI bookkeeping (_instantiator)
    (prediction,) = acc.Scalars("hp/prediction")
    assert prediction.step == 400 and prediction.value == pytest.approx(cli.final_metrics["prediction"], rel=1e-6)
    assert abs(prediction.value - 32.0) < 0.05
    assert acc.Scalars("hp/abs_error")[-1].value == pytest.approx(abs(prediction.value - 32.0), abs=1e-5)
    # The final losses are the model's MSE on the DataModule's own data.
    with torch.no_grad():
        for split in ("train", "val"):
            x, y = getattr(cli.datamodule, f"{split}_x"), getattr(cli.datamodule, f"{split}_y")
            expected = torch.mean((cli.model(x) - y) ** 2).item()
            assert acc.Scalars(f"hp/{split}_loss")[-1].value == pytest.approx(expected, rel=1e-5, abs=1e-12)


def test_validate_and_test_evaluate_the_checkpoint(lab_run, tmp_path):
    workdir, _ = lab_run
    ckpt = str(run_dir(workdir) / "checkpoints" / "last.ckpt")
    val = cli_in_process(tmp_path, "validate", "--ckpt_path", ckpt)
    test = cli_in_process(tmp_path, "test", "--ckpt_path", ckpt)
    assert val.trainer.callback_metrics["val/loss"].item() < 1e-3
    assert val.trainer.callback_metrics["val/r2"].item() == pytest.approx(1.0, abs=1e-3)
    assert 0 <= test.trainer.callback_metrics["test/mae"].item() < 0.1
    # The checkpoint's hyperparameters drive the model built for evaluation.
    assert val.model.hparams.hidden_size == 5


def test_last_checkpoint_holds_the_final_weights_between_scheduled_saves(tmp_path):
    # Scheduled saves come every 100 epochs: 120 epochs end 20 epochs after the last of them.
    cli = fit_in_process(tmp_path, "--trainer.max_epochs", "120")
    ckpt = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 120
    for key, value in cli.model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][key], value.cpu()), key


def test_checkpointing_can_be_turned_off(tmp_path):
    cli = fit_in_process(tmp_path, "--trainer.max_epochs", "5", "--trainer.enable_checkpointing", "false")
    assert cli.trainer.checkpoint_callback is None
    assert not (run_dir(tmp_path) / "checkpoints").exists()


def test_resuming_a_finished_run_trains_nothing_and_reports_the_same_final_metrics(tmp_path):
    first = fit_in_process(tmp_path, "--trainer.max_epochs", "30")
    again = fit_in_process(tmp_path, "--trainer.max_epochs", "30", "--ckpt_path", "last")
    assert again.trainer.global_step == 30
    assert set(again.final_metrics) == {"prediction", "train_loss", "val_loss", "abs_error"}
    for key, value in first.final_metrics.items():
        assert again.final_metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_one_progress_bar_counts_the_whole_run_and_validate_shows_progress(tmp_path):
    from regression_lab.lit.callbacks import RunProgressBar

    on = ("--trainer.enable_progress_bar", "true")  # the helpers turn it off by default
    cli = fit_in_process(
        tmp_path, *on, "--trainer.max_epochs", "30", "--data.num_samples", "20", "--data.batch_size", "8"
    )
    bar = cli.trainer.progress_bar_callback
    assert isinstance(bar, RunProgressBar)
    assert bar.train_progress_bar.total == bar.train_progress_bar.n == 30 * 3  # 3 batches an epoch
    resumed = fit_in_process(
        tmp_path, *on, "--trainer.max_epochs", "40", "--data.num_samples", "20", "--data.batch_size", "8",
        "--ckpt_path", "last",
    )  # fmt: skip
    assert resumed.trainer.progress_bar_callback.train_progress_bar.n == 40 * 3
    ckpt = str(run_dir(tmp_path) / "checkpoints" / "last.ckpt")
    val = cli_in_process(tmp_path, "validate", *on, "--ckpt_path", ckpt)
    assert val.trainer.progress_bar_callback is not None
