"""Loss landscapes against exact oracles (11 (w - 3)^2, least squares, one-by-one evaluation, the checkpoint's own
losses), the TensorBoard export read back (fit's LandscapeLogger: test_curvature), thinning (bad input: test_cli).
Run: pytest tests/test_landscape.py"""

import math
import shutil

import numpy as np
import pytest
import torch
from helpers import edited, events, one_error_line, run_main
from torch.func import functional_call

from regression_lab import curvature, landscape_plots
from regression_lab import landscape as ls
from regression_lab.checkpoint import load_model
from regression_lab.data import RegressionDataModule
from regression_lab.models import MyNN

LAB = RegressionDataModule().samples("train")


def test_the_labs_sweep_is_11_w_minus_3_squared_and_the_surface_its_quadratic():
    results = ls.compute_for(ls.Settings(resolution=41, linear_w_range=(1.0, 5.0), linear_b_range=(-2.0, 6.0)), *LAB)
    curve = results.landscapes["lab_1d"]  # w in [-1, 5], 1000 points, b0 = 2
    w = curve.axes[0].double()
    torch.testing.assert_close(curve.loss.double(), 11 * (w - 3) ** 2, rtol=1e-5, atol=1e-4)
    assert (curve.loss[0].item(), curve.loss[-1].item()) == pytest.approx((176, 44), rel=1e-6)
    assert abs(curve.summary()["argmin_w"] - 3) <= 6 / 999
    surface = results.landscapes["linear_2d"]
    assert surface.argmin() == pytest.approx((3.0, 2.0), abs=1e-5) and results.least_squares == pytest.approx((3, 2))
    gw, gb = torch.meshgrid(*(a.double() for a in surface.axes), indexing="ij")
    # MSE(w, b) = mean(((w - 3) x + (b - 2))^2) over x = 1..5: 11 dw^2 + 6 dw db + db^2.
    torch.testing.assert_close(surface.loss.double(), 11 * (gw - 3) ** 2 + 6 * (gw - 3) * (gb - 2) + (gb - 2) ** 2,
                               rtol=1e-5, atol=1e-4)  # fmt: skip
    assert "no checkpoint" in results.notes[0] and set(results.landscapes) == {"lab_1d", "linear_2d"}


def test_the_grid_minimum_agrees_with_closed_form_least_squares_on_noisy_data():
    x, y = RegressionDataModule(num_samples=40, noise_std=1.5, seed=11).samples("train")
    w_ls, b_ls = ls.least_squares(x, y)
    assert (w_ls, b_ls) == pytest.approx(tuple(np.polyfit(x.flatten().double(), y.flatten().double(), 1)), abs=1e-5)
    assert abs(w_ls - 3) > 1e-3 or abs(b_ls - 2) > 1e-3  # not just the line itself
    surface = ls.compute_for(ls.Settings(resolution=201), x, y).landscapes["linear_2d"]  # w_ls +- 2, b_ls +- 4
    gw, gb = surface.argmin()
    assert abs(gw - w_ls) <= 4 / 200 and abs(gb - b_ls) <= 8 / 200


def test_batched_evaluation_in_chunks_equals_one_by_one(monkeypatch):
    torch.manual_seed(0)
    net, x = MyNN(7), torch.linspace(-2, 3, 13).unsqueeze(1)
    y = torch.sin(x)
    start = {n: p.detach() for n, p in net.named_parameters()}
    d1, d2 = ({n: torch.randn_like(p) for n, p in start.items()} for _ in range(2))
    a, b = torch.linspace(-1, 1, 7), torch.linspace(-2, 0.5, 5)
    monkeypatch.setattr(ls, "CHUNK_BYTES", 2000)  # several chunks, one of them short
    batched = ls.grid_losses(net, x, y, start, [d1, d2], [a, b])
    for i, j in [(0, 0), (3, 4), (6, 2)]:
        p = {n: start[n] + a[i] * d1[n] + b[j] * d2[n] for n in start}
        one_by_one = torch.mean((functional_call(net, p, (x,)) - y) ** 2).item()
        assert batched[i, j].item() == pytest.approx(one_by_one, rel=1e-5)


