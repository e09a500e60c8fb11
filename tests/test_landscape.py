"""Loss landscapes against exact oracles: 11 (w - 3)^2, least squares, one-by-one evaluation,
the checkpoint's own losses; the TensorBoard export read back; bad input.

Run: pytest tests/test_landscape.py
"""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.func import functional_call

from regression_lab.core import landscape as ls
from regression_lab.core.checkpoints import load_mynn
from regression_lab.core.models import MyNN
from regression_lab.core.samples import line_split


@pytest.fixture
def lab_data():
    return line_split({}, "train")


def test_lab_sweep_is_11_w_minus_3_squared(lab_data):
    x, y = lab_data
    curve = ls.lab_1d(x, y)  # w in [-1, 5], 1000 points, b0 = 2
    assert len(curve.values) == 1000
    expected = 11 * (curve.values.double() - 3) ** 2
    torch.testing.assert_close(curve.loss.double(), expected, rtol=1e-5, atol=1e-4)
    assert curve.loss[0].item() == pytest.approx(176, rel=1e-6)
    assert curve.loss[-1].item() == pytest.approx(44, rel=1e-6)
    step = 6 / 999
    assert abs(curve.summary()["argmin_w"] - 3) <= step


def test_linear_grid_minimum_agrees_with_least_squares():
    # Noisy data, so the least-squares line is not just (3, 2).
    x, y = line_split({"num_samples": 40, "noise_std": 1.5, "seed": 11}, "train")
    w_ls, b_ls = ls.least_squares(x, y)
    w_np, b_np = np.polyfit(x.flatten().double().numpy(), y.flatten().double().numpy(), 1)
    assert (w_ls, b_ls) == pytest.approx((w_np, b_np), abs=1e-5)
    assert abs(w_ls - 3) > 1e-3 or abs(b_ls - 2) > 1e-3
    surface = ls.linear_2d(x, y, (w_ls - 1, w_ls + 1), (b_ls - 2, b_ls + 2), 201)
    gw, gb = surface.argmin()
    assert abs(gw - w_ls) <= 2 / 200 and abs(gb - b_ls) <= 4 / 200
    # And the loss at each grid point is the MSE of that line.
    i, j = 17, 150
    w, b = surface.xs[i], surface.ys[j]
    assert surface.loss[i, j].item() == pytest.approx(torch.mean((w * x + b - y) ** 2).item(), rel=1e-5)


def test_lab_linear_surface_is_the_exact_quadratic(lab_data):
    x, y = lab_data
    surface = ls.linear_2d(x, y, (1.0, 5.0), (-2.0, 6.0), 41)
    assert surface.argmin() == pytest.approx((3.0, 2.0), abs=1e-5)
    gw, gb = torch.meshgrid(surface.xs.double(), surface.ys.double(), indexing="ij")
    # MSE(w, b) = mean((w - 3) x + (b - 2))^2 with x = 1..5: 11 dw^2 + 6 dw db + db^2.
    dw, db = gw - 3, gb - 2
    torch.testing.assert_close(surface.loss.double(), 11 * dw**2 + 6 * dw * db + db**2, rtol=1e-5, atol=1e-4)


def test_batched_evaluation_equals_one_by_one():
    torch.manual_seed(0)
    net = MyNN(7)
    x = torch.linspace(-2, 3, 13).unsqueeze(1)
    y = torch.sin(x)
    k = 37
    params = {n: p.detach() + 0.3 * torch.randn(k, *p.shape) for n, p in net.named_parameters()}
    batched = ls.batched_mse(net, params, x, y, chunk=5)  # several chunks, one of them short
    one_by_one = torch.stack(
        [torch.mean((functional_call(net, {n: t[i] for n, t in params.items()}, (x,)) - y) ** 2) for i in range(k)]
    )
    torch.testing.assert_close(batched, one_by_one.detach())
    torch.testing.assert_close(ls.batched_mse(net, params, x, y), batched)  # default chunking


