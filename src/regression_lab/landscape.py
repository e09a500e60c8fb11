"""Loss landscapes: the lab's 1D sweep, the (w, b) surface, and the trained network's landscape.

All grid points are evaluated in batches with ``torch.func.functional_call`` + ``vmap`` (in
chunks, so memory stays bounded), never one by one. Results go to TensorBoard (figures, 3D
meshes, scalars, settings text) and, with ``--out``, to CSV/NPZ/PNG files. No Lightning import.
Run it::

    regression-lab landscape                                  # newest checkpoint under ./lightning_logs
    regression-lab landscape --ckpt_path run.ckpt --resolution 201 --out landscape/
    python scripts/loss_landscape.py --include_bias --seed 3

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

import argparse
import copy
import csv
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from regression_lab.errors import UsageError, check_float, check_int
from regression_lab.safe_io import atomic_write

Params = dict[str, torch.Tensor]

#: Upper bound on points per grid axis: 4001^2 = 16M losses is already far past what a plot
#: or a person can use, and past it the result grid alone costs gigabytes.
MAX_RESOLUTION = 4001
MAX_POINTS_1D = 10_000_000
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


def compute(settings: Settings, ckpt_path: Path | None) -> Results:
    """Compute every landscape for one checkpoint (or the lab's data alone, without one).

    The data is the checkpoint's own training data, regenerated from its saved data settings.
    """
    from regression_lab.checkpoints import INITIAL_STATE_KEY, load_mynn
    from regression_lab.samples import line_split

    ckpt: dict[str, Any] = {}
    net = None
    if ckpt_path is not None:
        net, ckpt = load_mynn(ckpt_path)
    x, y = line_split(ckpt.get("datamodule_hyper_parameters") or {}, "train")
    initial = ckpt.get(INITIAL_STATE_KEY)
    return compute_for(settings, x, y, net, initial if isinstance(initial, dict) else None)


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


# --------------------------------------------------------------------------- figures and export


def _num(value: float) -> str:
    # Grid coordinates that are zero up to float32 rounding read as 0, not 2.24e-08.
    return "0" if abs(value) < 1e-6 else f"{value:.4g}"


def _figure_1d(curve: Curve, title: str, xlabel: str, marks: dict[str, float] | None = None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(curve.values.numpy(), curve.loss.numpy(), lw=1.5)
    s = curve.summary()
    arg = s[f"argmin_{curve.axis}"]
    ax.plot([arg], [s["min"]], "o", color="C3", label=f"minimum {s['min']:.3g} at {curve.axis} = {_num(arg)}")
    for label, where in (marks or {}).items():
        ax.axvline(where, color="0.5", ls="--", lw=1, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel="MSE loss")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def _figure_2d(surface: Surface, title: str, points: dict[str, tuple[float, float]]):
    from matplotlib.colors import BoundaryNorm
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot()
    xs, ys, z = surface.xs.numpy(), surface.ys.numpy(), surface.loss.numpy().T.astype(np.float64)
    # Log-spaced levels show the valley floor and the walls at once; the floor is kept within
    # six decades of the top so an exact zero does not spend every level near zero.
    zmin, zmax = float(z.min()), float(z.max())
    if zmax > zmin:
        floor = max(zmin, zmax * 1e-6, 1e-12)
        levels = np.geomspace(floor, zmax, 25)
        if zmin < floor:
            levels = np.concatenate([[zmin], levels])
        # One colour step per level, so the log spacing shows in the colours too.
        norm = BoundaryNorm(levels, ncolors=256)
    else:
        levels, norm = 10, None
    cs = ax.contourf(xs, ys, z, levels=levels, cmap="viridis", norm=norm)
    fig.colorbar(cs, ax=ax, label="MSE loss", format="%.2g")
    mx, my = surface.argmin()
    ax.plot([mx], [my], "r*", ms=12, label=f"grid minimum ({_num(mx)}, {_num(my)})")
    for (label, (px, py)), marker in zip(points.items(), ("wo", "w^"), strict=False):
        ax.plot([px], [py], marker, mfc="none", ms=10, mew=2, label=f"{label} ({_num(px)}, {_num(py)})")
    ax.set(title=title, xlabel=surface.x_axis, ylabel=surface.y_axis)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def figures(results: Results) -> dict[str, Any]:
    """The matplotlib figures of the results, by name."""
    b0 = results.settings.b0
    w_ls, b_ls = results.linear.info["least_squares"]
    figs = {
        "lab_1d": _figure_1d(results.lab, f"MSE of y = w x + {b0:g} over w", "weight w"),
        "linear_2d": _figure_2d(results.linear, "MSE of y = w x + b", {"least squares": (w_ls, b_ls)}),
    }
    net = results.network
    if "random_2d" in net:
        figs["random_2d"] = _figure_2d(
            net["random_2d"], "Trained network, filter-normalized random plane", {"trained": (0.0, 0.0)}
        )
    if "random_1d" in net:
        figs["random_1d"] = _figure_1d(
            net["random_1d"], "Trained network along a random direction", "alpha", {"trained": 0.0}
        )
    if "interpolation" in net:
        figs["interpolation"] = _figure_1d(
            net["interpolation"],
            "From the initial (0) to the trained (1) weights",
            "alpha",
            {"initial": 0.0, "trained": 1.0},
        )
    return figs


def _mesh(surface: Surface) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vertices (x, loss, y), faces and colours of a surface, for TensorBoard's mesh plugin."""
    nx, ny = surface.loss.shape
    gx, gy = torch.meshgrid(surface.xs, surface.ys, indexing="ij")
    z = surface.loss

    # Normalise each axis to [-1, 1] so a steep loss does not flatten the plot's other axes.
    def unit(t: torch.Tensor) -> torch.Tensor:
        span = (t.max() - t.min()).clamp_min(1e-12)
        return 2 * (t - t.min()) / span - 1

    vertices = torch.stack([unit(gx), unit(z), unit(gy)], dim=-1).reshape(1, -1, 3).float()
    idx = torch.arange(nx * ny).reshape(nx, ny)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[:-1, 1:], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([b, d, c], -1).reshape(-1, 3)]).unsqueeze(
        0
    )
    t = (unit(z).flatten() + 1) / 2
    colors = torch.stack([255 * t, 80 + 0 * t, 255 * (1 - t)], dim=-1).round().to(torch.uint8).unsqueeze(0)
    return vertices, faces.int(), colors


