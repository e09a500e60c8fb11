"""The exact Hessian against the linear model's closed form, finite differences, torch.func (an ensemble member's: the
same seed alone) and power iteration; ``fit --trajectory_every`` through ``landscape --trajectory``, in a fit whose
LandscapeLogger's TensorBoard landscapes are read back.
Run: pytest tests/test_curvature.py"""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import LAST, RUN, events, fit_in_process, one_error_line, run_main

from regression_lab import curvature
from regression_lab.curvature import hessians, spectrum, trajectory_plane
from regression_lab.data import RegressionDataModule
from regression_lab.ensemble import regression_model
from regression_lab.landscape_plots import hessian_lines
from regression_lab.models import MyNN, MyNNStack

X = torch.arange(1.0, 6.0).unsqueeze(1)  # the lab's data
Y = 3 * X + 2


def autograd(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """torch.func's MSE gradient in the flat parameters, the parameters, and its Jacobian: the reference Hessian."""
    shapes = {n: p.shape for n, p in net.named_parameters()}
    theta, sizes = torch.cat([p.detach().flatten() for p in net.parameters()]), [s.numel() for s in shapes.values()]

    def loss(t: torch.Tensor) -> torch.Tensor:
        parts = {n: c.reshape(shapes[n]) for n, c in zip(shapes, t.split(sizes), strict=True)}
        return torch.mean((torch.func.functional_call(net, parts, (x,)) - y) ** 2)

    return torch.func.grad(loss), theta, torch.func.jacrev(torch.func.grad(loss))(theta)


def test_an_always_on_units_output_weight_and_bias_have_the_linear_models_closed_form():
    stack = MyNNStack(1, [0])  # w = 1, b = 0: relu(x) = x on the lab's x, so f = v x + c is y = w x + b again
    with torch.no_grad():
        stack.weights[0, :2] = torch.tensor([1.0, 0.0])
    n = len(X)  # MSE of y = w x + b: 2/N sum [x^2, x; x, 1], wherever (w, b) are
    closed = 2 / n * torch.tensor([[float((X**2).sum()), float(X.sum())], [float(X.sum()), float(n)]])
    torch.testing.assert_close(hessians(stack.weights, 1, X, Y)[0, 2:, 2:], closed)  # [[22, 6], [6, 2]]
    s = spectrum(closed)
    assert s["trace"] == pytest.approx(24.0)
    assert s["eigenvalues"].tolist() == pytest.approx(sorted(np.linalg.eigvalsh(closed.numpy())))


def test_a_networks_hessian_is_the_gradients_finite_difference_and_its_top_eigenvalue_is_power_iterations():
    torch.manual_seed(0)
    net = MyNN(5).double()
    grad, theta, _ = autograd(net, X.double(), Y.double())
    h = hessians(theta.unsqueeze(0), 5, X.double(), Y.double())[0]
    eps, eye = 1e-6, torch.eye(len(theta), dtype=torch.float64)
    columns = torch.stack([(grad(theta + eps * e) - grad(theta - eps * e)) / (2 * eps) for e in eye], dim=1)
    assert torch.allclose(h, columns, atol=1e-5) and torch.allclose(h, h.T)
    v = torch.ones(len(theta), dtype=torch.float64)
    for _ in range(500):  # power iteration with the Hessian (its top eigenvalue dominates here)
        v = h @ v / (h @ v).norm()
    assert spectrum(h)["top"] == pytest.approx(float(v @ h @ v), rel=1e-6)


def test_an_ensemble_members_hessian_is_torch_funcs_of_the_same_seed_alone(monkeypatch):
    stack = MyNNStack([2, 5, 5], [0, 0, 3])  # padded to 5: the padding units add zero rows and columns
    with torch.no_grad():
        stack.weights[2, 0], stack.weights[2, 5] = 1.0, -3.0  # a unit whose input is exactly 0 at x = 3: relu'(0) = 0
    closed = hessians(stack.weights, 5, X, Y)
    monkeypatch.setattr(curvature, "CHUNK_BYTES", 4 * 16 * 2)  # two member-samples at a time: the same sums
    torch.testing.assert_close(hessians(stack.weights, 5, X, Y), closed)
    for i, h in enumerate((2, 5, 5)):
        rows = torch.cat([torch.arange(h) + k * 5 for k in range(3)] + [torch.tensor([15])])  # MyNN's parameters
        alone = autograd(stack.member(i), X, Y)[2]
        torch.testing.assert_close(closed[i][rows][:, rows], alone, rtol=1e-5, atol=1e-5)
        assert float(closed[i].abs().sum()) == pytest.approx(float(alone.abs().sum()), rel=1e-5)  # the rest is 0


def test_members_top_eigenvalues_are_histograms_per_setting_and_skipped_past_their_work_limit(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    module, dm = regression_model(hidden_size=[2, 5], num_seeds=3, first_seed=0), RegressionDataModule()
    dm.setup("fit")
    for limit, run in ((curvature.MAX_MEMBER_HESSIAN_WORK, "logged"), (1, "skipped")):
        monkeypatch.setattr(curvature, "MAX_MEMBER_HESSIAN_WORK", limit)
        with SummaryWriter(tmp_path / run) as writer:
            curvature.log_top_eigenvalues(writer, module, dm, 0)
    assert events(tmp_path / "skipped").Tags()["histograms"] == []
    for setting, members in (("h2_lr0.01", range(3)), ("h5_lr0.01", range(3, 6))):
        top = max(
            float(torch.linalg.eigvalsh(autograd(module.member(i), dm.train_x, dm.train_y)[2])[-1]) for i in members
        )
        logged = events(tmp_path / "logged").Histograms(f"members_top_hessian_eigenvalue/{setting}")[0]
        assert logged.histogram_value.max == pytest.approx(top, rel=1e-4) and logged.histogram_value.num == 3


def test_a_zero_residuals_symmetry_zeros_are_not_counted_negative_on_many_samples():
    net, x = MyNN(4), torch.arange(1.0, 100_001.0).unsqueeze(1)  # small integers: y = net(x) is exact in float32
    weights = ([[1.0], [2.0], [-1.0], [3.0]], [0, -1, 50, 2], [[1, -2, 3, 1]], [5])
    with torch.no_grad():
        for p, v in zip(net.parameters(), weights, strict=True):
            p.copy_(torch.tensor(v))
        results = SimpleNamespace(hessian=None, notes=[], trajectory=None)
        curvature.add_to(results, net, x, net(x), None)  # each unit's rescaling is a flat direction: 4 zeros
    assert "13 eigenvalues" in hessian_lines(results)[0] and "0 negative" in hessian_lines(results)[0]


def test_fit_logs_the_landscape_keeps_a_trajectory_and_landscape_draws_its_plane_and_the_curvature(tmp_path):
    logger = "--trainer.callbacks+=LandscapeLogger --trainer.callbacks.resolution 11"  # at the end of training
    cli = fit_in_process(tmp_path, *f"--trajectory_every 5 --trainer.max_epochs 20 {logger}".split())
    acc = events(tmp_path / RUN, scalars=0, images=0)
    assert "landscape/random_2d" in acc.Tags()["images"] and "train/loss" in acc.Tags()["scalars"]
    (text,) = acc.Tensors("landscape/summary/text_summary")
    centre = re.search(r"\| random_2d \| .*; at the centre ([^;]+);", text.tensor_proto.string_val[0].decode())
    mse = torch.mean((cli.model.net(X) - Y) ** 2).item()  # X, Y: the data it trained on
    assert text.step == 20 and float(centre.group(1)) == pytest.approx(mse, rel=1e-4)
    saved = torch.load(tmp_path / RUN / "trajectory.pt", weights_only=True)
    assert saved["epochs"].tolist() == [0, 5, 10, 15, 20] and saved["weights"].shape == (5, 16)
    landscape = f"landscape --ckpt_path {LAST} --trajectory --out o --resolution 9"
    proc = run_main(*landscape.split(), cwd=tmp_path)
    assert proc.returncode == 0 and "trajectory: 5 points (epochs 0 to 20)" in proc.stdout, proc.stderr
    tags = events(tmp_path / RUN, images=0, tensors=0).Tags()  # beside the run's curves: an image and a mesh
    assert "landscape/trajectory" in tags["images"] and "landscape/trajectory_surface_VERTEX" in tags["tensors"]
    plane = np.load(tmp_path / "o" / "trajectory.npz")
    assert plane["loss"].shape == (9, 9) and np.allclose(plane["path"][-1], 0, atol=1e-6)  # it ends at the trained θ*
    axes, path, explained = trajectory_plane(saved["weights"].double(), saved["weights"][-1].double())
    assert np.allclose(plane["path"], path.numpy(), atol=1e-5) and float(explained.sum()) <= 1 + 1e-9
    hessian = np.load(tmp_path / "o" / "hessian.npz")
    values = hessian["eigenvalues"]
    assert len(values) == 16 and (np.diff(values) >= 0).all() and float(hessian["trace"]) == pytest.approx(values.sum())
    (tmp_path / RUN / "trajectory.pt").write_bytes(b"not torch")  # damaged: the landscape and a resume refuse it
    one_error_line(run_main(*landscape.split(), cwd=tmp_path), "trajectory.pt is not a trajectory (")
    resume = "fit --ckpt_path last --trajectory_every 5 --trainer.max_epochs 25".split()
    one_error_line(run_main(*resume, cwd=tmp_path), "trajectory.pt is not a trajectory (")
