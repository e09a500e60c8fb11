"""Loss landscapes, computed: the lab's 1D sweep, the (w, b) surface, the trained network's.

All grid points are evaluated in batches with ``torch.func.functional_call`` + ``vmap`` (in
chunks, so memory stays bounded), never one by one. Torch only: the ``landscape`` command and
the ``LandscapeLogger`` callback both use it, and ``landscape_plots`` turns the results into
figures, TensorBoard events and files. Try it::

    from regression_lab.core import landscape as ls
    from regression_lab.core.samples import line_split
    print(ls.lab_1d(*line_split({})).summary())     # minimum 0 at w = 3: 11 (w - 3)^2

What is computed (each a function here, usable on its own):

- :func:`lab_1d`: MSE of ``y = w x + b0`` over w (the lab's plot); on the lab's data it is
  exactly ``11 (w - 3)^2``.
- :func:`linear_2d`: MSE of ``y = w x + b`` over a (w, b) grid, and :func:`least_squares`,
  the closed-form fit it is compared with.
- :func:`random_plane` / :func:`random_line`: the trained network's loss along random directions
  with filter normalization (Li et al., 2018, "Visualizing the Loss Landscape of Neural Nets").
- :func:`interpolation`: the loss on the straight line from the initial to the trained weights.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from regression_lab.core.errors import UsageError, check_float, check_int

Params = dict[str, torch.Tensor]

#: Upper bound on points per grid axis: 4001^2 = 16M losses is already far past what a plot
#: or a person can use, and past it the result grid alone costs gigabytes.
MAX_RESOLUTION = 4001
MAX_POINTS_1D = 10_000_000
#: Training samples a landscape is evaluated on: a checkpoint trained on more (up to
#: ``MAX_SAMPLES``) gets an evenly strided subset, so each grid point's activations stay small
#: (100,000 samples is far more than a loss curve needs to be exact to plotting precision).
MAX_LANDSCAPE_SAMPLES = 100_000
#: Memory the batched evaluation may use at once (activations of one chunk of grid points).
CHUNK_BYTES = 256 * 2**20


@dataclass
class Curve:
    """A 1D landscape: the loss at each value of one coordinate."""

    name: str
    axis: str
    values: torch.Tensor
    loss: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Minimum, where it is, the loss at the middle of the range, and max - min."""
        i = int(torch.argmin(self.loss))
        centre = float(self.loss[len(self.loss) // 2])
        return {
            "min": float(self.loss[i]),
            f"argmin_{self.axis}": float(self.values[i]),
            "center": centre,
            "sharpness": float(self.loss.max() - self.loss.min()),
        }


@dataclass
class Surface:
    """A 2D landscape: ``loss[i, j]`` is the loss at ``(xs[i], ys[j])``."""

    name: str
    x_axis: str
    y_axis: str
    xs: torch.Tensor
    ys: torch.Tensor
    loss: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def argmin(self) -> tuple[float, float]:
        """The grid point with the lowest loss."""
        i, j = np.unravel_index(int(torch.argmin(self.loss)), tuple(self.loss.shape))
        return float(self.xs[i]), float(self.ys[j])

    def summary(self) -> dict[str, float]:
        """Minimum, where it is, the loss at the grid centre, and max - min within the grid."""
        mx, my = self.argmin()
        centre = float(self.loss[len(self.xs) // 2, len(self.ys) // 2])
        return {
            "min": float(self.loss.min()),
            f"argmin_{self.x_axis}": mx,
            f"argmin_{self.y_axis}": my,
            "center": centre,
            "sharpness": float(self.loss.max() - self.loss.min()),
        }


# --------------------------------------------------------------------------- evaluation


def batched_mse(
    module: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """MSE of ``module`` on (x, y) for a batch of parameter sets, without a Python loop over them.

    ``params`` maps each parameter name to a tensor with a leading batch dimension K. Returns
    the K losses. Evaluated with ``functional_call`` under ``vmap``, in chunks sized so that one
    chunk's activations stay within :data:`CHUNK_BYTES`.
    """
    k = next(iter(params.values())).shape[0]
    if chunk is None:
        width = max(p.shape[1] if p.dim() > 1 else 1 for p in params.values())
        per_point = max(1, x.shape[0] * (width + 2) * x.element_size() * 3)
        chunk = max(1, min(k, CHUNK_BYTES // per_point))

    def one(p: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.mean((functional_call(module, p, (x,)) - y) ** 2)

    loss_of = vmap(one)
    with torch.no_grad():
        return torch.cat([loss_of({n: t[s : s + chunk] for n, t in params.items()}) for s in range(0, k, chunk)])


def _linear_family(w: torch.Tensor, b: torch.Tensor) -> Params:
    # The family y = w x + b is an nn.Linear(1, 1), so it goes through the same evaluator.
    return {"weight": w.reshape(-1, 1, 1), "bias": b.reshape(-1, 1)}


def lab_1d(
    x: torch.Tensor, y: torch.Tensor, w_min: float = -1.0, w_max: float = 5.0, num: int = 1000, b0: float = 2.0
) -> Curve:
    """The lab's sweep: MSE of ``y_hat = w x + b0`` for ``num`` values of w in [w_min, w_max]."""
    w = torch.linspace(w_min, w_max, num, dtype=x.dtype, device=x.device)
    loss = batched_mse(nn.Linear(1, 1).to(x.device), _linear_family(w, torch.full_like(w, b0)), x, y)
    return Curve("lab_1d", "w", w.cpu(), loss.cpu(), {"b0": b0})


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The closed-form least-squares line (w, b) through (x, y)."""
    a = torch.cat([x, torch.ones_like(x)], dim=1).double()
    solution = torch.linalg.lstsq(a.cpu(), y.double().cpu()).solution.flatten()
    return float(solution[0]), float(solution[1])


def linear_2d(
    x: torch.Tensor, y: torch.Tensor, w_range: tuple[float, float], b_range: tuple[float, float], resolution: int
) -> Surface:
    """MSE of ``y_hat = w x + b`` on a ``resolution`` x ``resolution`` grid of (w, b)."""
    ws = torch.linspace(*w_range, resolution, dtype=x.dtype, device=x.device)
    bs = torch.linspace(*b_range, resolution, dtype=x.dtype, device=x.device)
    gw, gb = torch.meshgrid(ws, bs, indexing="ij")
    loss = batched_mse(nn.Linear(1, 1).to(x.device), _linear_family(gw.flatten(), gb.flatten()), x, y)
    lsq = least_squares(x, y)
    return Surface(
        "linear_2d", "w", "b", ws.cpu(), bs.cpu(), loss.reshape(resolution, resolution).cpu(), {"least_squares": lsq}
    )


def filter_normalized_direction(
    params: Mapping[str, torch.Tensor], generator: torch.Generator, include_bias: bool = False
) -> Params:
    """A Gaussian direction in parameter space with filter normalization (Li et al., 2018).

    Each row (one output neuron's incoming weights) of each weight matrix is rescaled to the
    norm of the same row of ``params``, so the direction respects each filter's scale. Bias
    directions are zero unless ``include_bias``, which rescales each bias vector to the norm of
    the trained bias.
    """
    direction = {}
    for name, p in params.items():
        # Drawn by the (CPU) generator, so a seed gives the same direction on any device; then
        # moved to the parameters' device before any arithmetic with them.
        g = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        if p.dim() <= 1:
            if include_bias:
                g = g * (p.norm() / g.norm().clamp_min(1e-12))
            else:
                g = torch.zeros_like(p)
        else:
            rows = g.reshape(g.shape[0], -1)
            target = p.reshape(p.shape[0], -1).norm(dim=1, keepdim=True)
            g = (rows * (target / rows.norm(dim=1, keepdim=True).clamp_min(1e-12))).reshape(p.shape)
        direction[name] = g
    return direction


def _along(centre: Params, directions: list[tuple[Params, torch.Tensor]]) -> Params:
    """Parameter sets centre + sum_i coef_i * direction_i for a batch of coefficients."""
    out = {}
    for name, c in centre.items():
        t = c.unsqueeze(0)
        for direction, coef in directions:
            t = t + coef.reshape(-1, *([1] * c.dim())) * direction[name].unsqueeze(0)
        out[name] = t
    return out


def random_plane(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    d1: Params,
    d2: Params,
    span: tuple[float, float] = (-1.0, 1.0),
    resolution: int = 51,
) -> Surface:
    """Loss of ``net`` on the plane theta* + alpha d1 + beta d2, over a square grid of (alpha, beta)."""
    centre = {n: p.detach() for n, p in net.named_parameters()}
    axis = torch.linspace(*span, resolution, dtype=x.dtype, device=x.device)
    ga, gb = torch.meshgrid(axis, axis, indexing="ij")
    params = _along(centre, [(d1, ga.flatten()), (d2, gb.flatten())])
    loss = batched_mse(net, params, x, y).reshape(resolution, resolution)
    return Surface("random_2d", "alpha", "beta", axis.cpu(), axis.cpu(), loss.cpu())


def random_line(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, d1: Params, span: tuple[float, float] = (-1.0, 1.0), num: int = 51
) -> Curve:
    """Loss of ``net`` along theta* + alpha d1."""
    centre = {n: p.detach() for n, p in net.named_parameters()}
    alpha = torch.linspace(*span, num, dtype=x.dtype, device=x.device)
    return Curve("random_1d", "alpha", alpha.cpu(), batched_mse(net, _along(centre, [(d1, alpha)]), x, y).cpu())


def interpolation(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    initial: Mapping[str, torch.Tensor],
    span: tuple[float, float] = (-0.5, 1.5),
    num: int = 101,
) -> Curve:
    """Loss on the line theta_0 + alpha (theta* - theta_0): alpha 0 is the initial, 1 the trained weights."""
    trained = {n: p.detach() for n, p in net.named_parameters()}
    start = {n: initial[n].to(trained[n]) for n in trained}
    step = {n: trained[n] - start[n] for n in trained}
    alpha = torch.linspace(*span, num, dtype=x.dtype, device=x.device)
    return Curve("interpolation", "alpha", alpha.cpu(), batched_mse(net, _along(start, [(step, alpha)]), x, y).cpu())


# --------------------------------------------------------------------------- the whole job


@dataclass
class Settings:
    """Everything the ``landscape`` command computes with, recorded with the results."""

    ckpt_path: str | None = None
    w_range: tuple[float, float] = (-1.0, 5.0)
    w_points: int = 1000
    b0: float = 2.0
    linear_w_range: tuple[float, float] | None = None
    linear_b_range: tuple[float, float] | None = None
    resolution: int = 51
    span: tuple[float, float] = (-1.0, 1.0)
    interp_range: tuple[float, float] = (-0.5, 1.5)
    interp_points: int = 101
    seed: int = 0
    include_bias: bool = False
    device: str = "auto"

    def validate(self) -> None:
        """Raise :class:`UsageError` for any setting that cannot give a landscape."""
        check_int("--resolution", self.resolution, 2)
        if self.resolution > MAX_RESOLUTION:
            raise UsageError(f"--resolution {self.resolution} is too large (at most {MAX_RESOLUTION} per axis)")
        for name, value in (("--w_points", self.w_points), ("--interp_points", self.interp_points)):
            check_int(name, value, 2)
            if value > MAX_POINTS_1D:
                raise UsageError(f"{name} {value} is too large (at most {MAX_POINTS_1D})")
        check_float("--b0", self.b0)
        check_int("--seed", self.seed, 0)
        for name, rng in (
            ("--w_range", self.w_range),
            ("--linear_w_range", self.linear_w_range),
            ("--linear_b_range", self.linear_b_range),
            ("--span", self.span),
            ("--interp_range", self.interp_range),
        ):
            if rng is None:
                continue
            lo, hi = (check_float(name, v) for v in rng)
            if not lo < hi:
                raise UsageError(f"{name} must be an increasing range MIN MAX, got {lo:g} {hi:g}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda, but torch sees no CUDA device")


@dataclass
class Results:
    """What one ``landscape`` run computed."""

    settings: Settings
    lab: Curve
    linear: Surface
    network: dict[str, Any] = field(default_factory=dict)  # random_1d, random_2d, interpolation
    trained_loss: float | None = None
    notes: list[str] = field(default_factory=list)
    #: The checkpoint's training step: its landscape belongs at that step of the run's curves.
    step: int = 0


def compute(settings: Settings, ckpt_path: Path | None) -> Results:
    """Compute every landscape for one checkpoint (or the lab's data alone, without one).

    The data is the checkpoint's own training data, regenerated from its saved data settings.
    """
    from regression_lab.core.checkpoints import INITIAL_STATE_KEY, load_mynn

    ckpt: dict[str, Any] = {}
    net = None
    if ckpt_path is not None:
        net, ckpt = load_mynn(ckpt_path)
    x, y, note = training_samples(ckpt.get("datamodule_hyper_parameters", {}), str(ckpt_path or ""))
    initial = ckpt.get(INITIAL_STATE_KEY)
    results = compute_for(settings, x, y, net, initial if isinstance(initial, dict) else None)
    if note:
        results.notes.append(note)
    step = ckpt.get("global_step", 0)
    results.step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0
    return results


def training_samples(settings: object, source: str = "") -> tuple[torch.Tensor, torch.Tensor, str]:
    """A checkpoint's training data, regenerated from its saved data settings, and a note.

    The settings come from a file, so they are checked as the DataModule checks its arguments
    (:func:`~regression_lab.core.samples.check_data_settings`); more than
    :data:`MAX_LANDSCAPE_SAMPLES` samples are thinned to every k-th one (the note says so).
    """
    from regression_lab.core.samples import check_data_settings, line_split

    where = f"{source}: " if source else ""
    if not isinstance(settings, Mapping):
        raise UsageError(f"{where}the saved data settings are a {type(settings).__name__}, not a mapping")
    hp = check_data_settings(settings, f"{source} (saved data settings)" if source else "")
    n = hp["num_samples"]
    stride = -(-n // MAX_LANDSCAPE_SAMPLES)  # ceil: 1 unless n is over the cap
    # Rank 0 of `stride` shards is exactly every stride-th sample: 0, stride, 2 stride, ...
    x, y = line_split(hp, "train", 0, stride)
    note = ""
    if stride > 1:
        note = f"the run trained on {n:,} samples; the landscape uses every {stride:,}th ({len(x):,})"
    return x, y, note


def compute_for(
    settings: Settings,
    x: torch.Tensor,
    y: torch.Tensor,
    net: nn.Module | None = None,
    initial: Mapping[str, torch.Tensor] | None = None,
) -> Results:
    """Every landscape on data (x, y): the linear families, and ``net``'s if one is given."""
    settings.validate()
    use_cuda = settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    x, y = x.to(device), y.to(device)
    lab = lab_1d(x, y, *settings.w_range, num=settings.w_points, b0=settings.b0)
    w_ls, b_ls = least_squares(x, y)
    w_range = settings.linear_w_range or (w_ls - 2.0, w_ls + 2.0)
    b_range = settings.linear_b_range or (b_ls - 4.0, b_ls + 4.0)
    results = Results(settings, lab, linear_2d(x, y, w_range, b_range, settings.resolution))
    if net is None:
        results.notes.append(
            "no checkpoint: the trained network's landscape is skipped (train one with 'regression-lab fit')"
        )
        return results

    net = copy.deepcopy(net).to(device).eval()
    gen = torch.Generator().manual_seed(settings.seed)
    trained = {n: p.detach() for n, p in net.named_parameters()}
    d1 = filter_normalized_direction(trained, gen, settings.include_bias)
    d2 = filter_normalized_direction(trained, gen, settings.include_bias)
    results.network["random_2d"] = random_plane(net, x, y, d1, d2, settings.span, settings.resolution)
    results.network["random_1d"] = random_line(net, x, y, d1, settings.span, settings.resolution)
    with torch.no_grad():
        results.trained_loss = float(torch.mean((net(x) - y) ** 2))
    if initial is not None and set(initial) >= set(trained):
        results.network["interpolation"] = interpolation(
            net, x, y, initial, settings.interp_range, settings.interp_points
        )
    else:
        results.notes.append("no initial weights: the initial-to-trained interpolation is skipped")
    return results
