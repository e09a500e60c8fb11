"""Landscape results as matplotlib figures, TensorBoard events (figures, meshes, scalars,
text) and CSV/NPZ/PNG files. Torch, matplotlib and TensorBoard only, no Lightning. Try it::

    from regression_lab.core import landscape as ls, landscape_plots as lp
    lp.write_files(ls.compute(ls.Settings(), None), Path("out"))     # lab_1d.csv, linear_2d.png, ...
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regression_lab.core.errors import UsageError
from regression_lab.core.landscape import Curve, Results, Surface
from regression_lab.core.safe_io import atomic_write, check_writable_dir

#: What the pictures show at most. A figure is about 600 pixels wide and TensorBoard's mesh
#: viewer crawls past a few hundred thousand vertices (a 4001 x 4001 mesh took 8 GB and minutes
#: to write), so finer grids are thinned evenly, ends kept, for the figures, the meshes and the
#: scalar curves; the minimum marked and the summaries come from every point, and the --out
#: CSV/NPZ files hold every point.
MAX_DRAWN_AXIS = 401
MAX_DRAWN_CURVE = 10_000


def thinned(n: int, limit: int) -> torch.Tensor:
    """At most ``limit`` indices of ``range(n)``, evenly spaced, first and last included."""
    if n <= limit:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long().unique()


def thinning_notes(results: Results) -> list[str]:
    """One line per kind of picture that shows fewer points than were computed."""
    notes = []
    axis = max(s.loss.shape[0] for s in _surfaces(results))
    if axis > MAX_DRAWN_AXIS:
        notes.append(
            f"the figures and 3D meshes show {MAX_DRAWN_AXIS} of the {axis} points per axis (every point is in --out)"
        )
    longest = max(len(c.loss) for c in _curves(results))
    if longest > MAX_DRAWN_CURVE:
        notes.append(
            f"the 1D figures and curves show {MAX_DRAWN_CURVE:,} of {longest:,} points (every point is in --out)"
        )
    return notes


def _num(value: float) -> str:
    # Grid coordinates that are zero up to float32 rounding read as 0, not 2.24e-08.
    return "0" if abs(value) < 1e-6 else f"{value:.4g}"


def _figure_1d(curve: Curve, title: str, xlabel: str, marks: dict[str, float] | None = None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    keep = thinned(len(curve.loss), MAX_DRAWN_CURVE)
    ax.plot(curve.values[keep].numpy(), curve.loss[keep].numpy(), lw=1.5)
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
    ix, iy = thinned(len(surface.xs), MAX_DRAWN_AXIS), thinned(len(surface.ys), MAX_DRAWN_AXIS)
    xs, ys = surface.xs[ix].numpy(), surface.ys[iy].numpy()
    z = surface.loss[ix][:, iy].numpy().T.astype(np.float64)
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
    """Vertices (x, loss, y), faces and colours of a surface (thinned to at most
    :data:`MAX_DRAWN_AXIS` per axis), for TensorBoard's mesh plugin."""
    ix, iy = thinned(len(surface.xs), MAX_DRAWN_AXIS), thinned(len(surface.ys), MAX_DRAWN_AXIS)
    nx, ny = len(ix), len(iy)
    gx, gy = torch.meshgrid(surface.xs[ix], surface.ys[iy], indexing="ij")
    z = surface.loss[ix][:, iy]

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


def write_tensorboard(results: Results, logdir: Path, ckpt_path: Path | None) -> Path:
    """Write the results as TensorBoard events in ``logdir``, at the checkpoint's step (see
    :func:`log_to_writer`), so a run's landscape sits at the end of its training curves."""
    from torch.utils.tensorboard import SummaryWriter

    # SummaryWriter fails in its writer thread (a traceback) on an unwritable directory.
    check_writable_dir(logdir, "TensorBoard events")
    try:
        writer = SummaryWriter(log_dir=str(logdir))
    except OSError as err:
        raise UsageError(f"cannot write TensorBoard events in {logdir}: {err.strerror or err}") from None
    with writer:
        log_to_writer(results, writer, ckpt_path, results.step)
    return logdir


def log_to_writer(results: Results, writer: Any, ckpt_path: Path | None, step: int = 0) -> None:
    """Figures, 3D meshes, curves, summary scalars and the settings text, through a SummaryWriter."""
    for name, fig in figures(results).items():
        writer.add_figure(f"landscape/{name}", fig, global_step=step)
    for surface in _surfaces(results):
        vertices, faces, colors = _mesh(surface)
        writer.add_mesh(f"landscape/{surface.name}_surface", vertices, colors=colors, faces=faces, global_step=step)
    for curve in _curves(results):
        # One point per step: TensorBoard's scalar charts plot against an integer step (the
        # point's index, also when the curve is thinned).
        keep = thinned(len(curve.loss), MAX_DRAWN_CURVE)
        for i, value in zip(keep.tolist(), curve.loss[keep].tolist(), strict=True):
            writer.add_scalar(f"landscape/{curve.name}/curve", value, global_step=i)
    for item in [*_curves(results), *_surfaces(results)]:
        for key, value in item.summary().items():
            writer.add_scalar(f"landscape/{item.name}/{key}", value, global_step=step)
    writer.add_text("landscape/settings", settings_text(results, ckpt_path), global_step=step)


def write_files(results: Results, out: Path) -> list[Path]:
    """Raw results and PNG figures in ``out``: lab_1d.csv, linear_2d.npz, random_2d.npz, ..."""
    check_writable_dir(out, "--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _write_files(results, out)
    except OSError as err:  # e.g. a directory named like one of the files, a full disk
        where = err.filename2 or err.filename
        raise UsageError(f"cannot write the results in --out {out}: {err.strerror or err} ({where})") from None


def _write_files(results: Results, out: Path) -> list[Path]:
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
