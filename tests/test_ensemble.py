"""Seed ensembles (in-process): each member is its seed trained alone, a diverged member leaves the others alone,
checkpoints predict a mean and a spread and resume, and TensorBoard holds the members' numbers.
Run: pytest tests/test_ensemble.py"""

import pytest
import torch
from helpers import LAST, QUIET, RUN, edited, events, fit_in_process, one_error_line, put, run_main

from regression_lab import predict
from regression_lab.checkpoint import load_model
from regression_lab.metrics import FinalMetrics
from regression_lab.predict import Predictor


def member(cli, **setting) -> int:
    """The index of the member with these settings and seed."""
    return next(i for i, m in enumerate(cli.model.member_index()) if all(m[k] == v for k, v in setting.items()))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def final(cli) -> FinalMetrics:
    return next(c for c in cli.trainer.callbacks if isinstance(c, FinalMetrics))


@pytest.fixture(scope="module")
def lab_ensemble(tmp_path_factory):
    """The lab's data: hidden {4, 5} x lr {0.01, 0.02} x seeds {0, 3}, 120 epochs, snapshots at 19 and 100."""
    workdir = tmp_path_factory.mktemp("ensemble")
    grid = "--model.hidden_size [4,5] --model.lr [0.01,0.02] --model.seeds [0,3] --trainer.max_epochs 120"
    grid += " --trainer.callbacks+=FinalMetrics"
    return workdir, fit_in_process(workdir, *grid.split(), *"--trainer.callbacks.snapshot_epochs [19,100]".split())


@pytest.mark.parametrize("hidden, lr, seed", [(5, 0.01, 0), (4, 0.02, 3)])
def test_a_member_equals_the_same_seed_trained_alone(lab_ensemble, tmp_path, hidden, lr, seed):
    _, ens = lab_ensemble
    setting = f"--model.hidden_size {hidden} --model.lr {lr} --seed_everything {seed} --trainer.max_epochs 120"
    lone = fit_in_process(tmp_path, *setting.split())
    i, snap = member(ens, hidden_size=hidden, lr=lr, seed=seed), final(ens).snapshots[120]
    assert max_diff(ens.model.member(i).state_dict(), lone.model.net.state_dict()) <= 1e-5
    assert float(snap["prediction"][i]) == pytest.approx(lone.final_metrics["prediction"], abs=1e-5)
    assert float(snap["val_loss"][i]) == pytest.approx(lone.final_metrics["val_loss"], rel=1e-4, abs=1e-6)


def test_shuffled_noisy_mini_batches_with_momenta_and_decays_are_exact_too(tmp_path):
    data = "--trainer.max_epochs 20 --data.batch_size 2 --data.shuffle true --data.noise_std 0.3 --data.num_samples 7"
    grid = "--model.hidden_size [5,8] --model.lr [0.005,0.01] --model.momentum [0.0,0.5]"
    ens = fit_in_process(tmp_path, *f"{grid} --model.weight_decay [0.0,0.01] --model.seeds [1,2] {data}".split())
    assert len(ens.model.stacks) == 8  # one SGD parameter group per (lr, momentum, weight decay)
    setting = "--model.hidden_size 5 --model.lr 0.01 --model.momentum 0.5 --model.weight_decay 0.01 --seed_everything 2"
    lone = fit_in_process(tmp_path, *f"{setting} {data}".split())  # padded to 8, with momentum and decay
    assert lone.final_metrics["train_loss"] < 5.0  # it trained: the comparison means something
    i = member(ens, hidden_size=5, lr=0.01, momentum=0.5, weight_decay=0.01, seed=2)
    # Steps of lr 0.01 at momentum 0.5 on pairs of noisy samples amplify float32's last bits, in which a padded
    # member's products may differ (by how much depends on the CPU); another seed or setting is far further off.
    assert max_diff(ens.model.member(i).state_dict(), lone.model.net.state_dict()) <= 1e-4


def test_a_diverged_member_is_retired_and_the_others_train_on(tmp_path):
    ens = fit_in_process(tmp_path, *"--model.lr [0.01,3.0] --model.seeds [0,1] --trainer.max_epochs 60".split())
    assert ens.model.diverged().tolist() == [False, False, True, True]
    assert ens.final_metrics["diverged"] == 2 and ens.final_metrics["members"] == 4
    lone = fit_in_process(tmp_path, *"--model.lr 0.01 --seed_everything 1 --trainer.max_epochs 60".split())
    assert max_diff(ens.model.member(member(ens, lr=0.01, seed=1)).state_dict(), lone.model.net.state_dict()) <= 1e-5
    for ckpt in (tmp_path / RUN / "checkpoints").glob("*.ckpt"):  # nothing non-finite written
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())
        assert float(state["stacks.1.weights"].abs().sum()) == 0.0  # the lr 3.0 stack
    proc = run_main(*"fit --model.num_seeds 3 --model.lr 5.0 --trainer.max_epochs 30".split(), *QUIET, cwd=tmp_path)
    one_error_line(proc, "every member of the ensemble diverged", code=1)


