"""The ``sweep`` command: the lab's epochs x hidden-size questions over many seeds, as an Optuna study
(:mod:`regression_lab.study`) that any number of workers and machines share. Run it::

    regression-lab sweep                       # hidden {4,5,8} x epochs {100,200,400} x lr {0.01} x seeds 0-999
    regression-lab sweep --sampler tpe --n_trials 30 --lr_range 1e-3 0.3 --log --pruner median --workers 2
    regression-lab sweep --storage postgresql+psycopg://user@db/optuna --study_name lab     # on every machine
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from regression_lab import errors
from regression_lab.csvfile import read_xy
from regression_lab.errors import UsageError, check_float, check_int, command_parser, refused_os_errors
from regression_lab.files import LOG_ROOT, atomic_write, lock_dir, numbered_dirs, reserve_numbered_dir
from regression_lab.models import MAX_HIDDEN_SIZE, MAX_SEED, check_seeds

SETTINGS_FILE = "sweep.json"
#: A sweep keeps every member's numbers in its study: this many seeds at most.
MAX_SWEEP_SEEDS = 100_000
#: Each sampler's search space: the other sampler refuses these options.
GRID_KEYS = ("hidden_sizes", "epochs", "lrs")
TPE_KEYS = ("hidden_range", "lr_range", "log", "epochs_range")


def parse_seeds(values: list[str | int]) -> list[int]:
    """Seeds from integers and inclusive ranges: ``["0-999"]``, ``[0, 1, 7]``."""
    seeds: list[int] = []
    for value in values:
        first, sep, last = str(value).strip().partition("-")
        try:
            lo, hi = int(first), int(last if sep else first)
        except ValueError:
            raise UsageError(f"--seeds takes integers >= 0 or ranges like 0-999, got {str(value)!r}") from None
        if hi < lo:
            raise UsageError(f"--seeds range {str(value)!r} is reversed: write {hi}-{lo}")
        if not 0 <= lo <= hi <= MAX_SEED or len(seeds) + hi - lo >= MAX_SWEEP_SEEDS:
            raise UsageError(
                f"--seeds must lie in [0, {MAX_SEED}], at most {MAX_SWEEP_SEEDS:,} (a sweep keeps every member's "
                f"numbers in its study), got {str(value)!r}"
            )
        seeds.extend(range(lo, hi + 1))
    return check_seeds(seeds, "--seeds")


def seed_ranges(seeds: list[int]) -> list[str]:
    """Seeds written compactly as ranges, in order: ``[0, 1, 2, 7]`` gives ``["0-2", "7"]``."""
    runs: list[list[int]] = []
    for s in seeds:
        if runs and runs[-1][1] + 1 == s:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return [f"{a}-{b}" if a != b else str(a) for a, b in runs]


@dataclass
class StudySpec:
    """Everything a worker needs to join the study: the command's options and defaults, as plain values."""

    storage: str | None = None
    study_name: str = "sweep"
    out_dir: str = ""
    sampler: str = "grid"
    hidden_sizes: list[int] = field(default_factory=lambda: [4, 5, 8])
    epochs: list[int] = field(default_factory=lambda: [100, 200, 400])
    lrs: list[float] = field(default_factory=lambda: [0.01])
    n_trials: int | None = None  # tpe: 20; refused with the grid, which trains each setting once
    hidden_range: list[int] = field(default_factory=lambda: [1, 16])
    lr_range: list[float] = field(default_factory=lambda: [1e-3, 0.3])
    log: bool = False
    epochs_range: list[int] = field(default_factory=lambda: [50, 800])
    seed: int | None = None
    seeds: list[str] = field(default_factory=lambda: ["0-999"])
    pruner: str = "none"
    workers: int = 1
    heartbeat_interval: int = 10
    accelerator: str = "cpu"
    quiet: bool = False
    data_csv: str | None = None
    data_sha256: str = ""  # of data_csv, when check() read it: the study searches that file's contents

    def check(self) -> None:
        """Refuse options that cannot make a study (:class:`UsageError`), before anything is written."""
        if not self.study_name.strip():  # an unset "$NAME": a study no one could name again
            raise UsageError("--study_name is empty: give the study a name (the default is 'sweep')")
        for name in GRID_KEYS:
            values, what = getattr(self, name), f"--{name} values"
            if not isinstance(values, list) or not values:  # a config's empty list: no grid to search
                raise UsageError(f"--{name} takes a list of one or more values, got {values!r}")
            if len(set(values)) < len(values):
                raise UsageError(f"--{name} repeats a value: {values}")
            for v in values:  # a learning rate > 0, a count >= 1, a width the model takes
                top = MAX_HIDDEN_SIZE if name == "hidden_sizes" else None
                check_float(what, v, 0.0, strict=True) if name == "lrs" else check_int(what, v, 1, top)
        for name, low in (("hidden_range", 1), ("lr_range", 0.0), ("epochs_range", 1)):
            if not isinstance(pair := getattr(self, name), list) or len(pair) != 2:
                raise UsageError(f"--{name} takes LOW HIGH, got {pair!r}")
            lo, hi = pair
            check_float(f"--{name} values", lo, low, strict=not low)
            if not lo <= hi:
                raise UsageError(f"--{name} takes LOW HIGH with LOW <= HIGH, got {[lo, hi]}")
        check_int("--hidden_range's HIGH", self.hidden_range[1], 1, MAX_HIDDEN_SIZE)
        for name in ("n_trials", "workers", "heartbeat_interval"):
            if getattr(self, name) is not None:
                check_int(f"--{name}", getattr(self, name), 1)
        grid, default = self.sampler == "grid", StudySpec()
        for name in ("n_trials", *TPE_KEYS) if grid else GRID_KEYS:
            if getattr(self, name) != getattr(default, name):  # the other sampler's option: refused, not ignored
                raise UsageError(f"--{name} is for --sampler {'tpe' if grid else 'grid'}: the {self.sampler} "
                                 "sampler does not use it")  # fmt: skip
        self.n_trials = self.n_trials or 20
        if self.seed is not None:
            check_int("--seed", self.seed, 0, MAX_SEED)
        if self.accelerator == "gpu" and not torch.cuda.is_available():
            raise UsageError("--accelerator gpu: this machine has no CUDA device (use auto or cpu)")
        if self.accelerator == "auto":
            self.accelerator = "gpu" if torch.cuda.is_available() else "cpu"
        self.seeds = seed_ranges(parse_seeds(self.seeds))
        if self.data_csv is not None:
            _, _, record = read_xy(self.data_csv, "--data_csv", 3, ", 1 to train on and 2 to validate on")
            self.data_csv, self.data_sha256 = record["path"], record["sha256"]

    def definition(self) -> dict[str, Any]:
        """What the study searches: a study is continued only with the same."""
        keys = GRID_KEYS if self.sampler == "grid" else TPE_KEYS
        data = {"data_csv": self.data_csv, "data_sha256": self.data_sha256} if self.data_csv else {}
        return {"sampler": self.sampler, "seeds": self.seeds, **{k: getattr(self, k) for k in keys}, **data}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def capped(workers: int) -> int:
    """At most a worker per core (more train no faster, and each holds Lightning), with a note when capped."""
    if workers > cores():
        print(f"note: --workers {workers} capped at this machine's {cores()} cores", file=sys.stderr)
    return min(workers, cores())