def settings_text(results: Results, ckpt_path: Path | None) -> str:
    """The run's settings and summary as a Markdown table (TensorBoard's Text tab)."""
    s = results.settings
    w_ls, b_ls = results.linear.info["least_squares"]
    rows = [
        ("checkpoint", str(ckpt_path) if ckpt_path else "none"),
        ("lab 1D", f"y = w x + {s.b0:g}, w in [{s.w_range[0]:g}, {s.w_range[1]:g}], {s.w_points} points"),
        (
            "linear 2D",
            f"w in [{float(results.linear.xs[0]):.4g}, {float(results.linear.xs[-1]):.4g}], "
            f"b in [{float(results.linear.ys[0]):.4g}, {float(results.linear.ys[-1]):.4g}], "
            f"{s.resolution}x{s.resolution}",
        ),
        ("least squares (closed form)", f"w = {w_ls:.6g}, b = {b_ls:.6g}"),
        ("grid minimum", "w = {:.6g}, b = {:.6g}".format(*results.linear.argmin())),
        (
            "random directions",
            f"Gaussian, filter-normalized, seed {s.seed}, biases {'included' if s.include_bias else 'zeroed'}",
        ),
        ("random span", f"[{s.span[0]:g}, {s.span[1]:g}], {s.resolution} points per axis"),
        ("interpolation", f"alpha in [{s.interp_range[0]:g}, {s.interp_range[1]:g}], {s.interp_points} points"),
    ]
    if results.trained_loss is not None:
        rows.append(("trained loss (training data)", f"{results.trained_loss:.6g}"))
    rows += [("note", n) for n in results.notes]
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _curves(results: Results) -> list[Curve]:
    return [results.lab, *(v for v in results.network.values() if isinstance(v, Curve))]


