"""The ``landscape`` command: loss landscapes of the lab's lines and of a trained network, to TensorBoard and ``--out``.
The lab's 1D sweep (``lab_1d``: ``11 (w - 3)^2``), the (w, b) surface beside least squares (``linear_2d``), the net's
loss on filter-normalized random directions (``random_2d``, ``random_1d``; Li et al., 2018) and from its initial to its
trained weights (``interpolation``), each a :func:`grid_losses` call; figures: :mod:`regression_lab.landscape_plots`::

    regression-lab landscape --ckpt_path run.ckpt --resolution 201 --out landscape/   # default: the newest checkpoint
"""

from __future__ import annotations

import contextlib
import copy
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from torch import Tensor, nn
from torch.func import functional_call, vmap

from regression_lab.curvature import add_to, load_trajectory
from regression_lab.errors import UsageError, check_float, check_int, command_parser
from regression_lab.files import LOG_ROOT, check_writable_dir, chosen_checkpoint, newest_checkpoint
from regression_lab.models import MAX_SEED

Params = dict[str, Tensor]
#: Points per grid axis: 4001^2 = 16M losses is far past what a plot or a person can use.
MAX_RESOLUTION = 4001
MAX_POINTS_1D = 10_000_000
#: Training samples a landscape is evaluated on: more are thinned to every k-th, so activations stay small.
MAX_LANDSCAPE_SAMPLES = 100_000
#: Memory the batched evaluation may use at once (activations of one chunk of grid points).
CHUNK_BYTES = 256 * 2**20


