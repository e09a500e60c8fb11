"""Seed ensembles: every member equals the same seed trained alone, snapshots equal shorter fits,
a diverged member leaves the others alone, checkpoints predict a mean and a spread, and the
TensorBoard pictures hold the members' numbers. All fits run in-process (fast tier).

Run: pytest tests/test_ensemble.py
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import fingerprint, fit_in_process, run_main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from regression_lab.core.checkpoints import load_model
from regression_lab.core.ensemble import MyNNStack, parse_seeds
from regression_lab.core.errors import UsageError
from regression_lab.core.models import MyNN
from regression_lab.lit.ensemble_metrics import EnsembleMetrics

METRICS = "--trainer.callbacks+=regression_lab.lit.ensemble_metrics.EnsembleMetrics"


def member_weights(cli, hidden: int, lr: float, seed: int) -> dict[str, torch.Tensor]:
    """The weights of one member of an ensemble fit, as a lone MyNN's state dict."""
    members = cli.model.member_index()
    i = next(k for k, m in enumerate(members) if (m["hidden_size"], m["lr"], m["seed"]) == (hidden, lr, seed))
    return cli.model.member(i).state_dict()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def lab_ensemble(tmp_path_factory):
    """The lab's full-batch data: hidden {4, 5} x lr {0.01, 0.02} x seeds {0, 3}, 400 epochs,
    with a snapshot after 100 epochs and the loss percentiles written at step 20's end."""
    workdir = tmp_path_factory.mktemp("ensemble")
    cli = fit_in_process(
        workdir, "--model.hidden_size", "[4,5]", "--model.lr", "[0.01,0.02]", "--model.seeds", "[0,3]",
        METRICS, "--trainer.callbacks.snapshot_epochs", "[19,100]", "--trainer.callbacks.curves_every_n_steps", "20",
    )  # fmt: skip
    return workdir, cli


@pytest.mark.parametrize("hidden, lr, seed", [(5, 0.01, 0), (4, 0.02, 3), (5, 0.02, 3)])
def test_a_member_equals_the_same_seed_trained_alone(lab_ensemble, tmp_path, hidden, lr, seed):
    _, ens = lab_ensemble
    lone = fit_in_process(
        tmp_path, "--model.hidden_size", str(hidden), "--model.lr", str(lr), "--seed_everything", str(seed)
    )
    assert max_diff(member_weights(ens, hidden, lr, seed), lone.model.net.state_dict()) <= 1e-5
    members = ens.model.member_index()
    i = next(k for k, m in enumerate(members) if (m["hidden_size"], m["lr"], m["seed"]) == (hidden, lr, seed))
    (metrics,) = (c for c in ens.trainer.callbacks if isinstance(c, EnsembleMetrics))
    final = metrics.snapshots[400]
    assert float(final["prediction"][i]) == pytest.approx(lone.final_metrics["prediction"], abs=1e-5)
    assert float(final["val_loss"][i]) == pytest.approx(lone.final_metrics["val_loss"], rel=1e-4, abs=1e-6)


def test_the_100_epoch_snapshot_equals_a_100_epoch_fit(lab_ensemble, tmp_path):
    _, ens = lab_ensemble
    (metrics,) = (c for c in ens.trainer.callbacks if isinstance(c, EnsembleMetrics))
    lone = fit_in_process(
        tmp_path, "--model.hidden_size", "4", "--model.lr", "0.02", "--seed_everything", "3",
        "--trainer.max_epochs", "100",
    )  # fmt: skip
    members = ens.model.member_index()
    i = next(k for k, m in enumerate(members) if (m["hidden_size"], m["lr"], m["seed"]) == (4, 0.02, 3))
    snap = metrics.snapshots[100]
    assert float(snap["prediction"][i]) == pytest.approx(lone.final_metrics["prediction"], abs=1e-5)
    assert float(snap["train_loss"][i]) == pytest.approx(lone.final_metrics["train_loss"], rel=1e-4, abs=1e-7)


