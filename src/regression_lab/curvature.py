"""What the landscape tools estimate, computed exactly for networks this small: the full Hessian of the training loss
(``torch.func``, batched over an ensemble's members with ``vmap``), its spectrum, and the plane of the first two
principal components of a training trajectory (Li et al., 2018). ``landscape`` reports them; try::

    python -c "import torch; from regression_lab.curvature import hessian, spectrum; \\
        x = torch.arange(1., 6.)[:, None]; print(spectrum(hessian(torch.nn.Linear(1, 1), x, 3 * x + 2)))"
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from regression_lab.errors import UsageError
from regression_lab.models import MyNN

#: Parameters up to which the whole Hessian is formed (its P x P entries, and P backward passes over the data).
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


def flat_loss(module: nn.Module, shapes: dict[str, torch.Size]):
    """The MSE of ``module`` on (x, y) as a function of one flat vector of its parameters (``shapes``, in order)."""
    sizes = [math.prod(s) for s in shapes.values()]

    def loss(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        parts = {n: t.reshape(s) for (n, s), t in zip(shapes.items(), theta.split(sizes), strict=True)}
        return torch.mean((functional_call(module, parts, (x,)) - y) ** 2)

    return loss


def hessian(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The Hessian (P, P) of the MSE of ``module`` on (x, y) over its parameters, flattened in ``named_parameters``
    order (for ``nn.Linear(1, 1)``: weight, bias)."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    theta = torch.cat([p.flatten() for p in params.values()])
    loss = flat_loss(module, {n: p.shape for n, p in params.items()})
    # Reverse over reverse, a chunk of columns at a time: memory for about `chunk` backward passes over the data.
    chunk = max(1, CHUNK_BYTES // max(1, 4 * len(x) * len(theta)))
    return torch.func.jacrev(torch.func.grad(loss), chunk_size=chunk)(theta, x, y)


def member_hessians(stack: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Every member's Hessian (M, P, P) of a :class:`~regression_lab.models.MyNNStack` (a padding unit adds zero rows
    and columns), a chunk of members at a time."""
    with torch.device("meta"):  # MyNN's names and shapes, no weights drawn
        h, skeleton = stack.width, MyNN(stack.width)
    shapes = {"linear1.weight": (h, 1), "linear1.bias": (h,), "linear2.weight": (1, h), "linear2.bias": (1,)}
    # Reverse over reverse, as in hessian (forward mode loads torch's jit decompositions, deprecated).
    batched = vmap(torch.func.jacrev(torch.func.grad(flat_loss(skeleton, shapes))), in_dims=(0, None, None))
    p = stack.weights.shape[1]
    chunk = max(1, CHUNK_BYTES // (4 * p * p * max(1, len(x))))
    return torch.cat([batched(rows, x, y) for rows in stack.weights.detach().split(chunk)])


def spectrum(h: Tensor) -> dict[str, float | Tensor]:
    """The eigenvalues of a symmetric ``h`` (ascending, float64), its trace, the top eigenvalue and the ratio of the
    smallest eigenvalue to the largest."""
    eigenvalues = torch.linalg.eigvalsh(h.double())
    top = float(eigenvalues[-1])
    return {"eigenvalues": eigenvalues, "trace": float(h.double().trace()), "top": top,
            "min_max_ratio": float(eigenvalues[0]) / top if top != 0 else math.nan}  # fmt: skip


def trajectory_plane(weights: Tensor, final: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The first two principal components (2, P) of the rows of ``weights - final`` (as Li et al.'s
    ``plot_trajectory.py`` takes them), each row's coordinates (T, 2) on them, and each component's share of the
    variance (2,)."""
    diff = (weights - final).double()
    _, s, vh = torch.linalg.svd(diff - diff.mean(dim=0), full_matrices=False)
    axes = vh[:2] if len(vh) >= 2 else torch.cat([vh, torch.zeros(2 - len(vh), diff.shape[1], dtype=vh.dtype)])
    explained = (s**2 / (s**2).sum().clamp_min(1e-300))[:2]
    return axes, diff @ axes.T, torch.nn.functional.pad(explained, (0, 2 - len(explained)))


def load_trajectory(ckpt_path: str | Path | None) -> dict[str, Tensor]:
    """The training trajectory kept in a checkpoint's run (``fit --trajectory_every N``), checked; else UsageError."""
    from regression_lab.callbacks import Trajectory
    from regression_lab.landscape_plots import run_dir_of

    run = run_dir_of(ckpt_path) if ckpt_path else None
    path = run / Trajectory.FILE if run is not None else None
    if path is None or not path.is_file():
        raise UsageError(f"--trajectory: {ckpt_path or 'no checkpoint'} has no trajectory in its run; train with "
                         "`fit --trajectory_every N` (every N epochs)")  # fmt: skip
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
        epochs, weights = saved["epochs"], saved["weights"]
        if epochs.dim() != 1 or weights.dim() != 2 or len(epochs) != len(weights) or not weights.is_floating_point():
            raise ValueError("shapes")
    except Exception as err:  # noqa: BLE001 (a damaged or foreign file: whatever torch or the checks raise)
        raise UsageError(
            f"{path} is not a trajectory ({type(err).__name__}): fit again with --trajectory_every"
        ) from None
    return {"epochs": epochs, "weights": weights.double()}


def add_to(results: Any, net: nn.Module, x: Tensor, y: Tensor, trajectory: dict[str, Tensor] | None) -> None:
    """Into ``results``: the trained network's exact curvature and, with a ``trajectory``, the loss on its PCA plane
    (``trajectory``: axes ``pc1``, ``pc2``; the path, epochs and explained variance in ``results.trajectory``)."""
    from regression_lab.landscape import Landscape, grid_losses

    params = {n: p.detach() for n, p in net.named_parameters()}
    count = sum(p.numel() for p in params.values())
    if count <= MAX_HESSIAN_PARAMS:
        results.hessian = spectrum(hessian(net, x, y))
    else:
        results.notes.append(
            f"the Hessian is formed up to {MAX_HESSIAN_PARAMS:,} parameters; this network has {count:,}"
        )
    if trajectory is None:
        return
    final = torch.cat([p.flatten() for p in params.values()]).double()
    if trajectory["weights"].shape[1] != len(final):
        raise UsageError(
            f"the trajectory has {trajectory['weights'].shape[1]} weights a point, the network {len(final)}"
        )
    axes, path, explained = trajectory_plane(trajectory["weights"], final.cpu())
    sizes = [p.numel() for p in params.values()]
    directions = [{n: t.reshape(p.shape).to(p) for (n, p), t in zip(params.items(), a.split(sizes), strict=True)}
                  for a in axes]  # fmt: skip
    lo, hi = (
        torch.minimum(path.min(dim=0).values, torch.zeros(2)),
        torch.maximum(path.max(dim=0).values, torch.zeros(2)),
    )
    pad = 0.15 * (hi - lo).clamp_min(1e-3)
    ends = zip((lo - pad).tolist(), (hi + pad).tolist(), strict=True)
    grid = [torch.linspace(a, b, results.settings.resolution, device=x.device) for a, b in ends]
    loss = grid_losses(net, x, y, params, directions, grid)
    results.landscapes["trajectory"] = Landscape("trajectory", ("pc1", "pc2"), [g.cpu() for g in grid], loss.cpu())
    results.trajectory = {"path": path.float(), "epochs": trajectory["epochs"], "explained": explained.float()}


def top_eigenvalues(module: nn.Module, x: Tensor, y: Tensor) -> Tensor | None:
    """Each member's largest Hessian eigenvalue (M,) of an ensemble on (x, y) (at most :data:`MAX_HESSIAN_SAMPLES`
    of them, evenly), or None when that would take more than :data:`MAX_MEMBER_HESSIAN_WORK`."""
    stride = -(-len(x) // MAX_HESSIAN_SAMPLES)
    x, y = x[::stride], y[::stride]
    if sum(len(s) * s.weights.shape[1] ** 2 * len(x) for s in module.stacks) > MAX_MEMBER_HESSIAN_WORK:
        return None
    return torch.cat([torch.linalg.eigvalsh(member_hessians(s, x, y).double())[:, -1] for s in module.stacks]).cpu()


def log_top_eigenvalues(writer: Any, module: nn.Module, datamodule: Any, step: int) -> None:
    """Per setting of an ensemble, a histogram of its healthy members' top eigenvalue at ``step``
    (``members_top_hessian_eigenvalue/<setting>``): do wider networks find flatter minima?"""
    from regression_lab.pictures import setting_name

    if (tops := top_eigenvalues(module, datamodule.train_x, datamodule.train_y)) is None:
        return
    sizes = module.setting_sizes()
    for setting, top, out in zip(module.settings, tops.split(sizes), module.diverged().cpu().split(sizes), strict=True):
        if bool((~out).any()):
            writer.add_histogram(f"members_top_hessian_eigenvalue/{setting_name(setting)}", top[~out], step)
