"""What the landscape tools estimate, computed exactly for networks this small: the full Hessian of MyNN's training
loss (in closed form, batched over an ensemble's members), its spectrum, and the plane of the first two principal
components of a training trajectory (Li et al., 2018). ``landscape`` and ensemble fits report them; try::

    python -c "import torch; from regression_lab.curvature import hessians, spectrum; \\
        from regression_lab.models import MyNNStack; s = MyNNStack(5, [0]); x = torch.arange(1., 6.)[:, None]; \\
        print(spectrum(hessians(s.weights, s.width, x, 3 * x + 2)[0]))"
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from regression_lab.checkpoint import TRAJECTORY_FILE, read_trajectory
from regression_lab.errors import UsageError
from regression_lab.pictures import setting_name

#: Parameters up to which the whole Hessian is formed (its P x P entries, and their eigenvalues).
MAX_HESSIAN_PARAMS = 2_000
#: The members' Hessians at the end of an ensemble fit: at most this much work (members x parameters^2 x samples)...
MAX_MEMBER_HESSIAN_WORK = 2 * 10**9
#: ... on at most this many training samples (more are thinned evenly).
MAX_HESSIAN_SAMPLES = 100_000
#: Memory the members' Hessians may take at once (an ensemble is taken a chunk of members at a time).
CHUNK_BYTES = 256 * 2**20
#: What the numbers mean, for the Text table and the command's output.
NOTE = (
    "a negative eigenvalue is a direction in which the loss curves down: the weights sit at a saddle or on a ridge "
    "there, not at a minimum; eigenvalues near 0 are flat directions (a dead ReLU unit's weights have exactly 0)"
)


def hessians(weights: Tensor, width: int, x: Tensor, y: Tensor) -> Tensor:
    """The Hessians (M, P, P) of the MSE on (x, y) of ``MyNN`` members, in closed form, a chunk at a time: each row of
    ``weights`` (M, 3 width + 1) is one member's parameters as a ``MyNNStack`` holds them (one ``MyNN``'s, flattened
    in order, is a row of its own width; a stack's padding units add zero rows and columns).

    With f = v . relu(w x + b) + c and r = f - y, the Hessian is 2/N sum_n (grad f grad f^T + r d2f). ReLU's second
    derivative is zero, so d2f pairs only v_j with w_j (relu'(z_j) x) and with b_j (relu'(z_j)), as autograd has it
    (relu'(0) = 0); the tests hold it to torch.func's Hessian and to finite differences of the gradient."""
    out, pairs = [], torch.arange(2 * width, device=x.device)  # the rows of w and b, each paired with its unit's v
    per = max(1, CHUNK_BYTES // (4 * weights.shape[1]))  # member-samples a chunk: its Jacobian (members, P, samples)
    for theta in weights.detach().split(max(1, per // max(1, len(x)))):
        w, b, v = (theta[:, k * width : (k + 1) * width, None] for k in range(3))  # (M, W, 1): against x.T (1, N)
        h = torch.zeros(len(theta), weights.shape[1], weights.shape[1], dtype=theta.dtype, device=theta.device)
        samples = max(1, per // len(theta))
        for xs, ys in zip(x.split(samples), y.split(samples), strict=True):
            z = w * xs.T + b
            on, a = (z > 0).to(theta.dtype), torch.relu(z)
            r = (v * a).sum(dim=1) + theta[:, 3 * width :] - ys.T  # (M, N)
            jacobian = torch.cat([v * on * xs.T, v * on, a, torch.ones_like(r).unsqueeze(1)], dim=1)  # (M, P, N)
            h += jacobian @ jacobian.mT
            cross = torch.cat([(on * xs.T * r.unsqueeze(1)).sum(dim=2), (on * r.unsqueeze(1)).sum(dim=2)], dim=1)
            h[:, pairs, 2 * width + pairs % width] += cross
            h[:, 2 * width + pairs % width, pairs] += cross
        out.append(2 / len(x) * h)
    return torch.cat(out)


def spectrum(h: Tensor) -> dict[str, float | Tensor]:
    """A symmetric ``h``'s eigenvalues (ascending, float64), trace, top eigenvalue and smallest/largest ratio."""
    eigenvalues = torch.linalg.eigvalsh(h.double())
    top = float(eigenvalues[-1])
    return {"eigenvalues": eigenvalues, "trace": float(h.double().trace()), "top": top,
            "min_max_ratio": float(eigenvalues[0]) / top if top != 0 else math.nan}  # fmt: skip


def trajectory_plane(weights: Tensor, final: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The first two principal components (2, P) of the rows of ``weights - final`` (as Li et al.'s plot_trajectory.py
    takes them), each row's coordinates (T, 2) on them, and each component's share of the variance (2,)."""
    diff = (weights - final).double()
    _, s, vh = torch.linalg.svd(diff - diff.mean(dim=0), full_matrices=False)
    axes = vh[:2] if len(vh) >= 2 else torch.cat([vh, torch.zeros(2 - len(vh), diff.shape[1], dtype=vh.dtype)])
    explained = (s**2 / (s**2).sum().clamp_min(1e-300))[:2]
    return axes, diff @ axes.T, torch.nn.functional.pad(explained, (0, 2 - len(explained)))


def load_trajectory(ckpt_path: str | Path | None) -> dict[str, Tensor]:
    """The training trajectory kept in a checkpoint's run (``fit --trajectory_every N``), checked; else UsageError."""
    from regression_lab.landscape_plots import run_dir_of

    if (run := run_dir_of(ckpt_path)) is None or not (path := run / TRAJECTORY_FILE).is_file():
        what = f"{ckpt_path} has no trajectory in its run" if ckpt_path else "there is no checkpoint, so no trajectory"
        raise UsageError(f"--trajectory: {what}; train with `fit --trajectory_every N` (every N epochs)")
    saved = read_trajectory(path)
    return {"epochs": saved["epochs"], "weights": saved["weights"].double()}


def add_to(results: Any, net: nn.Module, x: Tensor, y: Tensor, trajectory: dict[str, Tensor] | None) -> None:
    """Into ``results``: the trained network's exact curvature and, with a ``trajectory``, the loss on its PCA plane
    (``trajectory``: axes ``pc1``, ``pc2``; the path, epochs and explained variance in ``results.trajectory``)."""
    from regression_lab.landscape import Landscape, grid_losses

    params = {n: p.detach() for n, p in net.named_parameters()}
    final = torch.cat([p.flatten() for p in params.values()])  # MyNN's parameters in order: a stack's row
    if (count := len(final)) <= MAX_HESSIAN_PARAMS:
        # In float64: summed over many samples in float32, a zero eigenvalue could come out clearly negative.
        results.hessian = spectrum(hessians(final.double().unsqueeze(0), net.hidden_size, x.double(), y.double())[0])
    else:
        results.notes.append(
            f"the Hessian is formed up to {MAX_HESSIAN_PARAMS:,} parameters; this network has {count:,}"
        )
    if trajectory is None:
        return
    if (weights := trajectory["weights"]).shape[1] != count:
        raise UsageError(f"the trajectory has {weights.shape[1]} weights a point, the network {count}")
    axes, path, explained = trajectory_plane(weights, final.double().cpu())
    sizes = [p.numel() for p in params.values()]
    directions = [{n: t.reshape(p.shape).to(p) for (n, p), t in zip(params.items(), a.split(sizes), strict=True)}
                  for a in axes]  # fmt: skip
    lo, hi = path.min(dim=0).values.clamp(max=0), path.max(dim=0).values.clamp(min=0)  # the trained point too
    pad = 0.15 * (hi - lo).clamp_min(1e-3)
    ends = zip((lo - pad).tolist(), (hi + pad).tolist(), strict=True)
    grid = [torch.linspace(a, b, results.settings.resolution, device=x.device) for a, b in ends]
    loss = grid_losses(net, x, y, params, directions, grid)
    results.landscapes["trajectory"] = Landscape("trajectory", ("pc1", "pc2"), [g.cpu() for g in grid], loss.cpu())
    results.trajectory = {"path": path.float(), "epochs": trajectory["epochs"], "explained": explained.float()}


def log_top_eigenvalues(writer: Any, module: nn.Module, datamodule: Any, step: int) -> None:
    """Per setting, a histogram of an ensemble's healthy members' top eigenvalue (do wider networks find flatter
    minima?), on :data:`MAX_HESSIAN_SAMPLES` samples at most (evenly); none past :data:`MAX_MEMBER_HESSIAN_WORK`."""
    stride = -(-len(datamodule.train_x) // MAX_HESSIAN_SAMPLES)
    x, y = datamodule.train_x[::stride], datamodule.train_y[::stride]
    if sum(len(s) * s.weights.shape[1] ** 2 * len(x) for s in module.stacks) > MAX_MEMBER_HESSIAN_WORK:
        return
    tops = torch.cat([torch.linalg.eigvalsh(hessians(s.weights, s.width, x, y).double())[:, -1] for s in module.stacks])
    tops, sizes = tops.cpu(), module.setting_sizes()
    for setting, top, out in zip(module.settings, tops.split(sizes), module.diverged().cpu().split(sizes), strict=True):
        if bool((~out).any()):
            writer.add_histogram(f"members_top_hessian_eigenvalue/{setting_name(setting)}", top[~out], step)