@pytest.mark.parametrize("include_bias", [False, True])
def test_filter_normalized_directions(include_bias):
    torch.manual_seed(1)
    params = {n: p.detach() for n, p in MyNN(6).named_parameters()}
    d = ls.filter_normalized_direction(params, torch.Generator().manual_seed(3), include_bias)
    for name, p in params.items():
        assert d[name].shape == p.shape
        if p.dim() == 2:
            torch.testing.assert_close(d[name].norm(dim=1), p.norm(dim=1))
        elif include_bias:
            assert d[name].norm().item() == pytest.approx(p.norm().item(), rel=1e-5)
            assert torch.count_nonzero(d[name]) > 0
        else:
            assert torch.count_nonzero(d[name]) == 0
    again = ls.filter_normalized_direction(params, torch.Generator().manual_seed(3), include_bias)
    assert all(torch.equal(d[n], again[n]) for n in d)


@pytest.mark.parametrize("include_bias", [False, True])
def test_directions_live_on_the_parameters_device_while_the_generator_stays_on_the_cpu(include_bias):
    # The 'meta' device stands in for a GPU here: any arithmetic that mixes it with the CPU
    # generator's draws fails the way cuda:0-and-cpu does (which a GPU run once hit).
    params = {n: p.detach().to("meta") for n, p in MyNN(6).named_parameters()}
    d = ls.filter_normalized_direction(params, torch.Generator().manual_seed(3), include_bias)
    assert all(d[n].device.type == "meta" and d[n].shape == p.shape for n, p in params.items())
    plane = ls._along(params, [(d, torch.zeros(4, device="meta"))])
    assert all(t.device.type == "meta" and t.shape == (4, *params[n].shape) for n, t in plane.items())


def test_trained_network_landscape_from_the_lab_checkpoint(lab_ckpt):
    results = ls.compute(ls.Settings(resolution=21, interp_points=81), lab_ckpt)
    net, ckpt = load_mynn(lab_ckpt)
    x, y = line_split(ckpt["datamodule_hyper_parameters"], "train")
    with torch.no_grad():
        trained_loss = torch.mean((net(x) - y) ** 2).item()
    assert trained_loss < 1e-3
    plane = results.network["random_2d"]
    assert plane.loss.shape == (21, 21)
    assert plane.summary()["center"] == pytest.approx(trained_loss, rel=1e-4, abs=1e-9)
    assert results.trained_loss == pytest.approx(trained_loss, rel=1e-6)
    assert plane.summary()["sharpness"] > 1.0  # the plane climbs away from the minimum
    line = results.network["random_1d"]
    assert line.loss[10].item() == pytest.approx(trained_loss, rel=1e-4, abs=1e-9)
    # Interpolation: alpha 0 is the initial weights' loss, alpha 1 the trained weights'.
    interp = results.network["interpolation"]
    initial = MyNN(5)
    initial.load_state_dict(ckpt["initial_state_dict"])
    with torch.no_grad():
        initial_loss = torch.mean((initial(x) - y) ** 2).item()
    i0 = int(torch.argmin(interp.values.abs()))
    i1 = int(torch.argmin((interp.values - 1).abs()))
    assert interp.values[i0].item() == pytest.approx(0, abs=1e-6) and interp.values[i1].item() == pytest.approx(
        1, abs=1e-6
    )
    assert interp.loss[i0].item() == pytest.approx(initial_loss, rel=1e-4)
    assert interp.loss[i1].item() == pytest.approx(trained_loss, rel=1e-3, abs=1e-8)
    assert initial_loss > 100 * trained_loss