def _surfaces(results: Results) -> list[Surface]:
    return [results.linear, *(v for v in results.network.values() if isinstance(v, Surface))]


def write_tensorboard(results: Results, logdir: Path, ckpt_path: Path | None, step: int = 0) -> Path:
    """Write the results as TensorBoard events in ``logdir`` (see :func:`log_to_writer`)."""
    from torch.utils.tensorboard import SummaryWriter

    try:
        writer = SummaryWriter(log_dir=str(logdir))
    except OSError as err:
        raise UsageError(f"cannot write TensorBoard events in {logdir}: {err.strerror or err}") from None
    with writer:
        log_to_writer(results, writer, ckpt_path, step)
    return logdir


def log_to_writer(results: Results, writer: Any, ckpt_path: Path | None, step: int = 0) -> None:
    """Figures, 3D meshes, curves, summary scalars and the settings text, through a SummaryWriter."""
    for name, fig in figures(results).items():
        writer.add_figure(f"landscape/{name}", fig, global_step=step)
    for surface in _surfaces(results):
        vertices, faces, colors = _mesh(surface)
        writer.add_mesh(f"landscape/{surface.name}_surface", vertices, colors=colors, faces=faces, global_step=step)
    for curve in _curves(results):
        # One point per step: TensorBoard's scalar charts plot against an integer step.
        for i, value in enumerate(curve.loss.tolist()):
            writer.add_scalar(f"landscape/{curve.name}/curve", value, global_step=i)
    for item in [*_curves(results), *_surfaces(results)]:
        for key, value in item.summary().items():
            writer.add_scalar(f"landscape/{item.name}/{key}", value, global_step=step)
    writer.add_text("landscape/settings", settings_text(results, ckpt_path), global_step=step)


def write_files(results: Results, out: Path) -> list[Path]:
    """Raw results and PNG figures in ``out``: lab_1d.csv, linear_2d.npz, random_2d.npz, ..."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create --out directory {out}: {err.strerror or err}") from None
    written = []
    # Each file is written beside its name and renamed into place: an interrupted run leaves
    # the previous results whole.
    for curve in _curves(results):
        path = out / f"{curve.name}.csv"
        with atomic_write(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([curve.axis, "loss"])
            w.writerows(zip(curve.values.tolist(), curve.loss.tolist(), strict=True))
        written.append(path)
    for surface in _surfaces(results):
        path = out / f"{surface.name}.npz"
        arrays = {surface.x_axis: surface.xs.numpy(), surface.y_axis: surface.ys.numpy(), "loss": surface.loss.numpy()}
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **arrays)
        written.append(path)
    for name, fig in figures(results).items():
        path = out / f"{name}.png"
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format="png")
        written.append(path)
    return written


def target_logdir(ckpt_path: Path | None, root: Path) -> Path:
    """The training run's own directory for a checkpoint inside one, else a new version_N under ``root``."""
    from regression_lab.checkpoints import reserve_numbered_dir

    if ckpt_path is not None:
        run = ckpt_path.resolve().parent.parent
        if ckpt_path.resolve().parent.name == "checkpoints" and run.name.startswith("version_"):
            return run
    try:
        return reserve_numbered_dir(root, "version_")
    except OSError as err:
        raise UsageError(f"cannot write TensorBoard events under {root}: {err.strerror or err}") from None


# --------------------------------------------------------------------------- command line