def test_an_ensemble_checkpoint_predicts_the_mean_and_spread_and_resumes_the_same_members(tmp_path, monkeypatch):
    cli = fit_in_process(tmp_path / "a", *"--model.num_seeds 3 --seed_everything 10 --trainer.max_epochs 60".split())
    assert cli.model.stacks[0].seeds.tolist() == list(range(10, 13))
    proc = run_main(*"predict --x 3 --x 10 --ckpt_path".split(), str(tmp_path / "a" / LAST), cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines[0] == "x,prediction,std", proc.stderr
    with torch.no_grad():  # each member as a lone MyNN (a lone fit of its seed: test_a_member_equals...)
        preds = [cli.model.member(i)(torch.tensor([[3.0], [10.0]])).flatten().tolist() for i in range(3)]
    for line, values in zip(lines[1:], torch.tensor(preds, dtype=torch.float64).T, strict=True):
        expected = [float(values.mean()), float(values.std())]
        assert [float(v) for v in line.split(",")[1:]] == pytest.approx(expected, abs=2e-5)
    assert float(lines[2].split(",")[2]) > 10 * float(lines[1].split(",")[2])  # members disagree far out
    whole = Predictor(tmp_path / "a" / LAST)([3.0, 10.0, -1.0])
    monkeypatch.setattr(predict, "CHUNK_VALUES", 1)  # an x at a time: memory bounded by the chunk, the same numbers
    mean, std = Predictor(tmp_path / "a" / LAST)([3.0, 10.0, -1.0])
    assert mean == whole[0] and std == pytest.approx(whole[1], rel=1e-12)
    fit_in_process(tmp_path / "b", *"--model.num_seeds 3 --seed_everything 10 --trainer.max_epochs 30".split())
    own = "--model.num_seeds 3 --model.hidden_size 5"  # its own options: 5 is the [5] it saved
    resumed = fit_in_process(tmp_path / "b", *f"--ckpt_path last --trainer.max_epochs 60 {own}".split())  # seed 0 here
    assert resumed.model.stacks[0].seeds.tolist() == list(range(10, 13))
    assert float((cli.model.stacks[0].weights - resumed.model.stacks[0].weights).detach().abs().max()) <= 1e-6


def test_tensorboard_holds_the_members_numbers_per_setting(lab_ensemble):
    workdir, ens = lab_ensemble
    run = workdir / RUN
    acc, sizes = events(run, scalars=0, histograms=0, images=0), ens.model.setting_sizes()
    for epochs in (100, 120):  # validations at every 20th epoch: these two are snapshots too
        snap = final(ens).snapshots[epochs]
        vals, preds = snap["val_loss"].split(sizes), snap["prediction"].split(sizes)
        for setting, val, pred in zip(ens.model.settings, vals, preds, strict=True):
            name = f"h{setting['hidden_size']}_lr{setting['lr']:g}"
            (hist,) = [h for h in acc.Histograms(f"members_val_loss_log10/{name}") if h.step == epochs]
            assert hist.histogram_value.num == 2
            assert hist.histogram_value.sum == pytest.approx(float(val.clamp_min(1e-12).log10().sum()), rel=1e-5)
            (hist,) = [h for h in acc.Histograms(f"members_prediction/{name}") if h.step == epochs]
            assert hist.histogram_value.sum == pytest.approx(float(pred.sum()), rel=1e-5)
            assert (run / "hparams" / f"h{setting['hidden_size']}_e{epochs}_lr{setting['lr']:g}").is_dir()  # HParams
            val_p50 = [p.value for p in acc.Scalars(f"val_loss_percentiles/{name}/p50") if p.step == epochs]
            assert val_p50 == [pytest.approx(float(torch.quantile(val.double(), 0.5)), rel=1e-4)]
    assert "ensemble/abs_error_at_10" in acc.Tags()["images"]
    # The percentiles at step 20 are those of the 20th step's losses, made with the weights of the snapshot at 19.
    for setting, losses in zip(ens.model.settings, final(ens).snapshots[19]["train_loss"].split(sizes), strict=True):
        tag = f"train_loss_percentiles/h{setting['hidden_size']}_lr{setting['lr']:g}"
        for level in (10, 50, 90):
            (point,) = [s for s in acc.Scalars(f"{tag}/p{level}") if s.step == 20]
            assert point.value == pytest.approx(float(torch.quantile(losses.double(), level / 100)), rel=1e-4)


def test_a_sweeps_and_a_crafted_ensemble_checkpoint_are_refused_clearly(lab_ensemble, tmp_path):
    src = lab_ensemble[0] / LAST
    assert [s.hidden_sizes.tolist() for s in load_model(src)[0]] == [[4, 4, 5, 5]] * 2
    (tmp_path / "m.onnx").write_bytes(b"an earlier export")  # left whole by the refusal
    for args, phrase in ((["predict", "--x", "10"], "holds an ensemble of 4 settings (a sweep's)"),
                         (["landscape", "--no_tensorboard"], "holds an ensemble: landscape takes a single-model"),
                         ("export --format onnx --out m.onnx".split(), "ensemble: export takes a single")):  # fmt: skip
        one_error_line(run_main(*args, "--ckpt_path", str(src), cwd=tmp_path), phrase)
    assert (tmp_path / "m.onnx").read_bytes() == b"an earlier export"
    edited(src, tmp_path / "bad.ckpt", put("stacks.0.seeds", torch.zeros(3, dtype=torch.int64)))
    one_error_line(run_main(*"predict --ckpt_path bad.ckpt --x 10".split(), cwd=tmp_path),
                   "checkpoint's stacks.0.seeds has shape (3,), not (4,)")  # fmt: skip