def test_cli_writes_files_and_tensorboard_into_the_run(lab_ckpt, tmp_path):
    out = tmp_path / "out"
    proc = run_main("landscape", "--ckpt_path", str(lab_ckpt), "--resolution", "21", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lab 1D: minimum MSE 0 at w = 3.0000" in proc.stdout
    names = sorted(p.name for p in out.iterdir())
    for stem in ("lab_1d", "linear_2d", "random_2d", "random_1d", "interpolation"):
        assert f"{stem}.png" in names
    with (out / "lab_1d.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["w", "loss"] and len(rows) == 1001
    w, loss = float(rows[1][0]), float(rows[1][1])
    assert (w, loss) == (pytest.approx(-1.0), pytest.approx(176.0, rel=1e-5))
    with (out / "interpolation.csv").open() as fh:
        assert next(csv.reader(fh)) == ["alpha", "loss"]
    linear = np.load(out / "linear_2d.npz")
    assert linear["loss"].shape == (21, 21) and linear["w"].shape == (21,) and linear["b"].shape == (21,)
    random2d = np.load(out / "random_2d.npz")
    assert set(random2d.files) == {"alpha", "beta", "loss"}

    run_dir = lab_ckpt.parent.parent  # the training run's own directory
    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert events, "no events written into the run directory"
    acc = EventAccumulator(str(events[-1]), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for name in ("lab_1d", "linear_2d", "random_2d", "random_1d", "interpolation"):
        assert f"landscape/{name}" in tags["images"], name
    assert len(acc.Scalars("landscape/lab_1d/curve")) == 1000
    (argmin,) = acc.Scalars("landscape/lab_1d/argmin_w")
    assert argmin.value == pytest.approx(3.0, abs=6 / 999)
    assert argmin.step == 400  # at the run's last step, beside the end of its training curves
    assert acc.Scalars("landscape/linear_2d/min")[0].value == pytest.approx(0.0, abs=1e-6)
    mesh = acc.PluginTagToContent("mesh")
    assert "landscape/random_2d_surface_VERTEX" in mesh and "landscape/linear_2d_surface_FACE" in mesh
    assert "landscape/settings/text_summary" in tags["tensors"]


def test_without_a_checkpoint_the_lab_parts_still_run(tmp_path):
    proc = run_main("landscape", "--resolution", "11", "--no_tensorboard", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no checkpoint" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "lab_1d.csv",
        "lab_1d.png",
        "linear_2d.npz",
        "linear_2d.png",
    ]


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--resolution", "1"], "--resolution must be an integer >= 2"),
        (["--resolution", "100000"], "too large"),
        (["--w_range", "5", "-1"], "--w_range must be an increasing range"),
        (["--span", "0", "0"], "--span must be an increasing range"),
        (["--w_range", "a", "1"], "Expected a <class 'float'>. Got value: a"),
        (["--interp_points", "1"], "--interp_points"),
        (["--ckpt_path", "missing.ckpt"], "checkpoint not found"),
        (["--ckpt_path", "foreign.ckpt"], "not a regression-lab MyNN checkpoint"),
    ],
)
def test_bad_landscape_input_is_one_line_exit_2(tmp_path, args, phrase):
    torch.save({"state_dict": {"conv.weight": torch.zeros(3, 3)}}, tmp_path / "foreign.ckpt")
    proc = run_main("landscape", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and phrase in proc.stderr and "Traceback" not in proc.stderr
    assert not Path(tmp_path / "lightning_logs").exists()


def test_fit_can_log_the_landscape_at_the_end_of_training(tmp_path):
    from helpers import fit_in_process

    cli = fit_in_process(
        tmp_path,
        "--trainer.max_epochs",
        "30",
        "--trainer.callbacks+=LandscapeLogger",
        "--trainer.callbacks.resolution",
        "11",
    )
    (events,) = (tmp_path / "lightning_logs" / "version_0").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert "landscape/random_2d" in acc.Tags()["images"] and "train/loss" in acc.Tags()["scalars"]
    (centre,) = acc.Scalars("landscape/random_2d/center")
    assert centre.step == cli.trainer.global_step == 30
    x, y = line_split({}, "train")
    with torch.no_grad():
        assert centre.value == pytest.approx(torch.mean((cli.model.net(x) - y) ** 2).item(), rel=1e-4)
