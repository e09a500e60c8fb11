"""Hyperparameter sweep as an Optuna study: the lab's epochs x hidden-size questions over many seeds.

A trial is one setting (hidden size and learning rate; with ``--sampler tpe`` also the epoch
count); its seeds train together as one ensemble ``fit`` (see
:mod:`regression_lab.lit.ensemble`), and a grid's smaller epoch counts are snapshots of that
fit. The study lives in a storage that any number of workers share: by default a SQLite file
in the sweep directory; ``--storage`` takes any Optuna storage (PostgreSQL for several
machines). Run it::

    regression-lab sweep                       # hidden {4,5,8} x epochs {100,200,400} x lr {0.01} x seeds 0-999
    regression-lab sweep --hidden_sizes 4 8 --epochs 100 400 --seeds 0-99 --workers 2
    regression-lab sweep --sampler tpe --n_trials 30 --lr_range 1e-3 0.3 --log --pruner median
    regression-lab sweep --storage postgresql://user@db/optuna --study_name lab     # on every machine
    regression-lab sweep --storage postgresql://user@db/optuna --study_name lab --report
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from regression_lab.commands.options import new_parser
from regression_lab.core.checkpoints import numbered_dirs, reserve_numbered_dir
from regression_lab.core.ensemble import parse_seeds
from regression_lab.core.errors import UsageError, check_float, check_int
from regression_lab.core.safe_io import atomic_write, lock_dir

SETTINGS_FILE = "sweep.json"
#: A sweep keeps every member's numbers in its study: this many seeds at most.
MAX_SWEEP_SEEDS = 100_000


def _distinct(name: str, values: list) -> None:
    if not values:
        raise UsageError(f"--{name} is empty: give at least one value")
    if len(set(values)) < len(values):
        raise UsageError(f"--{name} repeats a value: {values}")


def _range(name: str, pair: list, positive: bool = False) -> None:
    if len(pair) != 2 or not pair[0] <= pair[1]:
        raise UsageError(f"--{name} takes LOW HIGH with LOW <= HIGH, got {pair}")
    if positive and not pair[0] > 0:
        raise UsageError(f"--{name} must be > 0, got {pair}")


def make_spec(args: Namespace) -> Any:
    """Check every option and return the study's :class:`StudySpec` (storage and out still unset)."""
    from regression_lab.commands.sweep_study import StudySpec

    for name, low in (("hidden_sizes", 1), ("epochs", 1)):
        _distinct(name, args[name])
        for v in args[name]:
            check_int(f"--{name} values", v, low)
    _distinct("lrs", args.lrs)
    for v in args.lrs:
        check_float("--lrs values", v, positive=True)
    _range("hidden_range", args.hidden_range)
    check_int("--hidden_range values", args.hidden_range[0], 1)
    _range("lr_range", args.lr_range, positive=True)
    for v in args.lr_range:
        check_float("--lr_range values", v, positive=True)
    _range("epochs_range", args.epochs_range)
    check_int("--epochs_range values", args.epochs_range[0], 1)
    check_int("--n_trials", args.n_trials, 1)
    check_int("--workers", args.workers, 1)
    check_int("--heartbeat_interval", args.heartbeat_interval, 1)
    if args.seed is not None:
        check_int("--seed", args.seed, 0)
    seeds = parse_seeds(args.seeds)
    if len(set(seeds)) < len(seeds):
        raise UsageError("--seeds repeats a seed")
    if len(seeds) > MAX_SWEEP_SEEDS:
        raise UsageError(
            f"--seeds: a sweep keeps every member's numbers in its study, at most {MAX_SWEEP_SEEDS:,} seeds"
        )
    from regression_lab.commands.sweep_report import seed_ranges

    return StudySpec(
        storage="", study_name=args.study_name, out_dir="", sampler=args.sampler,
        hidden_sizes=list(args.hidden_sizes), epochs=sorted(args.epochs), lrs=[float(v) for v in args.lrs],
        hidden_range=list(args.hidden_range), lr_range=[float(v) for v in args.lr_range], log=args.log,
        epochs_range=list(args.epochs_range), n_trials=args.n_trials, seeds=seeds, seed_ranges=seed_ranges(seeds),
        pruner=args.pruner, seed=args.seed, accelerator=args.accelerator,
        heartbeat_interval=args.heartbeat_interval, quiet=args.quiet or args.workers > 1,
    )  # fmt: skip


def _definition_in(sweep_dir: Path) -> object:
    """The search a sweep directory holds (from its settings file), or None if unreadable."""
    try:
        with (sweep_dir / SETTINGS_FILE).open() as fh:
            settings = json.load(fh)
    except (OSError, ValueError):
        return None
    return settings.get("definition") if isinstance(settings, dict) else None