def resolve_out(out: str | None, spec: StudySpec) -> Path:
    """``--out``; with ``--storage``, ``lightning_logs/sweep_<study_name>``; else the newest ``sweep_N`` of the same
    search (its study continues) or a new one, chosen under a lock, so identical sweeps started together join one."""
    if out is not None or spec.storage:
        return Path(out) if out is not None else LOG_ROOT / f"sweep_{spec.study_name}"
    with refused_os_errors(f"cannot write the sweep directory under {LOG_ROOT}"):
        LOG_ROOT.mkdir(parents=True, exist_ok=True)
        lock = lock_dir(LOG_ROOT, wait=True)  # held for milliseconds, never over training
    try:
        for found in numbered_dirs(LOG_ROOT, "sweep_")[-1:]:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                if json.loads((found / SETTINGS_FILE).read_text()).get("definition") == spec.definition():
                    return found
        new = reserve_numbered_dir(LOG_ROOT, "sweep_")
        with atomic_write(new / SETTINGS_FILE, "w") as fh:
            json.dump({"definition": spec.definition()}, fh, indent=2)
        return new
    finally:
        os.close(lock)


def run_workers(spec: StudySpec) -> None:
    """``spec.workers`` processes joining the study; waits for them. They fork from one clean server process that
    imported Lightning once (no CUDA, no threads: safe to fork), instead of each importing it anew."""
    threads = max(1, cores() // spec.workers)
    context = mp.get_context("forkserver" if sys.platform == "linux" else "spawn")  # macOS: forks after torch may hang
    if sys.platform == "linux":
        context.set_forkserver_preload(["regression_lab.study"])
    procs = [context.Process(target=worker_main, args=(asdict(spec), threads)) for _ in range(spec.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except errors.Interrupted:
        for p in procs:
            p.terminate()  # SIGTERM: each worker fails its running trial and exits
            p.join()
        raise
    if 2 in (codes := [p.exitcode for p in procs]):
        raise UsageError("a worker stopped on bad input (its error is above)")
    if lost := [f"{i} ({c})" for i, c in enumerate(codes) if c != 0]:
        print(f"warning: worker(s) {', '.join(lost)} ended early; a trial left running is retried by the other "
              "workers (with heartbeats) or by the next run of this command", file=sys.stderr)  # fmt: skip


def worker_main(spec: dict[str, Any], threads: int) -> None:
    """A worker process of ``--workers N``: join the study and run trials. Its parent may be the fork server, which
    outlives the sweep while workers run: the worker watches the sweep itself, and stops (SIGTERM) when it ends."""
    from regression_lab.study import open_study, storage_failures, work

    errors.handle_signals()
    sweep = mp.parent_process()  # its sentinel is readable once the sweep has ended, even SIGKILLed

    def stop_with_the_sweep() -> None:
        mp.connection.wait([sweep.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_with_the_sweep, daemon=True).start()
    torch.set_num_threads(threads)
    try:
        with errors.deferred(), storage_failures(spec["storage"]):
            work(StudySpec(**spec), open_study(StudySpec(**spec)))
    except (UsageError, errors.TrainingFailed) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2 if isinstance(err, UsageError) else 1)
    except errors.Interrupted as err:
        sys.exit(128 + err.signum)


def build_parser() -> ArgumentParser:
    """The ``sweep`` command's options (``--config FILE`` takes the same keys in YAML)."""
    parser = command_parser("sweep", __doc__)
    d, add = StudySpec(), parser.add_argument
    add("--config", action=ActionConfigFile, help="a YAML file of the options below")
    add("--sampler", type=Literal["grid", "tpe"], default=d.sampler, help="grid, or TPE over ranges")
    add("--hidden_sizes", type=int, nargs="+", default=d.hidden_sizes, help="grid: hidden sizes")
    add("--epochs", type=int, nargs="+", default=d.epochs, help="grid: epoch counts (snapshots of one fit)")
    add("--lrs", type=float, nargs="+", default=d.lrs, help="grid: learning rates")
    add("--n_trials", type=int | None, default=d.n_trials, help="tpe: trials in the study (default 20)")
    add("--hidden_range", type=int, nargs=2, default=d.hidden_range, help="tpe: hidden sizes LOW HIGH")
    add("--lr_range", type=float, nargs=2, default=d.lr_range, help="tpe: learning rates LOW HIGH")
    add("--log", action="store_true", help="tpe: search the learning rate on a log scale")
    add("--epochs_range", type=int, nargs=2, default=d.epochs_range, help="tpe: epoch counts LOW HIGH")
    add("--seed", type=int | None, help="the sampler's seed (a TPE sweep is reproducible with one worker)")
    add("--seeds", type=int | str, nargs="+", default=d.seeds, help="training seeds: integers and ranges (0-999)")
    add("--pruner", type=Literal["none", "median", "hyperband"], default=d.pruner, help="stop trials behind the others")
    add("--storage", type=str | None, help="an Optuna storage URL or journal file (default: SQLite in --out)")
    add("--study_name", type=str, default=d.study_name, help="the study's name in the storage")
    add("--workers", type=int, default=d.workers, help="local worker processes joining the study")
    add("--heartbeat_interval", type=int, default=d.heartbeat_interval, help="seconds between a trial's heartbeats")
    add("--report", action="store_true", help="print the table of an existing study, train nothing")
    add("--data_csv", type=str | None, help="(x, y) rows of a CSV file instead of the lab's line (20% validate)")
    add("--accelerator", type=Literal["cpu", "gpu", "auto"], default=d.accelerator, help="where ensembles train")
    add("--out", type=str | None, help="sweep directory (default: lightning_logs/sweep_N)")
    add("--quiet", action="store_true", help="no progress bars")
    return parser


def run(args: Namespace) -> list[dict[str, Any]]:
    """Create or join the study, run its trials, print and write the ranked table; its rows (for the Python API)."""
    from regression_lab import study as studies
    from regression_lab.sweep_report import report

    spec = StudySpec(**{k: args[k] for k in asdict(StudySpec()) if k in args})
    spec.check()
    if args.report:
        if not spec.storage and not args.out:
            raise UsageError("--report needs the study's --storage (or the --out of a sweep with the default storage)")
        spec.storage = spec.storage or f"sqlite:///{Path(args.out) / 'study.db'}"
        return report(studies.open_study(spec, create=False), None)
    studies.check_same_study(args.out, spec)
    out = resolve_out(args.out, spec)  # with --out or --storage only a path: nothing is made yet
    if out.is_dir() and any(out.iterdir()) and not (out / SETTINGS_FILE).is_file():
        raise UsageError(f"{out} exists and is not a sweep directory: choose another --out")
    # A given storage is opened next: one unreachable, or holding another search, is refused before anything is made.
    study = studies.open_study(spec) if spec.storage else None
    spec.workers = capped(spec.workers)  # noted once the options are known to be good: bad input is one line
    spec.quiet = spec.quiet or spec.workers > 1
    with refused_os_errors(f"cannot write the sweep directory {out}"):
        out.mkdir(parents=True, exist_ok=True)
    spec.out_dir, spec.storage = str(out), spec.storage or f"sqlite:///{out / 'study.db'}"
    study = study or studies.open_study(spec)
    with atomic_write(out / SETTINGS_FILE, "w") as fh:
        json.dump({"definition": spec.definition(), "storage": studies.mask(spec.storage),
                   "study_name": spec.study_name}, fh, indent=2)  # fmt: skip
    settings = len(spec.hidden_sizes) * len(spec.lrs)
    grid = f"{settings} settings" if spec.sampler == "grid" else f"{spec.n_trials} TPE trials"
    workers = f", {spec.workers} workers" if spec.workers > 1 else ""
    seeds = len(parse_seeds(spec.seeds))
    print(f"sweep: study {spec.study_name!r} in {studies.mask(spec.storage)}: {grid} x {seeds:,} seeds{workers}; "
          f"runs in {out}", file=sys.stderr)  # fmt: skip
    with studies.storage_failures(spec.storage):
        studies.requeue_failed(study, spec)
        if spec.workers > 1:
            run_workers(spec)  # a signal interrupts the wait at once, and stops the workers
        else:
            with errors.deferred():  # a signal stops the running trial at its next batch end
                studies.work(spec, study)
        return report(study, out)