def _range(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``landscape`` subcommand's options."""
    d = Settings()
    parser.add_argument(
        "--ckpt_path", help="checkpoint of the trained network (default: the newest under ./lightning_logs/)"
    )
    parser.add_argument(
        "--resolution", type=int, default=d.resolution, help="points per axis of each 2D grid and of the random 1D line"
    )
    parser.add_argument("--out", help="also write CSV/NPZ results and PNG figures to this directory")
    parser.add_argument(
        "--logdir", default="lightning_logs", help="where a new run directory goes when the checkpoint is not in one"
    )

    def add_range(flag: str, help_text: str, default: tuple[float, float] | None = None) -> None:
        parser.add_argument(flag, nargs=2, type=_range, metavar=("MIN", "MAX"), default=default, help=help_text)

    add_range("--w_range", "the lab's sweep over w", d.w_range)
    parser.add_argument("--w_points", type=int, default=d.w_points, help="points of the lab's sweep")
    parser.add_argument("--b0", type=_range, default=d.b0, help="the fixed bias of the lab's sweep y = w x + b0")
    add_range("--linear_w_range", "w axis of the (w, b) grid (default: least squares w +- 2)")
    add_range("--linear_b_range", "b axis of the (w, b) grid (default: least squares b +- 4)")
    add_range("--span", "coefficients along the random directions", d.span)
    add_range("--interp_range", "alpha of the initial-to-trained line", d.interp_range)
    parser.add_argument(
        "--interp_points", type=int, default=d.interp_points, help="points of the initial-to-trained line"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the random directions")
    parser.add_argument(
        "--include_bias", action="store_true", help="give the random directions bias components (zero by default)"
    )
    parser.add_argument("--device", default=d.device, help="auto (GPU when there is one), cpu or cuda")
    parser.add_argument("--no_tensorboard", action="store_true", help="skip the TensorBoard export")


def run(args: argparse.Namespace) -> int:
    """Run ``landscape``: compute, export to TensorBoard (and --out), print a summary."""
    from regression_lab.checkpoints import newest_checkpoint

    settings = Settings(
        ckpt_path=args.ckpt_path,
        w_range=tuple(args.w_range),
        w_points=args.w_points,
        b0=args.b0,
        linear_w_range=tuple(args.linear_w_range) if args.linear_w_range else None,
        linear_b_range=tuple(args.linear_b_range) if args.linear_b_range else None,
        resolution=args.resolution,
        span=tuple(args.span),
        interp_range=tuple(args.interp_range),
        interp_points=args.interp_points,
        seed=args.seed,
        include_bias=args.include_bias,
        device=args.device,
    )
    settings.validate()  # before any file is read or written
    root = Path(args.logdir)
    if args.ckpt_path:
        ckpt_path: Path | None = Path(args.ckpt_path)
    else:
        try:
            ckpt_path = newest_checkpoint(root)
        except UsageError:
            ckpt_path = None
    results = compute(settings, ckpt_path)
    for note in results.notes:
        print(f"note: {note}", file=sys.stderr)
    lab = results.lab.summary()
    w_ls, b_ls = results.linear.info["least_squares"]
    print(f"lab 1D: minimum MSE {lab['min']:.4g} at w = {lab['argmin_w']:.4f} (y = w x + {settings.b0:g})")
    print(
        "linear 2D: grid minimum at w = {:.4f}, b = {:.4f}; least squares w = {:.4f}, b = {:.4f}".format(
            *results.linear.argmin(), w_ls, b_ls
        )
    )
    for name, item in results.network.items():
        s = item.summary()
        print(f"{name}: min {s['min']:.4g}, at the centre {s['center']:.4g}, sharpness {s['sharpness']:.4g}")
    if args.out:
        files = write_files(results, Path(args.out))
        print(f"wrote {len(files)} files to {args.out}")
    if not args.no_tensorboard:
        logdir = write_tensorboard(results, target_logdir(ckpt_path, root), ckpt_path)
        print(f"TensorBoard: {logdir}  (tensorboard --logdir {logdir.parent})")
    return 0