def resolve_out(out: str | None, spec: Any, root: Path = Path("lightning_logs")) -> Path:
    """The sweep directory: ``--out``; with ``--storage``, ``lightning_logs/sweep_<study_name>``;
    otherwise the newest ``sweep_N`` of the same search (its study continues) or a new one.

    The last choice is made under a lock on ``root``, and a new directory gets its search
    written at once, so two identical sweeps started together join one study (each setting is
    trained once) instead of making two directories that both train everything.
    """
    if out is not None:
        return Path(out)
    if spec.storage:
        return root / f"sweep_{spec.study_name}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = lock_dir(root, wait=True)  # held for milliseconds, never over training
    except OSError as err:
        raise UsageError(f"cannot write the sweep directory under {root}: {err.strerror or err}") from None
    try:
        sweeps = numbered_dirs(root, "sweep_")
        if sweeps and _definition_in(sweeps[-1]) == spec.definition():
            return sweeps[-1]
        new = reserve_numbered_dir(root, "sweep_")
        with atomic_write(new / SETTINGS_FILE, "w") as fh:
            json.dump({"definition": spec.definition()}, fh, indent=2)  # completed once the study is open
        return new
    finally:
        os.close(lock)


def run_workers(spec: Any, workers: int) -> None:
    """``workers`` spawned processes, each joining the study; wait for all of them."""
    import multiprocessing as mp
    from dataclasses import asdict

    from regression_lab.commands.sweep_study import cores, worker_main

    ctx = mp.get_context("spawn")  # a clean interpreter each, no forked Lightning or thread state
    threads = max(1, cores() // workers)
    procs = [ctx.Process(target=worker_main, args=(asdict(spec), threads)) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker fails its running trial and exits
        for p in procs:
            p.join()
        raise
    codes = [p.exitcode for p in procs]
    if any(c == 2 for c in codes):
        raise UsageError("a worker stopped on bad input (its error is above)")
    lost = [i for i, c in enumerate(codes) if c not in (0, None)]
    if lost:
        print(
            f"warning: worker(s) {', '.join(map(str, lost))} ended with status "
            f"{', '.join(str(codes[i]) for i in lost)}; a trial left running is retried by the other workers "
            "(with heartbeats) or by the next run of this command",
            file=sys.stderr,
        )


def report(study: Any, out_dir: Path, write: bool = True) -> None:
    """Print the ranked table and verdict of a study; write its files and TensorBoard summary."""
    from regression_lab.commands.sweep_report import format_table, summarize, verdict, write_outputs
    from regression_lab.commands.sweep_study import members_of

    members, unfinished = members_of(study)
    if not members and not unfinished:
        raise UsageError("the study has no finished trial yet")
    rows = summarize(members, unfinished)
    if write:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(out_dir / "summary")) as writer:
            write_outputs(rows, members, out_dir, writer)
            _optuna_outputs(study, out_dir, writer)
    print(format_table(rows))
    print(verdict(rows))
    if write:
        print(f"results: {out_dir / 'results.csv'}  (tensorboard --logdir {out_dir})")


def _optuna_outputs(study: Any, out_dir: Path, writer: Any) -> None:
    """trials.csv (Optuna's dataframe) and Optuna's plots as PNGs and TensorBoard figures."""
    import optuna
    from optuna.trial import TrialState

    frame = study.trials_dataframe()
    # Every member's numbers are in the study; trials.csv keeps one row per trial.
    frame = frame.drop(columns=[c for c in frame.columns if c == "user_attrs_members"])
    with atomic_write(out_dir / "trials.csv", "w", newline="") as fh:
        frame.to_csv(fh, index=False)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    plots = {"optimization_history": optuna.visualization.matplotlib.plot_optimization_history}
    if len(complete) > 1:
        plots["slice"] = optuna.visualization.matplotlib.plot_slice
        varied = [k for k in complete[0].params if len({t.params.get(k) for t in complete}) > 1]
        if len(varied) > 1:
            plots["param_importances"] = optuna.visualization.matplotlib.plot_param_importances
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, plot in plots.items():
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as err:  # too few trials for this plot
                print(f"note: no {name} plot ({err})", file=sys.stderr)
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            fig = first.get_figure()
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            with atomic_write(out_dir / f"optuna_{name}.png", "wb") as fh:
                fig.savefig(fh, format="png")
            writer.add_figure(f"optuna/{name}", fig)


# --------------------------------------------------------------------------- command line


def build_parser() -> ArgumentParser:
    """The ``sweep`` command's options (``--config FILE`` takes the same keys in YAML)."""
    parser = new_parser("sweep", "an Optuna study of settings, each trained over many seeds at once, ranked")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of the options below")
    parser.add_argument("--sampler", type=Literal["grid", "tpe"], default="grid", help="grid, or TPE over ranges")
    parser.add_argument("--hidden_sizes", type=int, nargs="+", default=[4, 5, 8], help="grid: hidden sizes")
    parser.add_argument(
        "--epochs", type=int, nargs="+", default=[100, 200, 400], help="grid: epoch counts (snapshots of one fit)"
    )
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01], help="grid: learning rates")
    parser.add_argument("--n_trials", type=int, default=20, help="tpe: trials in the study")
    parser.add_argument("--hidden_range", type=int, nargs=2, default=[1, 16], help="tpe: hidden sizes LOW HIGH")
    parser.add_argument("--lr_range", type=float, nargs=2, default=[1e-3, 0.3], help="tpe: learning rates LOW HIGH")
    parser.add_argument("--log", action="store_true", help="tpe: search the learning rate on a log scale")
    parser.add_argument("--epochs_range", type=int, nargs=2, default=[50, 800], help="tpe: epoch counts LOW HIGH")
    parser.add_argument(
        "--seed", type=int | None, help="the sampler's seed (a TPE sweep is reproducible with one worker)"
    )
    parser.add_argument(
        "--seeds", type=int | str, nargs="+", default=["0-999"],
        help="training seeds, as integers and inclusive ranges (0-999, or 0 1 2): each trial trains one per seed",
    )  # fmt: skip
    parser.add_argument(
        "--pruner", type=Literal["none", "median", "hyperband"], default="none",
        help="stop trials whose mean validation loss is behind the others' at the same epoch",
    )  # fmt: skip
    parser.add_argument(
        "--storage", type=str | None,
        help="an Optuna storage URL (sqlite:///..., postgresql://...) or journal file (default: SQLite in --out)",
    )  # fmt: skip
    parser.add_argument("--study_name", type=str, default="sweep", help="the study's name in the storage")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes joining the study")
    parser.add_argument(
        "--heartbeat_interval", type=int, default=10,
        help="seconds between a running trial's heartbeats; a trial silent for twice that is failed and retried",
    )  # fmt: skip
    parser.add_argument("--report", action="store_true", help="print the table of an existing study, train nothing")
    parser.add_argument(
        "--accelerator", type=Literal["cpu", "gpu", "auto"], default="cpu", help="where the ensembles train"
    )
    parser.add_argument("--out", type=str | None, help="sweep directory (default: lightning_logs/sweep_N)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run(args: Namespace) -> int:
    """Run ``sweep``: create or join the study, run trials, print and write the ranked table."""
    spec = make_spec(args)
    from regression_lab.commands.sweep_study import Stopped, load_or_create, mask, quiet_logs, stop_on_signals, work

    if spec.accelerator == "auto":
        import torch

        spec.accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    spec.storage = args.storage or ""
    quiet_logs()
    if args.report:
        if not args.storage and not args.out:
            raise UsageError("--report needs the study's --storage (or the --out of a sweep with the default storage)")
        spec.storage = spec.storage or f"sqlite:///{Path(args.out) / 'study.db'}"
        if "://" not in spec.storage and not Path(spec.storage).is_file():
            raise UsageError(f"no journal file {spec.storage}")
        if spec.storage.startswith("sqlite:///") and not Path(spec.storage[len("sqlite:///") :]).is_file():
            raise UsageError(f"no study database at {spec.storage[len('sqlite:///') :]}")
        report(load_or_create(spec, create=False), Path("."), write=False)
        return 0
    from regression_lab.commands.sweep_study import cores

    if args.workers > cores():
        # More processes than cores train no faster and each holds torch and Lightning (~0.7 GB).
        print(f"note: --workers {args.workers} capped at this machine's {cores()} cores", file=sys.stderr)
        args.workers = cores()
        spec.quiet = args.quiet or args.workers > 1
    out_dir = resolve_out(args.out, spec)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / SETTINGS_FILE).is_file():
        # Its results.csv and trials.csv would replace whatever files of those names are there.
        raise UsageError(f"{out_dir} exists and is not a sweep directory: choose another --out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-API notices (heartbeats, retries)
        # A given storage is opened first: one that cannot be reached, or that holds another
        # search space, is refused before anything is made here.
        study = load_or_create(spec) if spec.storage else None
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"cannot write the sweep directory {out_dir}: {err.strerror or err}") from None
        spec.out_dir = str(out_dir)
        spec.storage = spec.storage or f"sqlite:///{out_dir / 'study.db'}"
        if study is None:
            study = load_or_create(spec)  # refuses another search space before anything is written
        with atomic_write(out_dir / SETTINGS_FILE, "w") as fh:
            json.dump({"definition": spec.definition(), "storage": mask(spec.storage), "study_name": spec.study_name},
                      fh, indent=2)  # fmt: skip
        what = f"{spec.grid_size()} settings" if spec.sampler == "grid" else f"{spec.n_trials} TPE trials"
        print(
            f"sweep: study {spec.study_name!r} in {mask(spec.storage)}: {what} x {len(spec.seeds):,} seeds"
            + (f", {args.workers} workers" if args.workers > 1 else "")
            + f"; runs in {out_dir}",
            file=sys.stderr,
        )

        previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        stop_on_signals()
        try:
            if args.workers > 1:
                run_workers(spec, args.workers)
            else:
                work(spec, study)
        except KeyboardInterrupt as err:
            signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
            print(
                f"sweep stopped ({signal.Signals(signum).name}): the running trials are marked failed; "
                "run the same command again to continue the study",
                file=sys.stderr,
            )
            return 128 + signum
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
        report(study, out_dir)
    return 0
