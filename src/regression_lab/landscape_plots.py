"""Landscape results as matplotlib figures, TensorBoard events (figures, meshes, text)
and CSV/NPZ/PNG files, for the ``landscape`` command and the ``LandscapeLogger`` callback::

    from regression_lab import landscape as ls, landscape_plots as lp
    lp.write_files(ls.compute(ls.Settings(), None), Path("out"))     # lab_1d.csv, linear_2d.png, ...
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regression_lab.curvature import NOTE
from regression_lab.errors import refused_os_errors
from regression_lab.files import atomic_write, markdown_table, png_of, replace_all, write_figure, write_text
from regression_lab.landscape import Landscape, Results

#: What the pictures show at most (a figure is about 600 pixels wide, TensorBoard's mesh viewer numbers vertices with
#: 16 bits: 256 x 256 at most): finer grids are drawn thinned evenly; the summaries and --out keep every point.
MAX_DRAWN_AXIS = 255
MAX_DRAWN_CURVE = 10_000
TITLES = {
    "lab_1d": "MSE of y = w x + {b0:g} over w",
    "linear_2d": "MSE of y = w x + b",
    "random_2d": "Trained network, filter-normalized random plane",
    "random_1d": "Trained network along a random direction",
    "interpolation": "From the initial (0) to the trained (1) weights",
    "trajectory": "The training path on its first two principal components",
}


def thinned(n: int, limit: int) -> torch.Tensor:
    """At most ``limit`` indices of ``range(n)``, evenly spaced, first and last included."""
    return torch.arange(n) if n <= limit else torch.linspace(0, n - 1, limit).round().long().unique()


def thinning_notes(results: Results) -> list[str]:
    """One line per kind of picture that shows fewer points than were computed."""
    notes, every = [], "(every point is in --out)"
    axis = max(len(ls.axes[0]) for ls in results.landscapes.values() if len(ls.axes) == 2)
    curve = max(len(ls.axes[0]) for ls in results.landscapes.values() if len(ls.axes) == 1)
    if axis > MAX_DRAWN_AXIS:
        notes.append(f"the figures and 3D meshes show {MAX_DRAWN_AXIS} of the {axis} points per axis {every}")
    if curve > MAX_DRAWN_CURVE:
        notes.append(f"the 1D figures show {MAX_DRAWN_CURVE:,} of {curve:,} points {every}")
    return notes


def _num(value: float) -> str:
    return "0" if abs(value) < 1e-6 else f"{value:.4g}"  # zero up to float32 rounding reads as 0


def figure(ls: Landscape, results: Results) -> Any:
    """A landscape's figure: a curve with its minimum marked, or log-spaced contours."""
    from matplotlib.colors import BoundaryNorm
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4 if len(ls.axes) == 1 else 5), dpi=100)
    ax = fig.add_subplot()
    title = TITLES.get(ls.name, ls.name).format(b0=results.settings.b0)
    ax.set(title=title, xlabel=ls.names[0], ylabel="MSE loss" if len(ls.axes) == 1 else ls.names[1])
    marks = {"random_1d": {"trained": 0.0}, "interpolation": {"initial": 0.0, "trained": 1.0}}.get(ls.name, {})
    if len(ls.axes) == 1:
        keep = thinned(len(ls.loss), MAX_DRAWN_CURVE)
        ax.plot(ls.axes[0][keep].numpy(), ls.loss[keep].numpy(), lw=1.5)
        (where,), low = ls.argmin(), float(ls.loss.min())
        ax.plot([where], [low], "o", color="C3", label=f"minimum {low:.3g} at {ls.names[0]} = {_num(where)}")
        for (label, at), (colour, style) in zip(marks.items(), (("C1", "--"), ("C2", ":")), strict=False):
            ax.axvline(at, color=colour, ls=style, lw=1.5, label=f"{label} ({ls.names[0]} = {at:g})")
    else:
        ix, iy = thinned(len(ls.axes[0]), MAX_DRAWN_AXIS), thinned(len(ls.axes[1]), MAX_DRAWN_AXIS)
        z = ls.loss[ix][:, iy].numpy().T.astype(np.float64)
        # Log-spaced levels show the floor and the walls at once (floor within 6 decades of the top: not all near 0).
        zmin, zmax = float(z.min()), float(z.max())
        levels, norm = 10, None
        if zmax > zmin:
            floor = max(zmin, zmax * 1e-6, 1e-12)
            levels = np.unique([zmin, *np.geomspace(floor, zmax, 25)])  # zmin too, when below the floor
            norm = BoundaryNorm(levels, ncolors=256)
        cs = ax.contourf(ls.axes[0][ix].numpy(), ls.axes[1][iy].numpy(), z, levels=levels, cmap="viridis", norm=norm)
        fig.colorbar(cs, ax=ax, label="MSE loss", format="%.2g")
        mx, my = ls.argmin()
        what, at = ("least squares", results.least_squares) if ls.name == "linear_2d" else ("trained", (0, 0))
        # A wide ring under a small star: the two points nearly coincide, and both must show.
        ax.plot(*at, "o", color="C1", mfc="none", ms=18, mew=2, label=f"{what} ({_num(at[0])}, {_num(at[1])})")
        ax.plot([mx], [my], "r*", ms=9, zorder=3, label=f"grid minimum ({_num(mx)}, {_num(my)})")
        if ls.name == "trajectory":
            t = results.trajectory
            path, (first, last) = t["path"].numpy(), (int(t["epochs"][0]), int(t["epochs"][-1]))
            ax.plot(path[:, 0], path[:, 1], ".-", color="k", lw=0.8, ms=3, label=f"weights, epochs {first} to {last}")
            ax.set(xlabel=f"PC1 ({float(t['explained'][0]):.1%} of the variance)",
                   ylabel=f"PC2 ({float(t['explained'][1]):.1%})")  # fmt: skip
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def picture(results: Results, name: str) -> bytes:
    """The figure of ``results.landscapes[name]`` as PNG bytes, drawn the first time it is asked for."""
    if name not in results.pictures:
        results.pictures[name] = png_of(figure(results.landscapes[name], results))
    return results.pictures[name]


