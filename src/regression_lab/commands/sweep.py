"""Hyperparameter sweep: the lab's epochs x hidden-size questions, answered over several seeds.

Each trial is an ordinary ``regression-lab fit`` (same LightningModule, DataModule, Trainer and
defaults), logged as its own TensorBoard run with its hyperparameters and final metrics in the
HParams tab. Trials run in parallel worker processes; a finished trial leaves ``result.json``
and is skipped when the sweep runs again, and an interrupted one resumes from its checkpoint.
Run it::

    regression-lab sweep            # hidden {4,5,8} x epochs {100,200,400} x lr {0.01} x seeds {0,1,2}
    regression-lab sweep --hidden_sizes 4 8 --epochs 100 400 --seeds 0 1 --workers 2
    regression-lab sweep --config sweep.yaml --out lightning_logs/my_sweep
    python scripts/sweep.py --lrs 0.01 0.03

The parent process imports no Lightning; each worker does, once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from regression_lab.commands.options import new_parser
from regression_lab.core.checkpoints import numbered_dirs, reserve_numbered_dir
from regression_lab.core.errors import TrainingFailed, UsageError
from regression_lab.core.safe_io import atomic_write

RESULT_FILE = "result.json"
SETTINGS_FILE = "sweep.json"


@dataclass
class SweepSettings:
    """The grid and how to run it; also the keys a ``--config`` YAML file may hold."""

    hidden_sizes: list[int] = field(default_factory=lambda: [4, 5, 8])
    epochs: list[int] = field(default_factory=lambda: [100, 200, 400])
    lrs: list[float] = field(default_factory=lambda: [0.01])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    workers: int | None = None
    accelerator: str = "cpu"

    def validate(self) -> None:
        """Raise :class:`UsageError` for an empty or out-of-range grid."""
        for name, values, low, kind in (
            ("hidden_sizes", self.hidden_sizes, 1, int),
            ("epochs", self.epochs, 1, int),
            ("seeds", self.seeds, 0, int),
        ):
            if not values:
                raise UsageError(f"--{name} is empty: give at least one value")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, kind) or v < low:
                    raise UsageError(f"--{name} values must be integers >= {low}, got {v!r}")
        if not self.lrs:
            raise UsageError("--lrs is empty: give at least one value")
        for v in self.lrs:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise UsageError(f"--lrs values must be finite numbers > 0, got {v!r}")
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise UsageError(f"--workers must be an integer >= 1, got {self.workers!r}")
        if self.accelerator not in ("cpu", "gpu", "auto"):
            raise UsageError(f"--accelerator must be cpu, gpu or auto, got {self.accelerator!r}")

    def grid(self) -> dict[str, list]:
        """What defines the sweep's trials (a re-run continues a sweep only if this matches)."""
        return {"hidden_sizes": self.hidden_sizes, "epochs": self.epochs, "lrs": self.lrs, "seeds": self.seeds}


def trial_name(hidden: int, epochs: int, lr: float, seed: int) -> str:
    """The trial's run directory name, e.g. ``h5_e400_lr0.01_s0``."""
    return f"h{hidden}_e{epochs}_lr{lr:g}_s{seed}"


def trials(settings: SweepSettings) -> list[dict[str, Any]]:
    """Every (hidden_size, epochs, lr, seed) of the grid, in a stable order."""
    return [
        {"hidden_size": h, "epochs": e, "lr": float(lr), "seed": s, "name": trial_name(h, e, lr, s)}
        for h, e, lr, s in itertools.product(settings.hidden_sizes, settings.epochs, settings.lrs, settings.seeds)
    ]


# --------------------------------------------------------------------------- one trial (in a worker)