@dataclass
class Landscape:
    """``loss[i, j, ...]`` at the coordinates ``axes[0][i], axes[1][j], ...`` (named ``names``)."""

    name: str
    names: tuple[str, ...]
    axes: list[Tensor]
    loss: Tensor

    def argmin(self) -> tuple[float, ...]:
        """The coordinates of the grid point with the lowest loss."""
        index = torch.unravel_index(torch.argmin(self.loss), self.loss.shape)
        return tuple(float(axis[i]) for axis, i in zip(self.axes, index, strict=True))

    def summary(self) -> dict[str, float]:
        """The minimum, where it is, the loss at the grid's centre, and max - min within the grid."""
        centre = self.loss[tuple(len(a) // 2 for a in self.axes)]
        where = {f"argmin_{n}": v for n, v in zip(self.names, self.argmin(), strict=True)}
        return {"min": float(self.loss.min()), **where, "center": float(centre),
                "sharpness": float(self.loss.max() - self.loss.min())}  # fmt: skip


def grid_losses(
    module: nn.Module, x: Tensor, y: Tensor, start: Params, directions: list[Params], axes: list[Tensor]
) -> Tensor:
    """The MSE of ``module`` on (x, y) at ``start + sum_i a_i directions[i]`` for every point ``a`` of the grid
    ``axes[0] x axes[1] x ...``: ``functional_call`` under ``vmap``, in chunks of bounded memory."""
    coefs = torch.stack([m.flatten() for m in torch.meshgrid(*axes, indexing="ij")], dim=1)  # (K, len(axes))
    width = max(t.shape[0] for t in start.values())
    chunk = max(1, CHUNK_BYTES // max(1, 3 * len(x) * (width + 2) * x.element_size()))

    def loss(p: Params) -> Tensor:
        return torch.mean((functional_call(module, p, (x,)) - y) ** 2)

    out = []
    with torch.no_grad():
        for part in coefs.split(chunk):
            params = {
                n: s + sum(c.reshape(-1, *[1] * s.dim()) * d[n] for c, d in zip(part.T, directions, strict=True))
                for n, s in start.items()
            }
            out.append(vmap(loss)(params))
    return torch.cat(out).reshape(tuple(len(a) for a in axes))


def least_squares(x: Tensor, y: Tensor) -> tuple[float, float]:
    """The closed-form least-squares line (w, b) through (x, y)."""
    a = torch.cat([x, torch.ones_like(x)], dim=1).double().cpu()
    return tuple(torch.linalg.lstsq(a, y.double().cpu()).solution.flatten().tolist())


def filter_normalized_direction(params: Params, generator: torch.Generator, include_bias: bool = False) -> Params:
    """A Gaussian direction, each weight row rescaled to the norm of that row of ``params`` (filter normalization);
    bias directions zero unless ``include_bias`` (then scaled to the bias's)."""
    out = {}
    for name, p in params.items():
        # Drawn on the CPU generator (the same direction on any device), then moved to the parameters.
        g = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        if p.dim() > 1:
            rows = g.reshape(len(g), -1)
            scale = p.reshape(len(p), -1).norm(dim=1, keepdim=True) / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
            out[name] = (rows * scale).reshape(p.shape)
        else:
            out[name] = g * (p.norm() / g.norm().clamp_min(1e-12)) if include_bias else torch.zeros_like(p)
    return out


@dataclass
class Settings:
    """What ``landscape`` computes (the command's options, see :func:`build_parser`)."""

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
    trajectory: bool = False
    device: str = "auto"

    def check(self) -> None:
        """Refuse (:class:`UsageError`) any setting that cannot give a landscape."""
        check_int("--resolution", self.resolution, 2, MAX_RESOLUTION)
        check_int("--w_points", self.w_points, 2, MAX_POINTS_1D)
        check_int("--interp_points", self.interp_points, 2, MAX_POINTS_1D)
        check_int("--seed", self.seed, 0, MAX_SEED)
        check_float("--b0", self.b0)
        for name in ("w_range", "linear_w_range", "linear_b_range", "span", "interp_range"):
            if (pair := getattr(self, name)) is None and name.startswith("linear"):
                continue  # least squares' w and b, give or take a margin
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise UsageError(f"--{name} must be a range MIN MAX, got {pair!r:.40}")
            if not check_float(f"--{name}", pair[0]) < check_float(f"--{name}", pair[1]):
                raise UsageError(f"--{name} must be an increasing range MIN MAX, got {pair[0]:g} {pair[1]:g}")
        for name in ("include_bias", "trajectory"):
            if not isinstance(value := getattr(self, name), bool):
                raise UsageError(f"--{name} must be true or false, got {value!r:.40}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda, but torch sees no CUDA device")


@dataclass
class Results:
    """What one ``landscape`` run computed, by name (``lab_1d``, ``linear_2d``, ``random_2d`` ...)."""

    settings: Settings
    landscapes: dict[str, Landscape]
    least_squares: tuple[float, float]
    trained_loss: float | None = None
    notes: list[str] = field(default_factory=list)
    step: int = 0  #: the checkpoint's training step: its landscape belongs there in the run's curves
    hessian: dict | None = None  #: the trained network's :func:`~regression_lab.curvature.spectrum`
    trajectory: dict | None = None  #: the training path on the PCA plane (``path``, ``epochs``, ``explained``)
    pictures: dict[str, bytes] = field(default_factory=dict)  #: each figure's PNG, drawn once for every destination


def compute_for(settings: Settings, x: Tensor, y: Tensor, net: nn.Module | None = None,
                initial: Params | None = None, trajectory: dict | None = None) -> Results:  # fmt: skip
    """Every landscape on data (x, y): the linear families, and ``net``'s when one is given (its curvature, and the
    plane of its ``trajectory``: :mod:`regression_lab.curvature`)."""
    settings.check()
    device = torch.device("cuda" if settings.device != "cpu" and torch.cuda.is_available() else "cpu")
    x, y, s = x.to(device), y.to(device), settings
    axis = lambda lo_hi, n: torch.linspace(*lo_hi, n, device=device)  # noqa: E731
    on = lambda p: {k: v.to(device) for k, v in p.items()}  # noqa: E731
    line_params = lambda w, b: {"weight": torch.tensor([[w]]), "bias": torch.tensor([b])}  # noqa: E731
    line, (w_ls, b_ls) = nn.Linear(1, 1).to(device), least_squares(x, y)
    w_axis = axis(s.linear_w_range or (w_ls - 2.0, w_ls + 2.0), s.resolution)
    b_axis = axis(s.linear_b_range or (b_ls - 4.0, b_ls + 4.0), s.resolution)
    grids = {
        "lab_1d": (line, line_params(0, s.b0), [line_params(1, 0)], [axis(s.w_range, s.w_points)], ("w",)),
        "linear_2d": (line, line_params(0, 0), [line_params(1, 0), line_params(0, 1)], [w_axis, b_axis], ("w", "b")),
    }
    results = Results(settings, {}, (w_ls, b_ls))
    if net is None:
        results.notes.append("no checkpoint: the trained network's landscape is skipped (train one with fit)")
    else:
        net = copy.deepcopy(net).to(device).eval()
        trained = {n: p.detach() for n, p in net.named_parameters()}
        gen = torch.Generator().manual_seed(s.seed)
        d1, d2 = (filter_normalized_direction(trained, gen, s.include_bias) for _ in range(2))
        span = axis(s.span, s.resolution)
        grids["random_2d"] = (net, trained, [d1, d2], [span, span], ("alpha", "beta"))
        grids["random_1d"] = (net, trained, [d1], [span], ("alpha",))
        if initial is not None and set(initial) >= set(trained):
            start = {n: initial[n].to(trained[n]) for n in trained}
            step = {n: trained[n] - start[n] for n in trained}
            grids["interpolation"] = (net, start, [step], [axis(s.interp_range, s.interp_points)], ("alpha",))
        else:
            results.notes.append("no initial weights: the initial-to-trained interpolation is skipped")
        with torch.no_grad():
            results.trained_loss = float(torch.mean((net(x) - y) ** 2))
    for name, (module, start, directions, axes, names) in grids.items():
        loss = grid_losses(module, x, y, on(start), [on(d) for d in directions], axes)
        results.landscapes[name] = Landscape(name, names, [a.cpu() for a in axes], loss.cpu())
    if net is not None:
        add_to(results, net, x, y, trajectory)
    return results


def compute(settings: Settings, ckpt_path: str | Path | None, data_csv: str | None = None) -> Results:
    """Every landscape of a checkpoint's network on its training data (without one, the lab's), or on ``data_csv``."""
    from regression_lab.checkpoint import INITIAL_STATE_KEY, load_model
    from regression_lab.csvfile import read_xy
    from regression_lab.data import RegressionDataModule

    net, ckpt = (None, {}) if ckpt_path is None else load_model(ckpt_path)
    if isinstance(net, list):
        raise UsageError(f"{ckpt_path} holds an ensemble: landscape takes a single-model checkpoint")
    if data_csv is None:
        dm = RegressionDataModule.from_checkpoint(ckpt, str(ckpt_path))
        n = dm.splits["train"][0]
        x, y = dm.samples("train", 0, stride := -(-n // MAX_LANDSCAPE_SAMPLES))  # rank 0 of `stride` shards
    else:
        x, y, _ = read_xy(data_csv, "--data_csv", 2, " for a least-squares line")
        n, stride = len(x), -(-len(x) // MAX_LANDSCAPE_SAMPLES)
        x, y = x[::stride], y[::stride]
    trajectory = load_trajectory(ckpt_path) if settings.trajectory else None
    results = compute_for(settings, x, y, net, ckpt.get(INITIAL_STATE_KEY), trajectory)  # checked: None or a dict
    if stride > 1:
        results.notes.append(f"the run trained on {n:,} samples; the landscape uses every {stride:,}th ({len(x):,})")
    results.step = step if type(step := ckpt.get("global_step")) is int and step >= 0 else 0  # a bool is no step
    return results


def build_parser() -> ArgumentParser:
    """The ``landscape`` command's options: :class:`Settings`, and where things go."""
    parser = command_parser("landscape", __doc__)
    add, d = parser.add_argument, Settings()
    add("--config", action=ActionConfigFile, help="a YAML file of the options below")
    add("--ckpt_path", type=str | None, help="checkpoint (default: the newest under --logdir)")
    add("--out", type=str | None, help="also write CSV/NPZ results and PNG figures to this directory")
    add("--logdir", default=str(LOG_ROOT), help="where runs are (a new one for a lone checkpoint)")
    add("--no_tensorboard", action="store_true", help="skip the TensorBoard export")
    add("--data_csv", type=str | None, help="(x, y) rows of a CSV file (default: the checkpoint's training data)")
    rng = dict(type=float, nargs=2, metavar=("MIN", "MAX"))
    add("--w_range", **rng, default=list(d.w_range), help="the lab's sweep over w")
    add("--w_points", type=int, default=d.w_points, help="points of the lab's sweep")
    add("--b0", type=float, default=d.b0, help="the fixed bias of the lab's sweep y = w x + b0")
    add("--linear_w_range", **rng, default=None, help="w axis of the (w, b) grid (default: least squares w +- 2)")
    add("--linear_b_range", **rng, default=None, help="b axis of the (w, b) grid (default: least squares b +- 4)")
    add("--resolution", type=int, default=d.resolution, help="points per axis of each 2D grid and the random 1D line")
    add("--span", **rng, default=list(d.span), help="coefficients along the random directions")
    add("--interp_range", **rng, default=list(d.interp_range), help="alpha of the initial-to-trained line")
    add("--interp_points", type=int, default=d.interp_points, help="points of the initial-to-trained line")
    add("--seed", type=int, default=d.seed, help="seed of the random directions")
    add("--include_bias", action="store_true", help="give the random directions bias components (zero by default)")
    add("--trajectory", action="store_true", help="the loss on the plane of the training path's principal components "
        "(fit --trajectory_every)")  # fmt: skip
    add("--device", type=str, default=d.device, help="auto (GPU when there is one), cpu or cuda")
    return parser


def run(args: Namespace) -> None:
    """Compute, write to TensorBoard (and ``--out``), print a summary."""
    from regression_lab.landscape_plots import hessian_lines, run_dir_of, thinning_notes, write_files, write_tensorboard

    settings = Settings(**{k: tuple(v) if isinstance(v := args[k], list) else v for k in asdict(Settings())})
    settings.check()  # before any file is read or written
    root, ckpt = Path(args.logdir), None if args.ckpt_path is None else chosen_checkpoint(args.ckpt_path)
    with contextlib.suppress(UsageError):  # without any checkpoint: the lab's data alone
        ckpt = ckpt or newest_checkpoint(root)
    if args.out:  # unwritable destinations are refused before the work
        check_writable_dir(args.out, "--out")
    if not args.no_tensorboard:  # (SummaryWriter's thread would fail with a traceback)
        check_writable_dir(run_dir_of(ckpt) or root, "TensorBoard events")
    results = compute(settings, ckpt, args.data_csv)
    for note in [*results.notes, *thinning_notes(results)]:
        print(f"note: {note}", file=sys.stderr)
    lab, linear = results.landscapes["lab_1d"].summary(), results.landscapes["linear_2d"]
    print(f"lab 1D: minimum MSE {lab['min']:.4g} at w = {lab['argmin_w']:.4f} (y = w x + {settings.b0:g})")
    print("linear 2D: grid minimum at w = {:.4f}, b = {:.4f}; least squares w = {:.4f}, b = {:.4f}".format(
        *linear.argmin(), *results.least_squares))  # fmt: skip
    for name in ("random_2d", "random_1d", "interpolation"):
        if name in results.landscapes:
            s = results.landscapes[name].summary()
            print(f"{name}: min {s['min']:.4g}, at the centre {s['center']:.4g}, sharpness {s['sharpness']:.4g}")
    for line in hessian_lines(results):
        print(line)
    if args.out:
        print(f"wrote {len(write_files(results, Path(args.out)))} files to {args.out}")
    if not args.no_tensorboard:
        logdir = write_tensorboard(results, root, ckpt)
        print(f"TensorBoard: {logdir}  (tensorboard --logdir {logdir.parent})")
