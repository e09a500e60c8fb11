"""Hyperparameter sweep: the lab's epochs x hidden-size questions, answered over many seeds.

Every member of every setting trains in one ensemble fit (``regression-lab fit`` with an
:class:`~regression_lab.lit.ensemble.EnsembleRegressionModule`: the same DataModule, Trainer,
checkpoints and defaults): settings are hidden sizes x learning rates, members are seeds, and
the smaller epoch counts are snapshots of the longest fit, not trained again. The table gives
each setting's mean and 95% confidence interval over the seeds, its dead-unit and divergence
shares and how often it is the best one; ``trials.csv`` holds every member. Run it::

    regression-lab sweep            # hidden {4,5,8} x epochs {100,200,400} x lr {0.01} x seeds 0-999
    regression-lab sweep --hidden_sizes 4 8 --epochs 100 400 --seeds 0-99
    regression-lab sweep --config sweep.yaml --out lightning_logs/my_sweep
    python scripts/sweep.py --lrs 0.01 0.03

A sweep directory that already holds this grid's results reports them again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from regression_lab.commands.options import new_parser
from regression_lab.core.checkpoints import numbered_dirs, reserve_numbered_dir
from regression_lab.core.ensemble import MAX_MEMBERS, parse_seeds
from regression_lab.core.errors import TrainingFailed, UsageError
from regression_lab.core.safe_io import atomic_write

SETTINGS_FILE = "sweep.json"
#: The TensorBoard run of the ensemble fit (``ensemble_1`` ... for further chunks).
RUN_NAME = "ensemble"
#: The lab's question: the prediction for this x, against the line's value there.
PROBE_X, TRUTH = 10.0, 32.0


@dataclass
class SweepSettings:
    """The grid and how to run it; also the keys a ``--config`` YAML file may hold."""

    hidden_sizes: list[int] = field(default_factory=lambda: [4, 5, 8])
    epochs: list[int] = field(default_factory=lambda: [100, 200, 400])
    lrs: list[float] = field(default_factory=lambda: [0.01])
    seeds: list[int | str] = field(default_factory=lambda: ["0-999"])
    chunk_size: int = 100_000
    accelerator: str = "cpu"

    def validate(self) -> list[int]:
        """Raise :class:`UsageError` for an empty or out-of-range grid; return the seeds expanded."""
        for name, values, low in (("hidden_sizes", self.hidden_sizes, 1), ("epochs", self.epochs, 1)):
            if not values:
                raise UsageError(f"--{name} is empty: give at least one value")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or v < low:
                    raise UsageError(f"--{name} values must be integers >= {low}, got {v!r}")
        if not self.lrs:
            raise UsageError("--lrs is empty: give at least one value")
        for v in self.lrs:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise UsageError(f"--lrs values must be finite numbers > 0, got {v!r}")
        for name, values in (("hidden_sizes", self.hidden_sizes), ("epochs", self.epochs), ("lrs", self.lrs)):
            if len(set(values)) < len(values):
                raise UsageError(f"--{name} repeats a value: {values}")
        seeds = parse_seeds(self.seeds)
        if len(set(seeds)) < len(seeds):
            raise UsageError("--seeds repeats a seed")
        settings = len(self.hidden_sizes) * len(self.lrs)
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < settings:
            raise UsageError(f"--chunk_size must be an integer >= {settings} (one seed of every setting)")
        if self.chunk_size > MAX_MEMBERS:
            raise UsageError(f"--chunk_size must be <= {MAX_MEMBERS:,}")
        if self.accelerator not in ("cpu", "gpu", "auto"):
            raise UsageError(f"--accelerator must be cpu, gpu or auto, got {self.accelerator!r}")
        return seeds

    def grid(self, seeds: list[int]) -> dict[str, list]:
        """What defines the sweep's trials (a re-run reports a sweep again only if this matches)."""
        return {
            "hidden_sizes": self.hidden_sizes,
            "epochs": self.epochs,
            "lrs": [float(v) for v in self.lrs],
            "seeds": seed_ranges(seeds),
        }


