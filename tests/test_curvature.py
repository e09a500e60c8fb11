"""The exact curvature and the trajectory plane, cross-checked: the Hessian against the closed form of the lab's linear
model and finite differences of the gradient, its top eigenvalue against power iteration, an ensemble member's against
the same seed alone, and ``fit --trajectory_every`` through ``landscape --trajectory``.
Run: pytest tests/test_curvature.py"""

import numpy as np
import pytest
import torch
from helpers import LAST, RUN, fit_in_process, one_error_line, run_main

from regression_lab.curvature import flat_loss, hessian, member_hessians, spectrum, trajectory_plane
from regression_lab.models import MyNN, MyNNStack

X = torch.arange(1.0, 6.0).unsqueeze(1)  # the lab's data
Y = 3 * X + 2


def test_the_linear_models_hessian_is_the_closed_form():
    n = len(X)  # MSE of y = w x + b: 2/N sum [x^2, x; x, 1], wherever (w, b) are
    closed = 2 / n * torch.tensor([[float((X**2).sum()), float(X.sum())], [float(X.sum()), float(n)]])
    assert torch.allclose(hessian(torch.nn.Linear(1, 1), X, Y), closed)  # [[22, 6], [6, 2]]
    s = spectrum(closed)
    assert s["trace"] == pytest.approx(24.0) and s["eigenvalues"].tolist() == pytest.approx(
        sorted(np.linalg.eigvalsh(closed.numpy()))
    )


def test_a_networks_hessian_is_the_gradients_finite_difference_and_its_top_eigenvalue_is_power_iterations():
    torch.manual_seed(0)
    net = MyNN(5).double()
    x, y = X.double(), Y.double()
    h = hessian(net, x, y)
    shapes = {n: p.shape for n, p in net.named_parameters()}
    theta = torch.cat([p.detach().flatten() for p in net.parameters()])
    grad = lambda t: torch.func.grad(flat_loss(net, shapes))(t, x, y)  # noqa: E731
    eps, eye = 1e-6, torch.eye(len(theta), dtype=torch.float64)
    columns = torch.stack([(grad(theta + eps * e) - grad(theta - eps * e)) / (2 * eps) for e in eye], dim=1)
    assert torch.allclose(h, columns, atol=1e-5) and torch.allclose(h, h.T)
    v = torch.ones(len(theta), dtype=torch.float64)
    for _ in range(500):  # power iteration with the Hessian (its top eigenvalue dominates here)
        v = h @ v / (h @ v).norm()
    assert spectrum(h)["top"] == pytest.approx(float(v @ h @ v), rel=1e-6)


def test_an_ensemble_members_hessian_is_the_same_seed_alone():
    stack = MyNNStack([2, 5], [0, 0])  # padded to 5: the padding units add zero rows and columns
    tops = torch.linalg.eigvalsh(member_hessians(stack, X, Y))[:, -1]
    for i, h in enumerate((2, 5)):
        torch.manual_seed(0)
        assert float(tops[i]) == pytest.approx(spectrum(hessian(MyNN(h), X, Y))["top"], rel=1e-5)


def test_fit_keeps_a_trajectory_and_landscape_draws_its_plane_and_the_curvature(tmp_path):
    fit_in_process(tmp_path, *"--trajectory_every 5 --trainer.max_epochs 20".split())
    saved = torch.load(tmp_path / RUN / "trajectory.pt", weights_only=True)
    assert saved["epochs"].tolist() == [0, 5, 10, 15, 20] and saved["weights"].shape == (5, 16)
    landscape = f"landscape --ckpt_path {LAST} --trajectory --no_tensorboard --out o --resolution 9"
    proc = run_main(*landscape.split(), cwd=tmp_path)
    assert proc.returncode == 0 and "trajectory: 5 points (epochs 0 to 20)" in proc.stdout, proc.stderr
    plane = np.load(tmp_path / "o" / "trajectory.npz")
    assert plane["loss"].shape == (9, 9) and np.allclose(plane["path"][-1], 0, atol=1e-6)  # it ends at the trained θ*
    axes, path, explained = trajectory_plane(saved["weights"].double(), saved["weights"][-1].double())
    assert np.allclose(plane["path"], path.numpy(), atol=1e-5) and float(explained.sum()) <= 1 + 1e-9
    curvature = np.load(tmp_path / "o" / "hessian.npz")
    values = curvature["eigenvalues"]
    assert (
        len(values) == 16 and (np.diff(values) >= 0).all() and float(curvature["trace"]) == pytest.approx(values.sum())
    )
    # A run without a trajectory, and a bad cadence, are one line each.
    (tmp_path / RUN / "trajectory.pt").unlink()
    one_error_line(run_main("landscape", "--trajectory", cwd=tmp_path), "has no trajectory in its run")
    one_error_line(
        run_main("fit", "--trajectory_every", "0", cwd=tmp_path), "--trajectory_every must be an integer >= 1"
    )
    ensemble = run_main(*"fit --trajectory_every 5 --model.num_seeds 2".split(), cwd=tmp_path)
    one_error_line(ensemble, "--trajectory_every keeps one network's weights")