def test_shuffled_noisy_mini_batches_with_momenta_and_decays_are_exact_too(tmp_path):
    common = [
        "--trainer.max_epochs", "40", "--data.batch_size", "2", "--data.shuffle", "true",
        "--data.noise_std", "0.3", "--data.num_samples", "7",
    ]  # fmt: skip
    ens = fit_in_process(
        tmp_path, "--model.hidden_size", "[5,8]", "--model.lr", "[0.005,0.01]", "--model.momentum", "[0.0,0.5]",
        "--model.weight_decay", "[0.0,0.01]", "--model.seeds", "[1,2]", *common,
    )  # fmt: skip
    assert len(ens.model.stacks) == 8  # one SGD parameter group per (lr, momentum, weight decay)
    for hidden, lr, momentum, decay, seed in [
        (8, 0.01, 0.5, 0.01, 1),
        (5, 0.005, 0.5, 0.0, 2),
        (5, 0.01, 0.0, 0.01, 1),
    ]:
        lone = fit_in_process(
            tmp_path, "--model.hidden_size", str(hidden), "--model.lr", str(lr), "--model.momentum", str(momentum),
            "--model.weight_decay", str(decay), "--seed_everything", str(seed), *common,
        )  # fmt: skip
        assert lone.final_metrics["train_loss"] < 5.0  # it trained: the comparison means something
        wanted = {"hidden_size": hidden, "lr": lr, "momentum": momentum, "weight_decay": decay, "seed": seed}
        i = ens.model.member_index().index(wanted)
        assert max_diff(ens.model.member(i).state_dict(), lone.model.net.state_dict()) <= 1e-5


def test_members_start_as_seeded_lone_models_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    stack = MyNNStack(5, [0, 42])
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(42)
    expected = MyNN(5).state_dict()
    assert max_diff(stack.member(1).state_dict(), expected) == 0.0


def test_a_diverged_member_is_retired_and_the_others_train_on(tmp_path):
    ens = fit_in_process(
        tmp_path, "--model.hidden_size", "5", "--model.lr", "[0.01,3.0]", "--model.seeds", "[0,1]",
        "--trainer.max_epochs", "60",
    )  # fmt: skip
    assert ens.model.diverged().tolist() == [False, False, True, True]
    assert ens.final_metrics["diverged"] == 2 and ens.final_metrics["members"] == 4
    lone = fit_in_process(tmp_path, "--model.lr", "0.01", "--seed_everything", "1", "--trainer.max_epochs", "60")
    assert max_diff(member_weights(ens, 5, 0.01, 1), lone.model.net.state_dict()) <= 1e-5
    # Nothing non-finite is written: the diverged members are zeros in every checkpoint.
    for ckpt in (tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())
        assert float(state["stacks.1.weights"].abs().sum()) == 0.0  # the lr 3.0 stack


