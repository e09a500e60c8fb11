"""The ``landscape`` command: loss landscapes of a checkpoint into TensorBoard (and --out files).

Computes with :mod:`regression_lab.core.landscape`, draws and exports with
:mod:`regression_lab.core.landscape_plots`; torch only, no Lightning. Run it::

    regression-lab landscape                                  # newest checkpoint under ./lightning_logs
    regression-lab landscape --ckpt_path run.ckpt --resolution 201 --out landscape/
    regression-lab landscape --config landscape.yaml          # the same keys in YAML
    python scripts/loss_landscape.py --include_bias --seed 3
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from regression_lab.commands.options import new_parser
from regression_lab.core.checkpoints import newest_checkpoint, reserve_numbered_dir
from regression_lab.core.errors import UsageError
from regression_lab.core.landscape import Settings, compute
from regression_lab.core.landscape_plots import thinning_notes, write_files, write_tensorboard
from regression_lab.core.safe_io import check_writable_dir

DESCRIPTION = "loss landscapes: the lab's 1D sweep, the (w, b) surface, the trained network"


def run_dir_of(ckpt_path: Path | None) -> Path | None:
    """The training run a checkpoint belongs to (``version_N/checkpoints/x.ckpt``), else None."""
    if ckpt_path is None:
        return None
    ckpt = ckpt_path.resolve()
    if ckpt.parent.name == "checkpoints" and ckpt.parent.parent.name.startswith("version_"):
        return ckpt.parent.parent
    return None


def target_logdir(ckpt_path: Path | None, root: Path) -> Path:
    """The checkpoint's own run directory, else a new version_N under ``root``."""
    run = run_dir_of(ckpt_path)
    if run is not None:
        return run
    try:
        return reserve_numbered_dir(root, "version_")
    except OSError as err:
        raise UsageError(f"cannot write TensorBoard events under {root}: {err.strerror or err}") from None


def build_parser() -> ArgumentParser:
    """The ``landscape`` command's options (``--config FILE`` takes the same keys in YAML)."""
    d = Settings()
    parser = new_parser("landscape", DESCRIPTION)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of the options below")
    parser.add_argument(
        "--ckpt_path",
        type=str | None,
        help="checkpoint of the trained network (default: the newest under ./lightning_logs/)",
    )
    parser.add_argument(
        "--resolution", type=int, default=d.resolution, help="points per axis of each 2D grid and of the random 1D line"
    )
    parser.add_argument("--out", type=str | None, help="also write CSV/NPZ results and PNG figures to this directory")
    parser.add_argument(
        "--logdir", default="lightning_logs", help="where a new run directory goes when the checkpoint is not in one"
    )

    def add_range(flag: str, help_text: str, default: tuple[float, float] | None = None) -> None:
        parser.add_argument(
            flag,
            type=float,
            nargs=2,
            metavar=("MIN", "MAX"),
            default=list(default) if default else None,
            help=help_text,
        )

    add_range("--w_range", "the lab's sweep over w", d.w_range)
    parser.add_argument("--w_points", type=int, default=d.w_points, help="points of the lab's sweep")
    parser.add_argument("--b0", type=float, default=d.b0, help="the fixed bias of the lab's sweep y = w x + b0")
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
    return parser


def run(args: Namespace) -> int:
    """Run ``landscape``: compute, export to TensorBoard (and --out), print a summary."""
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
    # Unwritable destinations are refused before the work, not after it.
    if args.out:
        check_writable_dir(args.out, "--out")
    if not args.no_tensorboard:
        check_writable_dir(run_dir_of(ckpt_path) or root, "TensorBoard events")
    results = compute(settings, ckpt_path)
    for note in [*results.notes, *thinning_notes(results)]:
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