def _init_worker(threads: int) -> None:
    import logging
    import warnings

    import lightning  # noqa: F401  (it sets its loggers' levels on import: quiet them after)
    import torch

    # Several workers share the cores: a fair share of intra-op threads each avoids
    # oversubscription.
    torch.set_num_threads(threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one trial with ``fit``'s own CLI and defaults; return (and save) its final metrics."""
    run_dir = Path(spec["dir"])
    done = run_dir / RESULT_FILE
    if done.is_file():
        return {**json.loads(done.read_text()), "skipped": True}
    from regression_lab.lit.cli import cli_main

    args = [
        "fit",
        "--model.hidden_size", str(spec["hidden_size"]),
        "--model.lr", repr(spec["lr"]),
        "--trainer.max_epochs", str(spec["epochs"]),
        "--seed_everything", str(spec["seed"]),
        "--trainer.accelerator", spec.get("accelerator", "cpu"),
        "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.logger.init_args.save_dir", str(run_dir.parent),
        "--trainer.logger.init_args.name", "",
        "--trainer.logger.init_args.version", run_dir.name,
    ]  # fmt: skip
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        args += ["--ckpt_path", str(last)]  # an interrupted trial goes on where it stopped
    result = {k: spec[k] for k in ("name", "hidden_size", "epochs", "lr", "seed")}
    try:
        # fit's closing report is for a person at a terminal; the sweep prints its own table.
        with contextlib.redirect_stdout(io.StringIO()):
            cli = cli_main(args)
        result.update(cli.final_metrics)
    except TrainingFailed as err:
        # A diverged trial is a result too (the worst one), not the end of the sweep.
        result.update(train_loss=math.inf, val_loss=math.inf, prediction=math.nan, abs_error=math.inf, failed=str(err))
    with atomic_write(done, "w") as fh:
        json.dump(result, fh, indent=2)
    return result


# --------------------------------------------------------------------------- the whole sweep


def resolve_out(out: str | None, settings: SweepSettings, root: Path = Path("lightning_logs")) -> tuple[Path, bool]:
    """The sweep directory, and whether it continues an earlier run of the same grid.

    Without ``--out``, the newest ``sweep_N`` continues if it holds the same grid (its finished
    trials are skipped, so a complete one just reports again); otherwise a new ``sweep_N``.
    """
    grid = settings.grid()
    if out is not None:
        path = Path(out)
        saved = path / SETTINGS_FILE
        if saved.is_file():
            previous = json.loads(saved.read_text()).get("grid")
            if previous != grid:
                raise UsageError(f"{path} holds a sweep of another grid ({previous}): choose another --out")
            return path, True
        return path, False
    sweeps = numbered_dirs(root, "sweep_")
    if sweeps and (sweeps[-1] / SETTINGS_FILE).is_file():
        latest = sweeps[-1]
        if json.loads((latest / SETTINGS_FILE).read_text()).get("grid") == grid:
            return latest, True
    return reserve_numbered_dir(root, "sweep_"), False


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting (mean and std over seeds), best first by mean validation loss."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["hidden_size"], r["epochs"], r["lr"]), []).append(r)

    def mean_std(values: list[float]) -> tuple[float, float]:
        # The sample standard deviation; 0 for a single seed.
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    rows = []
    for (h, e, lr), group in groups.items():
        vl_mean, vl_std = mean_std([r["val_loss"] for r in group])
        er_mean, er_std = mean_std([r["abs_error"] for r in group])
        tl_mean, _ = mean_std([r["train_loss"] for r in group])
        rows.append(
            {
                "hidden_size": h,
                "epochs": e,
                "lr": lr,
                "n_seeds": len(group),
                "val_loss_mean": vl_mean,
                "val_loss_std": vl_std,
                "err10_mean": er_mean,
                "err10_std": er_std,
                "train_loss_mean": tl_mean,
            }
        )
    rows.sort(key=lambda r: (r["val_loss_mean"], r["err10_mean"]))
    return rows


CSV_COLUMNS = ["hidden_size", "epochs", "lr", "n_seeds", "val_loss_mean", "val_loss_std", "err10_mean", "err10_std"]


def format_table(rows: list[dict[str, Any]]) -> str:
    """The ranked table for the terminal."""
    head = f"{'rank':>4}  {'hidden':>6}  {'epochs':>6}  {'lr':>8}  {'seeds':>5}  {'val loss, mean ± std':<22}"
    lines = [head + "  |pred(10) - 32|, mean ± std"]
    for i, r in enumerate(rows, start=1):
        val = f"{r['val_loss_mean']:.3g} ± {r['val_loss_std']:.2g}"
        err = f"{r['err10_mean']:.4f} ± {r['err10_std']:.4f}"
        lines.append(
            f"{i:>4}  {r['hidden_size']:>6}  {r['epochs']:>6}  {r['lr']:>8g}  {r['n_seeds']:>5}  {val:<22}  {err}"
        )
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> str:
    """One line naming the best setting."""
    b = rows[0]
    return (
        f"best: hidden_size={b['hidden_size']}, epochs={b['epochs']}, lr={b['lr']:g} "
        f"(val loss {b['val_loss_mean']:.3g} ± {b['val_loss_std']:.2g}, "
        f"|pred(10) - 32| {b['err10_mean']:.4f} ± {b['err10_std']:.4f} over {b['n_seeds']} seeds)"
    )


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def error_figure(rows: list[dict[str, Any]]):
    """|pred(10) - 32| against epochs, one line per hidden size (and lr), with std error bars."""
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
        ax.errorbar(
            [r["epochs"] for r in group], [r["err10_mean"] for r in group], yerr=[r["err10_std"] for r in group],
            marker="o", capsize=3, label=label,
        )  # fmt: skip
    ax.set(xlabel="epochs", ylabel="|prediction(10) - 32|, mean ± std over seeds", title="Error at x = 10")
    if all(r["err10_mean"] > 0 for r in rows):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_sweep(settings: SweepSettings, out_dir: Path, show_progress: bool = True) -> list[dict[str, Any]]:
    """Run every trial not yet finished under ``out_dir``; return all trials' results."""
    import multiprocessing as mp

    from tqdm.auto import tqdm

    todo = trials(settings)
    for t in todo:
        t["dir"] = str(out_dir / t["name"])
        t["accelerator"] = settings.accelerator
    finished = [t for t in todo if (Path(t["dir"]) / RESULT_FILE).is_file()]
    pending = [t for t in todo if t not in finished]
    results = [{**json.loads((Path(t["dir"]) / RESULT_FILE).read_text()), "skipped": True} for t in finished]
    if finished:
        print(f"{len(finished)} of {len(todo)} trials already finished: skipped", file=sys.stderr)
    cores = os.cpu_count() or 1
    workers = settings.workers or (1 if settings.accelerator == "gpu" else cores)
    workers = max(1, min(workers, len(pending))) if pending else 0
    bar = tqdm(
        total=len(todo), initial=len(finished), desc="Trials", unit="trial", disable=not show_progress, file=sys.stderr
    )
    try:
        if workers == 1:
            _init_worker(max(1, cores))
            for spec in pending:
                results.append(run_trial(spec))
                bar.update()
        elif workers > 1:
            # spawn: each worker a clean interpreter (no forked Lightning or thread state).
            ctx = mp.get_context("spawn")
            threads = max(1, cores // workers)
            with ctx.Pool(workers, initializer=_init_worker, initargs=(threads,)) as pool:
                for result in pool.imap_unordered(run_trial, pending):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    return results


def write_summary(rows: list[dict[str, Any]], results: list[dict[str, Any]], out_dir: Path) -> None:
    """results.csv, trials.csv, the figure as PNG and, in TensorBoard, under ``out_dir/summary``."""
    from torch.utils.tensorboard import SummaryWriter

    write_csv(out_dir / "results.csv", rows, CSV_COLUMNS)
    trial_rows = sorted(results, key=lambda r: (r["hidden_size"], r["epochs"], r["lr"], r["seed"]))
    write_csv(
        out_dir / "trials.csv",
        trial_rows,
        ["name", "hidden_size", "epochs", "lr", "seed", "train_loss", "val_loss", "prediction", "abs_error"],
    )
    fig = error_figure(rows)
    with atomic_write(out_dir / "error_vs_epochs.png", "wb") as fh:
        fig.savefig(fh, format="png")
    with SummaryWriter(log_dir=str(out_dir / "summary")) as writer:
        writer.add_figure("sweep/error_vs_epochs", fig)
        table = "| rank | hidden | epochs | lr | seeds | val loss | abs error at 10 |\n|---|---|---|---|---|---|---|\n"
        table += "\n".join(
            f"| {i} | {r['hidden_size']} | {r['epochs']} | {r['lr']:g} | {r['n_seeds']} | "
            f"{r['val_loss_mean']:.3g} ± {r['val_loss_std']:.2g} | {r['err10_mean']:.4f} ± {r['err10_std']:.4f} |"
            for i, r in enumerate(rows, start=1)
        )
        writer.add_text("sweep/results", table + "\n\n" + verdict(rows))


# --------------------------------------------------------------------------- command line


def build_parser() -> ArgumentParser:
    """The ``sweep`` command's options (``--config FILE`` takes the same keys in YAML)."""
    d = SweepSettings()
    parser = new_parser("sweep", "train a grid of settings over several seeds and rank them")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of the options below")
    parser.add_argument("--hidden_sizes", type=int, nargs="+", default=d.hidden_sizes, help="hidden sizes")
    parser.add_argument("--epochs", type=int, nargs="+", default=d.epochs, help="epoch counts")
    parser.add_argument("--lrs", type=float, nargs="+", default=d.lrs, help="learning rates")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=d.seeds, help="seeds: each setting is trained once per seed"
    )
    parser.add_argument("--workers", type=int | None, help="parallel trials (default: the CPU cores; 1 on a GPU)")
    parser.add_argument(
        "--accelerator", type=Literal["cpu", "gpu", "auto"], default=d.accelerator, help="where trials train"
    )
    parser.add_argument(
        "--out", type=str | None, help="sweep directory (default: lightning_logs/sweep_N, continuing one)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: Namespace) -> int:
    """Run ``sweep``: resolve the grid, run the trials, print and write the ranked table."""
    settings = SweepSettings(**{f.name: args[f.name] for f in fields(SweepSettings)})
    out = args.out
    settings.validate()
    if settings.accelerator == "auto":
        import torch

        settings.accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    out_dir, continuing = resolve_out(out, settings)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(out_dir / SETTINGS_FILE, "w") as fh:
            json.dump({"grid": settings.grid(), "settings": asdict(settings)}, fh, indent=2)
    except OSError as err:
        raise UsageError(f"cannot write the sweep directory {out_dir}: {err.strerror or err}") from None
    n = len(trials(settings))
    print(f"sweep: {n} trials in {out_dir}" + (" (continuing)" if continuing else ""), file=sys.stderr)
    results = run_sweep(settings, out_dir, show_progress=not args.quiet)
    rows = summarize(results)
    write_summary(rows, results, out_dir)
    print(format_table(rows))
    print(verdict(rows))
    print(f"results: {out_dir / 'results.csv'}  (tensorboard --logdir {out_dir})")
    return 0