def _mesh(ls: Landscape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mesh vertices (x, loss, y), colours and faces, each axis scaled to [-1, 1]: a steep loss flattens no other."""
    ix, iy = thinned(len(ls.axes[0]), MAX_DRAWN_AXIS), thinned(len(ls.axes[1]), MAX_DRAWN_AXIS)
    gx, gy = torch.meshgrid(ls.axes[0][ix], ls.axes[1][iy], indexing="ij")
    unit = lambda t: 2 * (t - t.min()) / (t.max() - t.min()).clamp_min(1e-12) - 1  # noqa: E731
    z = unit(ls.loss[ix][:, iy])
    vertices = torch.stack([unit(gx), z, unit(gy)], dim=-1).reshape(1, -1, 3).float()
    idx = torch.arange(len(ix) * len(iy)).reshape(len(ix), len(iy))
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[:-1, 1:], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([b, d, c], -1).reshape(-1, 3)])
    t = (z.flatten() + 1) / 2
    colors = torch.stack([255 * t, 80 + 0 * t, 255 * (1 - t)], dim=-1).round().to(torch.uint8)
    return vertices, colors.unsqueeze(0), faces.int().unsqueeze(0)


def settings_text(results: Results, ckpt_path: Any) -> dict[str, str]:
    """The settings and the numbers as two Markdown tables by tag (two Text cards, each short enough to show whole)."""
    s, linear = results.settings, results.landscapes["linear_2d"]
    biases = "included" if s.include_bias else "zeroed"
    (w_lo, w_hi), (b_lo, b_hi) = ((float(a[0]), float(a[-1])) for a in linear.axes)
    settings = [
        ("checkpoint", str(ckpt_path) if ckpt_path else "none"),
        ("lab 1D", f"y = w x + {s.b0:g}, w in [{s.w_range[0]:g}, {s.w_range[1]:g}], {s.w_points} points"),
        ("linear 2D", f"w in [{w_lo:.4g}, {w_hi:.4g}], b in [{b_lo:.4g}, {b_hi:.4g}], {s.resolution}x{s.resolution}"),
        ("random directions", f"Gaussian, filter-normalized, seed {s.seed}, biases {biases}"),
        ("random span", f"[{s.span[0]:g}, {s.span[1]:g}], {s.resolution} points per axis"),
        ("interpolation", f"alpha in [{s.interp_range[0]:g}, {s.interp_range[1]:g}], {s.interp_points} points"),
        *(("note", n) for n in results.notes),
    ]
    numbers = [("least squares (closed form)", "w = {:.6g}, b = {:.6g}".format(*results.least_squares))]
    if results.trained_loss is not None:
        numbers.append(("trained loss (training data)", f"{results.trained_loss:.6g}"))
    for name, ls in results.landscapes.items():  # each curve's and surface's numbers (the figures draw them)
        n = ls.summary()
        where = ", ".join(f"{axis} = {n[f'argmin_{axis}']:.6g}" for axis in ls.names)
        numbers.append((name, f"min {n['min']:.6g} at {where}; at the centre {n['center']:.6g}; "
                              f"max - min {n['sharpness']:.6g}"))  # fmt: skip
    numbers += [tuple(line.split(": ", 1)) for line in hessian_lines(results)]
    return {"landscape/settings": markdown_table(["setting", "value"], settings),
            "landscape/summary": markdown_table(["result", "value"], numbers)}  # fmt: skip


#: The mesh viewer's camera: a three-quarter view from outside the [-1, 1] cube the vertices fill.
MESH_CONFIG = {"camera": {"cls": "PerspectiveCamera", "fov": 60, "position": [2.2, 1.6, 2.6], "lookAt": [0, 0, 0]}}


def hessian_lines(results: Results) -> list[str]:
    """The exact curvature at the trained weights, and the trajectory's plane, in a few lines."""
    lines, h, t = [], results.hessian, results.trajectory
    if h is not None:
        # Negative beyond rounding (numpy's matrix_rank tolerance, for the float64 Hessian): a dead unit's exact
        # zeros do not count, whichever sign rounding gives them.
        values = h["eigenvalues"]
        negative = int((values < -float(values.abs().max()) * len(values) * torch.finfo(values.dtype).eps).sum())
        lines += [f"hessian: {len(values)} eigenvalues from {float(values[0]):.4g} to {h['top']:.4g}, trace "
                  f"{h['trace']:.4g}, smallest/largest {h['min_max_ratio']:.3g}, {negative} negative"]  # fmt: skip
        lines += [f"eigenvalues: {NOTE}"] if negative else []
    if t is not None:
        first, last = int(t["epochs"][0]), int(t["epochs"][-1])
        share = [f"{float(v):.1%}" for v in t["explained"]]
        lines.append(f"trajectory: {len(t['epochs'])} points (epochs {first} to {last}); PC1 and PC2 explain "
                     f"{share[0]} and {share[1]} of the variance")  # fmt: skip
    return lines


def log_to_writer(results: Results, writer: Any, ckpt_path: Any, step: int = 0) -> None:
    """Figures, 3D meshes and the Text tables through a SummaryWriter (curves as figures: a chart's x is a step)."""
    from torch.utils.tensorboard.summary import mesh

    for name, ls in results.landscapes.items():
        write_figure(picture(results, name), writer, f"landscape/{name}", step=step)
        if len(ls.axes) == 2:
            what = f"{TITLES[name]}: x = {ls.names[0]}, up = MSE loss, depth = {ls.names[1]}, each scaled to [-1, 1]"
            summary = mesh(f"landscape/{name}_surface", *_mesh(ls), MESH_CONFIG, TITLES[name], what)
            writer.file_writer.add_summary(summary, global_step=step)
    for tag, text in settings_text(results, ckpt_path).items():
        write_text(writer, tag, text, step)
    if results.hessian is not None:
        for key in ("top", "trace", "min_max_ratio"):
            writer.add_scalar(f"hessian/{key}", results.hessian[key], global_step=step)


def run_dir_of(ckpt_path: Any) -> Path | None:
    """The training run a checkpoint belongs to (``version_N/checkpoints/x.ckpt``), else None."""
    ckpt = Path(ckpt_path).resolve() if ckpt_path else None
    found = ckpt is not None and ckpt.parent.name == "checkpoints" and ckpt.parent.parent.name.startswith("version_")
    return ckpt.parent.parent if found else None


def write_tensorboard(results: Results, root: Path, ckpt_path: Any) -> Path:
    """The results as TensorBoard events in the checkpoint's own run at its step, else in a new run under ``root``."""
    from torch.utils.tensorboard import SummaryWriter

    from regression_lab.files import reserve_numbered_dir

    logdir = run_dir_of(ckpt_path) or reserve_numbered_dir(root)
    with SummaryWriter(log_dir=str(logdir)) as writer:
        log_to_writer(results, writer, ckpt_path, results.step)
    return logdir


def write_files(results: Results, out: Path) -> list[Path]:
    """Every point in ``out``: a CSV per curve (``w,loss``), an NPZ per surface (``w``, ``b``, ``loss``), a PNG each."""
    written = []
    with refused_os_errors(f"cannot write the results in --out {out}"):  # a directory named like one of the files
        out.mkdir(parents=True, exist_ok=True)
        with replace_all() as queue:  # the old files stay until every new one is whole
            for name, ls in results.landscapes.items():
                if len(ls.axes) == 1:
                    points = zip(ls.axes[0].tolist(), ls.loss.tolist(), strict=True)
                    with atomic_write(out / f"{name}.csv", "w", queue, newline="") as fh:
                        csv.writer(fh).writerows([[ls.names[0], "loss"], *points])
                else:
                    axes = {n: a.numpy() for n, a in zip(ls.names, ls.axes, strict=True)}
                    extra = {k: v.numpy() for k, v in results.trajectory.items()} if name == "trajectory" else {}
                    with atomic_write(out / f"{name}.npz", "wb", queue) as fh:
                        np.savez(fh, **axes, loss=ls.loss.numpy(), **extra)
                write_figure(picture(results, name), png=out / f"{name}.png", pending=queue)
                written += [out / f"{name}.{'csv' if len(ls.axes) == 1 else 'npz'}", out / f"{name}.png"]
            if results.hessian is not None:  # eigenvalues ascending
                with atomic_write(out / "hessian.npz", "wb", queue) as fh:
                    np.savez(fh, eigenvalues=results.hessian["eigenvalues"].numpy(), trace=results.hessian["trace"])
                written.append(out / "hessian.npz")
    return written