@pytest.mark.parametrize("include_bias", [False, True])
def test_filter_normalized_directions_live_on_the_parameters_device(include_bias):
    params = {n: p.detach() for n, p in MyNN(6).named_parameters()}
    d = ls.filter_normalized_direction(params, torch.Generator().manual_seed(3), include_bias)
    for name, p in params.items():
        if p.dim() == 2:
            torch.testing.assert_close(d[name].norm(dim=1), p.norm(dim=1))
        else:
            assert d[name].norm().item() == pytest.approx(p.norm().item() if include_bias else 0.0, rel=1e-5)
    again = ls.filter_normalized_direction(params, torch.Generator().manual_seed(3), include_bias)
    assert all(torch.equal(d[n], again[n]) for n in d)
    # 'meta' stands in for a GPU: mixing it with the CPU generator's draws fails as cuda:0-and-cpu did on a GPU run.
    meta = ls.filter_normalized_direction({n: p.to("meta") for n, p in params.items()}, torch.Generator(), include_bias)
    assert all(t.device.type == "meta" for t in meta.values())


def test_the_trained_networks_landscapes_from_the_lab_checkpoint(lab_ckpt):
    results = ls.compute(ls.Settings(resolution=21, interp_points=81), lab_ckpt)
    net, ckpt = load_model(lab_ckpt)
    x, y = LAB
    trained = torch.mean((net(x) - y) ** 2).item()
    assert trained < 1e-3 and results.trained_loss == pytest.approx(trained, rel=1e-6) and results.step == 400
    plane = results.landscapes["random_2d"]
    assert plane.loss.shape == (21, 21) and plane.summary()["sharpness"] > 1.0  # it climbs away from the minimum
    assert plane.summary()["center"] == pytest.approx(trained, rel=1e-4, abs=1e-9)
    assert results.landscapes["random_1d"].loss[10].item() == pytest.approx(trained, rel=1e-4, abs=1e-9)
    interp = results.landscapes["interpolation"]  # alpha 0: the initial weights, 1: the trained ones
    initial_loss = torch.mean((functional_call(net, ckpt["initial_state_dict"], (x,)) - y) ** 2).item()
    i0, i1 = int(torch.argmin(interp.axes[0].abs())), int(torch.argmin((interp.axes[0] - 1).abs()))
    assert interp.loss[i0].item() == pytest.approx(initial_loss, rel=1e-4) and initial_loss > 100 * trained
    assert interp.loss[i1].item() == pytest.approx(trained, rel=1e-3, abs=1e-8)


def test_the_command_writes_files_and_tensorboard_into_the_run(lab_ckpt, tmp_path):
    proc = run_main("landscape", "--ckpt_path", str(lab_ckpt), *"--resolution 21 --out out".split(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lab 1D: minimum MSE 0 at w = 3.0000" in proc.stdout
    out, curves, surfaces = tmp_path / "out", ("lab_1d", "random_1d", "interpolation"), ("linear_2d", "random_2d")
    files = [f"{n}.csv" for n in curves] + [f"{n}.npz" for n in surfaces] + [f"{n}.png" for n in curves + surfaces]
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "hessian.npz"])
    rows = (out / "lab_1d.csv").read_text().splitlines()
    assert rows[0] == "w,loss" and len(rows) == 1001 and float(rows[1].split(",")[1]) == pytest.approx(176.0, rel=1e-5)
    assert np.load(out / "linear_2d.npz")["loss"].shape == (21, 21)
    assert set(np.load(out / "random_2d.npz").files) == {"alpha", "beta", "loss"}
    (file,) = list(lab_ckpt.parents[1].glob("events.out.tfevents.*"))[-1:]  # the training run's own directory
    acc = events(file, scalars=0, images=0, tensors=0)
    assert {f"landscape/{n}" for n in curves + surfaces} <= set(acc.Tags()["images"])
    assert not [t for t in acc.Tags()["scalars"] if t.startswith("landscape/")]  # curves are figures against w, alpha
    assert "landscape/random_2d_surface_VERTEX" in acc.PluginTagToContent("mesh")
    (text,) = acc.Tensors("landscape/summary/text_summary")
    assert text.step == 400  # beside the training curves' end; the summaries in the table:
    assert "| lab_1d | min 0 at w = 3 |" in text.tensor_proto.string_val[0].decode().replace("; at the centre", " |")
    (out / "linear_2d.png").unlink()
    (out / "linear_2d.png").symlink_to("/sys/kernel/linear_2d.png")  # unwritable, after other files are written
    kept = {p.name: p.read_bytes() for p in out.iterdir() if not p.is_symlink()}
    again = run_main("landscape", "--ckpt_path", str(lab_ckpt), *"--resolution 5 --out out".split(), cwd=tmp_path)
    one_error_line(again, "cannot write the results in --out out: Permission denied")
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.is_symlink()} == kept  # all the files, or none