def seed_ranges(seeds: list[int]) -> list[str]:
    """Seeds written compactly as ranges, in order: ``[0, 1, 2, 7]`` gives ``["0-2", "7"]``."""
    out: list[str] = []
    start = prev = seeds[0]
    for s in [*seeds[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(f"{start}-{prev}" if prev != start else str(start))
        if s is not None:
            start = prev = s
    return out


def trial_name(hidden: int, epochs: int, lr: float, seed: int | None = None) -> str:
    """A trial's name, e.g. ``h5_e400_lr0.01_s0`` (a setting's without the seed)."""
    return f"h{hidden}_e{epochs}_lr{lr:g}" + (f"_s{seed}" if seed is not None else "")


# --------------------------------------------------------------------------- training


def chunks(seeds: list[int], per_chunk: int) -> list[list[int]]:
    """The seeds split into runs of at most ``per_chunk``."""
    return [seeds[i : i + per_chunk] for i in range(0, len(seeds), per_chunk)]


def fit_args(settings: SweepSettings, seeds: list[int], run_dir: Path, quiet: bool) -> list[str]:
    """``regression-lab fit`` arguments of one ensemble fit of every setting over ``seeds``."""
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    seed_args = (
        ["--model.first_seed", str(seeds[0]), "--model.num_seeds", str(len(seeds))]
        if contiguous
        else ["--model.seeds", json.dumps(seeds)]
    )
    snapshots = sorted(set(settings.epochs))[:-1]
    return [
        "fit",
        "--model.hidden_size", json.dumps(settings.hidden_sizes),
        "--model.lr", json.dumps([float(v) for v in settings.lrs]),
        *seed_args,
        "--trainer.max_epochs", str(max(settings.epochs)),
        "--trainer.callbacks+=regression_lab.lit.ensemble_metrics.EnsembleMetrics",
        "--trainer.callbacks.snapshot_epochs", json.dumps(snapshots),
        "--trainer.accelerator", settings.accelerator,
        "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false" if quiet else "true",
        "--trainer.enable_model_summary", "false",
        "--trainer.logger.init_args.save_dir", str(run_dir.parent),
        "--trainer.logger.init_args.name", "",
        "--trainer.logger.init_args.version", run_dir.name,
    ]  # fmt: skip


def train_chunk(settings: SweepSettings, seeds: list[int], run_dir: Path, quiet: bool) -> list[dict[str, Any]]:
    """One ensemble fit; one row per member and epoch count (``trials.csv``'s rows)."""
    import torch

    from regression_lab.lit.cli import cli_main
    from regression_lab.lit.ensemble_metrics import EnsembleMetrics

    argv = sys.argv
    try:
        # fit's closing report is for a person at a terminal; the sweep prints its own table.
        # LightningCLI reads sys.argv when given no args, and warns when given both: the
        # sweep's own command line is not fit's.
        sys.argv = argv[:1]
        with contextlib.redirect_stdout(io.StringIO()):
            cli = cli_main(fit_args(settings, seeds, run_dir, quiet))
    except TrainingFailed:
        # Every member diverged: a result too (the worst one), not the end of the sweep.
        return [
            {"hidden_size": h, "epochs": e, "lr": float(lr), "seed": s, "diverged": 1}
            for h in settings.hidden_sizes for lr in settings.lrs for e in settings.epochs for s in seeds
        ]  # fmt: skip
    finally:
        sys.argv = argv
    (metrics,) = (c for c in cli.trainer.callbacks if isinstance(c, EnsembleMetrics))
    rows = []
    for setting, epochs, m in metrics.per_setting(cli.model):
        if epochs not in settings.epochs:
            continue
        columns = {k: v.tolist() for k, v in m.items() if isinstance(v, torch.Tensor)}
        for i, seed in enumerate(seeds):
            rows.append(
                {
                    "hidden_size": setting["hidden_size"],
                    "epochs": epochs,
                    "lr": setting["lr"],
                    "seed": seed,
                    **{k: columns[k][i] for k in ("prediction", "val_loss", "train_loss", "active_units")},
                    "diverged": int(columns["diverged"][i]),
                }
            )
    return rows


def run_sweep(settings: SweepSettings, seeds: list[int], out_dir: Path, quiet: bool) -> list[dict[str, Any]]:
    """Train every setting over every seed, in chunks of at most ``chunk_size`` members."""
    per_chunk = max(1, settings.chunk_size // (len(settings.hidden_sizes) * len(settings.lrs)))
    parts = chunks(seeds, per_chunk)
    rows: list[dict[str, Any]] = []
    for k, part in enumerate(parts):
        if len(parts) > 1:
            print(f"chunk {k + 1}/{len(parts)}: seeds {', '.join(seed_ranges(part))}", file=sys.stderr)
        rows += train_chunk(settings, part, out_dir / (RUN_NAME if k == 0 else f"{RUN_NAME}_{k}"), quiet)
    for r in rows:
        r["name"] = trial_name(r["hidden_size"], r["epochs"], r["lr"], r["seed"])
        r["abs_error"] = abs(r["prediction"] - TRUTH) if not r["diverged"] else math.inf
        if r["diverged"]:
            r.update(prediction=math.nan, val_loss=math.inf, train_loss=math.inf, active_units=0)
    return rows


# --------------------------------------------------------------------------- statistics

#: Student's t at 97.5% for 1..30 degrees of freedom; beyond, the normal 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def mean_ci(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the 95% confidence interval of the mean (Student's t)."""
    n = len(values)
    if n == 0:
        return math.inf, math.nan, math.inf, math.inf
    mean = statistics.fmean(values)
    if n == 1:
        return mean, 0.0, -math.inf, math.inf
    std = statistics.stdev(values)
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting, best first by mean validation loss over its healthy seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["hidden_size"], r["epochs"], r["lr"]), []).append(r)
    # How often each setting is the best one: per seed, the setting of lowest validation loss.
    by_seed: dict[int, tuple[float, tuple]] = {}
    for key, group in groups.items():
        for r in group:
            best = by_seed.get(r["seed"])
            if best is None or r["val_loss"] < best[0]:
                by_seed[r["seed"]] = (r["val_loss"], key)
    wins = statistics.Counter(key for _, key in by_seed.values()) if by_seed else {}
    rows = []
    for (h, e, lr), group in groups.items():
        healthy = [r for r in group if not r["diverged"]]
        vl = mean_ci([r["val_loss"] for r in healthy])
        er = mean_ci([r["abs_error"] for r in healthy])
        units = [int(r["active_units"]) for r in healthy]
        rows.append(
            {
                "hidden_size": h, "epochs": e, "lr": lr, "n_seeds": len(group),
                "val_loss_mean": vl[0], "val_loss_std": vl[1], "err10_mean": er[0], "err10_std": er[1],
                "val_loss_ci_low": vl[2], "val_loss_ci_high": vl[3], "err10_ci_low": er[2], "err10_ci_high": er[3],
                "val_loss_median": statistics.median([r["val_loss"] for r in group]),
                "err10_median": statistics.median([r["abs_error"] for r in group]),
                "train_loss_mean": statistics.fmean([r["train_loss"] for r in healthy]) if healthy else math.inf,
                "all_dead_share": sum(u == 0 for u in units) / len(group),
                "dead_unit_share": sum(u < h for u in units) / len(group),
                "diverged_share": (len(group) - len(healthy)) / len(group),
                "best_share": wins.get((h, e, lr), 0) / max(1, len(by_seed)),
                "_group": group,
            }
        )  # fmt: skip
    rows.sort(key=lambda r: (r["val_loss_mean"], r["err10_mean"]))
    return rows


CSV_COLUMNS = [
    "hidden_size", "epochs", "lr", "n_seeds", "val_loss_mean", "val_loss_std", "err10_mean", "err10_std",
    "val_loss_ci_low", "val_loss_ci_high", "err10_ci_low", "err10_ci_high", "val_loss_median", "err10_median",
    "train_loss_mean",
    "all_dead_share", "dead_unit_share", "diverged_share", "best_share",
]  # fmt: skip
TRIAL_COLUMNS = [
    "name", "hidden_size", "epochs", "lr", "seed", "prediction", "val_loss", "train_loss", "abs_error",
    "active_units", "diverged",
]  # fmt: skip


def format_table(rows: list[dict[str, Any]]) -> str:
    """The ranked table for the terminal."""
    head = (
        f"{'rank':>4}  {'hidden':>6}  {'epochs':>6}  {'lr':>7}  {'seeds':>5}  {'val loss, mean [95% CI]':<27}  "
        f"{'median':>8}  {'|pred(10) - 32|, mean [95% CI]':<31}  {'dead all/some':>13}  {'diverged':>8}  {'best':>5}"
    )
    lines = [head]
    for i, r in enumerate(rows, start=1):
        val = f"{r['val_loss_mean']:.3g} [{r['val_loss_ci_low']:.3g}, {r['val_loss_ci_high']:.3g}]"
        err = f"{r['err10_mean']:.4f} [{r['err10_ci_low']:.4f}, {r['err10_ci_high']:.4f}]"
        dead = f"{r['all_dead_share']:.1%}/{r['dead_unit_share']:.1%}"
        lines.append(
            f"{i:>4}  {r['hidden_size']:>6}  {r['epochs']:>6}  {r['lr']:>7g}  {r['n_seeds']:>5}  {val:<27}  "
            f"{r['val_loss_median']:>8.3g}  {err:<31}  {dead:>13}  {r['diverged_share']:>8.1%}  {r['best_share']:>5.0%}"
        )
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> str:
    """One line naming the best setting and whether it is clearly ahead of the runner-up.

    The comparison is paired by seed (both settings see the same seeds and data): the 95%
    confidence interval of the mean difference in validation loss over the seeds where both
    stayed finite. The winner is clearly ahead when that interval lies above zero.
    """
    b = rows[0]
    line = (
        f"best: hidden_size={b['hidden_size']}, epochs={b['epochs']}, lr={b['lr']:g} "
        f"(val loss {b['val_loss_mean']:.3g} [{b['val_loss_ci_low']:.3g}, {b['val_loss_ci_high']:.3g}], "
        f"|pred(10) - 32| {b['err10_mean']:.4f}, best for {b['best_share']:.0%} of {b['n_seeds']} seeds)"
    )
    if len(rows) < 2:
        return line
    r = rows[1]
    theirs = {t["seed"]: t["val_loss"] for t in r["_group"] if not t["diverged"]}
    diffs = [theirs[t["seed"]] - t["val_loss"] for t in b["_group"] if not t["diverged"] and t["seed"] in theirs]
    mean, _, low, high = mean_ci(diffs)
    runner = f"hidden_size={r['hidden_size']}, epochs={r['epochs']}, lr={r['lr']:g}"
    if len(diffs) > 1 and low > 0:
        return (
            f"{line}; clearly ahead of {runner} (paired difference {mean:.3g} [{low:.3g}, {high:.3g}] "
            f"over {len(diffs)} seeds)"
        )
    return (
        f"{line}; within the noise of {runner} (paired difference {mean:.3g} [{low:.3g}, {high:.3g}] "
        f"over {len(diffs)} seeds): more seeds would be needed to tell them apart"
    )


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_trials(path: Path) -> list[dict[str, Any]]:
    """The rows of a finished sweep's ``trials.csv``, typed as :func:`run_sweep` returns them."""
    kinds = {"hidden_size": int, "epochs": int, "seed": int, "active_units": int, "diverged": int}
    with path.open(newline="") as fh:
        return [{k: kinds.get(k, float)(v) if k != "name" else v for k, v in row.items()} for row in csv.DictReader(fh)]


def error_figure(rows: list[dict[str, Any]]):
    """|pred(10) - 32| against epochs, one line per hidden size (and lr), with 95% CI bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    ax = fig.add_subplot()
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault((r["hidden_size"], r["lr"]), []).append(r)
    many_lrs = len({r["lr"] for r in rows}) > 1
    for (h, lr), group in sorted(lines.items()):
        group.sort(key=lambda r: r["epochs"])
        label = f"hidden {h}" + (f", lr {lr:g}" if many_lrs else "")
        means = [r["err10_mean"] for r in group]
        bars = [
            [max(0.0, m - r["err10_ci_low"]) for m, r in zip(means, group, strict=True)],
            [max(0.0, r["err10_ci_high"] - m) for m, r in zip(means, group, strict=True)],
        ]
        bars = [[b if math.isfinite(b) else 0.0 for b in side] for side in bars]
        ax.errorbar([r["epochs"] for r in group], means, yerr=bars, marker="o", capsize=3, label=label)
    ax.set(xlabel="epochs", ylabel="|prediction(10) - 32|, mean and 95% CI over seeds", title="Error at x = 10")
    if all(0 < r["err10_mean"] < math.inf for r in rows):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_summary(rows: list[dict[str, Any]], results: list[dict[str, Any]], out_dir: Path) -> None:
    """results.csv, trials.csv, the figure as PNG and, in TensorBoard, in the ensemble's run."""
    from torch.utils.tensorboard import SummaryWriter

    write_csv(out_dir / "results.csv", rows, CSV_COLUMNS)
    trial_rows = sorted(results, key=lambda r: (r["hidden_size"], r["epochs"], r["lr"], r["seed"]))
    write_csv(out_dir / "trials.csv", trial_rows, TRIAL_COLUMNS)
    fig = error_figure(rows)
    with atomic_write(out_dir / "error_vs_epochs.png", "wb") as fh:
        fig.savefig(fh, format="png")
    with SummaryWriter(log_dir=str(out_dir / RUN_NAME)) as writer:
        writer.add_figure("sweep/error_vs_epochs", fig)
        table = (
            "| rank | hidden | epochs | lr | seeds | val loss [95% CI] | abs error at 10 [95% CI] "
            "| all dead | diverged | best |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n"
        )
        table += "\n".join(
            f"| {i} | {r['hidden_size']} | {r['epochs']} | {r['lr']:g} | {r['n_seeds']} | "
            f"{r['val_loss_mean']:.3g} [{r['val_loss_ci_low']:.3g}, {r['val_loss_ci_high']:.3g}] | "
            f"{r['err10_mean']:.4f} [{r['err10_ci_low']:.4f}, {r['err10_ci_high']:.4f}] | "
            f"{r['all_dead_share']:.1%} | {r['diverged_share']:.1%} | {r['best_share']:.0%} |"
            for i, r in enumerate(rows, start=1)
        )
        writer.add_text("sweep/results", table + "\n\n" + verdict(rows))


def resolve_out(out: str | None, grid: dict[str, list], root: Path = Path("lightning_logs")) -> tuple[Path, bool]:
    """The sweep directory, and whether it already holds this grid's results.

    Without ``--out``, the newest ``sweep_N`` is reported again if it holds the same grid;
    otherwise a new ``sweep_N``. An ``--out`` holding another grid is refused.
    """
    if out is not None:
        path = Path(out)
        saved = path / SETTINGS_FILE
        if saved.is_file():
            previous = json.loads(saved.read_text()).get("grid")
            if previous != grid:
                raise UsageError(f"{path} holds a sweep of another grid ({previous}): choose another --out")
            return path, (path / "trials.csv").is_file()
        return path, False
    sweeps = numbered_dirs(root, "sweep_")
    if sweeps and (sweeps[-1] / SETTINGS_FILE).is_file():
        latest = sweeps[-1]
        if json.loads((latest / SETTINGS_FILE).read_text()).get("grid") == grid:
            return latest, (latest / "trials.csv").is_file()
    return reserve_numbered_dir(root, "sweep_"), False


# --------------------------------------------------------------------------- command line


def build_parser() -> ArgumentParser:
    """The ``sweep`` command's options (``--config FILE`` takes the same keys in YAML)."""
    d = SweepSettings()
    parser = new_parser("sweep", "train a grid of settings over many seeds at once and rank them")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of the options below")
    parser.add_argument("--hidden_sizes", type=int, nargs="+", default=d.hidden_sizes, help="hidden sizes")
    parser.add_argument(
        "--epochs", type=int, nargs="+", default=d.epochs, help="epoch counts (snapshots of one fit to the largest)"
    )
    parser.add_argument("--lrs", type=float, nargs="+", default=d.lrs, help="learning rates")
    parser.add_argument(
        "--seeds", type=int | str, nargs="+", default=d.seeds,
        help="seeds, as integers and inclusive ranges (0-999, or 0 1 2): every setting trains once per seed",
    )  # fmt: skip
    parser.add_argument(
        "--chunk_size", type=int, default=d.chunk_size,
        help="most members (settings x seeds) trained in one fit; more seeds train in several fits",
    )  # fmt: skip
    parser.add_argument(
        "--accelerator", type=Literal["cpu", "gpu", "auto"], default=d.accelerator, help="where the ensemble trains"
    )
    parser.add_argument(
        "--out",
        type=str | None,
        help="sweep directory (default: a new lightning_logs/sweep_N)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: Namespace) -> int:
    """Run ``sweep``: resolve the grid, train the ensemble, print and write the ranked table."""
    settings = SweepSettings(**{f.name: args[f.name] for f in fields(SweepSettings)})
    seeds = settings.validate()
    if settings.accelerator == "auto":
        import torch

        settings.accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    grid = settings.grid(seeds)
    out_dir, finished = resolve_out(args.out, grid)
    n_settings = len(settings.hidden_sizes) * len(settings.epochs) * len(settings.lrs)
    if finished:
        print(f"sweep: {out_dir} already holds this grid's results: reporting them again", file=sys.stderr)
        results = read_trials(out_dir / "trials.csv")
    else:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(out_dir / SETTINGS_FILE, "w") as fh:
                json.dump({"grid": grid, "settings": {**asdict(settings), "seeds": grid["seeds"]}}, fh, indent=2)
        except OSError as err:
            raise UsageError(f"cannot write the sweep directory {out_dir}: {err.strerror or err}") from None
        snapshots = sorted(set(settings.epochs))[:-1]
        print(
            f"sweep: {n_settings * len(seeds):,} trials ({n_settings} settings x {len(seeds):,} seeds) in {out_dir}: "
            f"one ensemble fit to {max(settings.epochs)} epochs"
            + (f", snapshots at {', '.join(map(str, snapshots))}" if snapshots else ""),
            file=sys.stderr,
        )
        results = run_sweep(settings, seeds, out_dir, quiet=args.quiet)
    rows = summarize(results)
    if not finished:
        write_summary(rows, results, out_dir)
    print(format_table(rows))
    print(verdict(rows))
    print(f"results: {out_dir / 'results.csv'}  (tensorboard --logdir {out_dir})")
    return 0