def test_every_member_diverging_fails_the_fit_with_exit_1(tmp_path):
    proc = run_main(
        "fit", "--model.num_seeds", "3", "--model.lr", "5.0", "--trainer.max_epochs", "30",
        "--trainer.enable_progress_bar", "false", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: every member of the ensemble diverged")


def test_an_ensemble_checkpoint_predicts_the_mean_and_the_spread(tmp_path):
    cli = fit_in_process(tmp_path, "--model.num_seeds", "6", "--seed_everything", "10", "--trainer.max_epochs", "200")
    assert cli.model.stacks[0].seeds.tolist() == list(range(10, 16))
    ckpt = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    proc = run_main("predict", "--ckpt_path", str(ckpt), "--x", "3", "--x", "10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "x,prediction,std"
    # Each member trained alone gives the same numbers.
    preds = []
    for seed in range(10, 16):
        lone = fit_in_process(tmp_path, "--seed_everything", str(seed), "--trainer.max_epochs", "200")
        preds.append([lone.model.predict_value(3.0), lone.model.predict_value(10.0)])
    per_x = torch.tensor(preds, dtype=torch.float64).T
    for line, values in zip(lines[1:], per_x, strict=True):
        _, mean, std = line.split(",")
        assert float(mean) == pytest.approx(float(values.mean()), abs=2e-5)
        assert float(std) == pytest.approx(float(values.std()), abs=2e-5)
    # Out of the training range the members disagree far more than inside it.
    assert float(lines[2].split(",")[2]) > 10 * float(lines[1].split(",")[2])


def test_a_resumed_ensemble_continues_the_same_members(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = fit_in_process(tmp_path / "a", "--model.num_seeds", "3", "--seed_everything", "4",
                              "--trainer.max_epochs", "60")  # fmt: skip
    fit_in_process(tmp_path / "b", "--model.num_seeds", "3", "--seed_everything", "4", "--trainer.max_epochs", "30")
    # The seed of the resumed process differs: the members come from the checkpoint's first_seed.
    resumed = fit_in_process(tmp_path / "b", "--ckpt_path", "last", "--trainer.max_epochs", "60")
    assert resumed.model.stacks[0].seeds.tolist() == [4, 5, 6]
    a, b = straight.model.stacks[0].weights, resumed.model.stacks[0].weights
    assert float((a - b).detach().abs().max()) <= 1e-6


def test_tensorboard_holds_the_members_numbers_per_setting(lab_ensemble):
    workdir, ens = lab_ensemble
    run = workdir / "lightning_logs" / "version_0"
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    (metrics,) = (c for c in ens.trainer.callbacks if isinstance(c, EnsembleMetrics))
    sizes = ens.model.setting_sizes()
    for epochs in (19, 100, 400):
        snap = metrics.snapshots[epochs]
        for setting, val, pred in zip(
            ens.model.settings, snap["val_loss"].split(sizes), snap["prediction"].split(sizes), strict=True
        ):
            name = f"h{setting['hidden_size']}_e{epochs}_lr{setting['lr']:g}"
            (hist,) = acc.Histograms(f"ensemble_val_loss/{name}")
            assert hist.step == epochs and hist.histogram_value.num == 2
            assert hist.histogram_value.sum == pytest.approx(float(val.sum()), rel=1e-5)
            (hist,) = acc.Histograms(f"ensemble_prediction/{name}")
            assert hist.histogram_value.sum == pytest.approx(float(pred.sum()), rel=1e-5)
            assert (run / "hparams" / name).is_dir()  # one HParams row per setting
    assert "ensemble/abs_error_at_10" in acc.Tags()["images"]
    # The training-loss percentiles at step 20 are those of the loss of the 20th step's forward
    # pass, made with the weights after 19 epochs: the snapshot at 19.
    snap = metrics.snapshots[19]["train_loss"].split(sizes)
    for setting, losses in zip(ens.model.settings, snap, strict=True):
        tag = f"train_loss_percentiles/h{setting['hidden_size']}_lr{setting['lr']:g}"
        for level in (10, 50, 90):
            (point,) = [s for s in acc.Scalars(f"{tag}/p{level}") if s.step == 20]
            expected = torch.quantile(losses.double(), level / 100)
            assert point.value == pytest.approx(float(expected), rel=1e-4)


def test_parse_seeds_takes_ranges_and_lists():
    assert parse_seeds(["0-3", "7"]) == [0, 1, 2, 3, 7]
    assert parse_seeds([5]) == [5]
    assert len(parse_seeds(["0-999"])) == 1000
    for bad in (["3-1"], ["-1"], ["x"], [], ["0-99999999"]):
        with pytest.raises(UsageError):
            parse_seeds(bad)


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--model.num_seeds", "0"], "model.num_seeds must be an integer >= 1"),
        (["--model.num_seeds", "2000000"], "model.num_seeds must be <= 1,000,000"),
        (["--model.seeds", "[]"], "model.seeds is empty"),
        (["--model.seeds", "[-1]"], "model.seeds must be integers in [0, 4294967295]"),
        (["--model.seeds", "[1,1]"], "must not repeat"),
        (["--model.first_seed", "4294967295", "--model.num_seeds", "2"], "must be <= 4294967295"),
        (["--model.hidden_size", "[4,0]", "--model.num_seeds", "2"], "model.hidden_size must be an integer >= 1"),
        (["--model.lr", "[]", "--model.num_seeds", "2"], "model.lr is empty"),
        (["--model.num_seeds", "1000", "--data.num_samples", "100000000"], "more than half of this machine's memory"),
    ],
)
def test_bad_ensemble_settings_are_one_line_exit_2(tmp_path, args, phrase):
    before = fingerprint(tmp_path)
    proc = run_main("fit", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1500:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and phrase in last and "Traceback" not in proc.stderr
    assert fingerprint(tmp_path) == before
    assert not list((tmp_path / "lightning_logs").glob("version_*")) if (tmp_path / "lightning_logs").exists() else True


def test_landscape_and_a_sweep_checkpoint_refuse_clearly(tmp_path):
    fit_in_process(tmp_path, "--model.hidden_size", "[4,5]", "--model.num_seeds", "2", "--trainer.max_epochs", "5")
    ckpt = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    stacks, _ = load_model(ckpt)
    assert [s.hidden_sizes.tolist() for s in stacks] == [[4, 4, 5, 5]]
    proc = run_main("predict", "--ckpt_path", str(ckpt), "--x", "10", cwd=tmp_path)
    assert proc.returncode == 2 and "ensemble of 2 settings" in proc.stderr
    proc = run_main("landscape", "--ckpt_path", str(ckpt), "--no_tensorboard", cwd=tmp_path)
    assert proc.returncode == 2 and "holds an ensemble" in proc.stderr
    assert not math.isnan(stacks[0](torch.ones(1, 1)).sum().item())


def test_a_crafted_ensemble_checkpoint_is_refused_by_name(tmp_path, lab_ensemble):
    workdir, _ = lab_ensemble
    src = workdir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(src, weights_only=True)
    ckpt["state_dict"]["stacks.0.seeds"] = torch.zeros(3, dtype=torch.int64)
    bad = Path(tmp_path / "bad.ckpt")
    torch.save(ckpt, bad)
    proc = run_main("predict", "--ckpt_path", str(bad), "--x", "10", cwd=tmp_path)
    assert proc.returncode == 2
    assert "seeds does not match its 4 members" in proc.stderr