def test_a_landscape_finer_than_a_picture_is_drawn_thinned_and_kept_whole(lab_ckpt, tmp_path, monkeypatch):
    shutil.copy(lab_ckpt, tmp_path / "alone.ckpt")  # outside a run: its events go to a new version_N
    drawn = 21  # smaller limits than the shipped ones: the same thinning and notes, less drawing
    monkeypatch.setattr(landscape_plots, "MAX_DRAWN_AXIS", drawn)
    monkeypatch.setattr(landscape_plots, "MAX_DRAWN_CURVE", 50)
    monkeypatch.setattr(curvature, "MAX_HESSIAN_PARAMS", 10)
    res = 2 * drawn + 1
    options = f"--resolution {res} --w_points 101 --out o --logdir tb"
    proc = run_main(*f"landscape --ckpt_path alone.ckpt {options}".split(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"the figures and 3D meshes show {drawn} of the {res} points per axis" in proc.stderr
    assert "the 1D figures show 50 of 101 points" in proc.stderr
    assert len((tmp_path / "o" / "lab_1d.csv").read_text().splitlines()) == 1 + 101  # the file keeps every point
    assert "note: the Hessian is formed up to 10 parameters; this network has 16" in proc.stderr
    assert np.load(tmp_path / "o" / "linear_2d.npz")["loss"].shape == (res, res)
    acc = events(tmp_path / "tb" / "version_0", tensors=0, scalars=0)
    vertices = acc.Tensors("landscape/linear_2d_surface_VERTEX")[0].tensor_proto
    assert [d.size for d in vertices.tensor_shape.dim] == [1, drawn**2, 3]
    (text,) = acc.Tensors("landscape/summary/text_summary")  # the minimum over every point
    assert "| linear_2d | min 0 at w = 3, b = 2;" in text.tensor_proto.string_val[0].decode()


def test_a_run_on_many_samples_gets_an_evenly_thinned_landscape(lab_ckpt, tmp_path):
    settings = {"num_samples": 1_000_001, "x_min": 0.0, "x_max": 1.0, "noise_std": 0.5, "seed": 4}
    edited(lab_ckpt, tmp_path / "big.ckpt", lambda ckpt: ckpt["datamodule_hyper_parameters"].update(settings))
    results = ls.compute(ls.Settings(resolution=3, w_points=3, interp_points=3), tmp_path / "big.ckpt")
    stride = math.ceil(1_000_001 / ls.MAX_LANDSCAPE_SAMPLES)  # 11: exactly every 11th sample, noise and all
    x, y = RegressionDataModule(**settings).samples("train")
    net, _ = load_model(tmp_path / "big.ckpt")
    assert results.trained_loss == pytest.approx(torch.mean((net(x[::stride]) - y[::stride]) ** 2).item(), rel=1e-5)
    assert results.notes == [f"the run trained on 1,000,001 samples; the landscape uses every {stride}th (90,910)"]
