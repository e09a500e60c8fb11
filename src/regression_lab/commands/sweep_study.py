"""The sweep as an Optuna study: storage, samplers, pruning, the trial's ensemble fit, workers.

A trial is one setting: its seeds train together as one ensemble ``fit`` (see
:mod:`regression_lab.lit.ensemble`), its value is the mean validation loss over the seeds, and
every member's numbers are kept as trial user attributes, so the report can be made from the
storage alone, on any machine. Workers share the study through its storage; which worker runs
which trial is Optuna's business. Used by :mod:`regression_lab.commands.sweep`::

    python -c "from regression_lab.commands.sweep_study import mask; print(mask('postgresql://u:pw@h/db'))"
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import torch
from optuna.trial import TrialState

from regression_lab.commands.sweep_report import TRUTH, trial_name
from regression_lab.core.ensemble import parse_seeds
from regression_lab.core.errors import TrainingFailed, UsageError
from regression_lab.lit.ensemble_metrics import EnsembleMetrics

#: The study user attribute that records what the sweep searches (a study of another search
#: space under the same name is refused).
DEFINITION_ATTR = "regression_lab_sweep"
#: Per member numbers kept for every epoch count, in this order.
MEMBER_KEYS = ("prediction", "val_loss", "train_loss", "active_units", "diverged")


@dataclass
class StudySpec:
    """Everything a worker needs to join the study and run its trials (plain values: it is
    handed to spawned worker processes)."""

    storage: str
    study_name: str
    out_dir: str
    sampler: str = "grid"
    hidden_sizes: list[int] = field(default_factory=lambda: [4, 5, 8])
    epochs: list[int] = field(default_factory=lambda: [100, 200, 400])
    lrs: list[float] = field(default_factory=lambda: [0.01])
    hidden_range: list[int] = field(default_factory=lambda: [1, 16])
    lr_range: list[float] = field(default_factory=lambda: [1e-3, 0.3])
    log: bool = True
    epochs_range: list[int] = field(default_factory=lambda: [50, 800])
    n_trials: int = 20
    seeds: list[int] = field(default_factory=list)
    seed_ranges: list[str] = field(default_factory=list)
    pruner: str = "none"
    seed: int | None = None
    accelerator: str = "cpu"
    heartbeat_interval: int = 10
    quiet: bool = False

    def definition(self) -> dict[str, Any]:
        """What the study searches: a study is continued only with the same definition."""
        common = {"sampler": self.sampler, "seeds": self.seed_ranges}
        if self.sampler == "grid":
            return {**common, "hidden_sizes": self.hidden_sizes, "epochs": sorted(self.epochs), "lrs": self.lrs}
        return {
            **common, "hidden_range": self.hidden_range, "lr_range": self.lr_range, "log": self.log,
            "epochs_range": self.epochs_range,
        }  # fmt: skip

    def grid_size(self) -> int:
        return len(self.hidden_sizes) * len(self.lrs)


# --------------------------------------------------------------------------- storage


def mask(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, tables and error messages)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _scrub(text: str, url: str) -> str:
    """An error message with the storage's password taken out, wherever it appears."""
    found = re.search(r"://[^:/@]*:([^@/]*)@", url)
    text = text.replace(url, mask(url))
    if not found or not found.group(1):
        return text
    # Whole occurrences only (not inside a longer word), so a short password ("p") does not
    # turn "psycopg" and "port" into "***sycopg" and "***ort".
    return re.sub(rf"(?<![A-Za-z0-9]){re.escape(found.group(1))}(?![A-Za-z0-9])", "***", text)


def open_storage(url: str, heartbeat_interval: int) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: an RDB URL (``sqlite:///``, ``postgresql://``, ...) with
    heartbeats, so a trial whose worker died is failed and retried; or a journal file path."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        try:
            return optuna.storages.JournalStorage(JournalFileBackend(url))
        except OSError as err:
            raise UsageError(f"cannot open the journal file {url}: {err.strerror or err}") from None
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=2 * heartbeat_interval,
                failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=3),
            )
        except ImportError as err:
            raise UsageError(
                f"storage {mask(url)} needs a driver: {err} (pip install 'regression-lab[postgres]')"
            ) from None
        except Exception as err:  # noqa: BLE001 (SQLAlchemy, drivers, OS: all say "cannot use it")
            # Workers that start together on a new database race to create its tables and
            # types: the loser's next attempt finds them made.
            text = f"{type(err).__name__} {err}"
            racing = ("IntegrityError", "UniqueViolation", "DuplicateObject", "DuplicateTable", "already exists")
            if any(word in text for word in racing) and attempt < 2:
                time.sleep(0.5)
                continue
            detail = _scrub(" ".join(str(err).split()), url)[:300]
            raise UsageError(f"cannot open the storage {mask(url)}: {detail}") from None
    raise AssertionError("unreachable")


def sampler_for(spec: StudySpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({"hidden_size": spec.hidden_sizes, "lr": spec.lrs}, seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def pruner_for(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        # Two finished trials are enough to compare with: a grid is often small.
        return optuna.pruners.MedianPruner(n_startup_trials=2)
    if spec.pruner == "hyperband":
        top = max(spec.epochs) if spec.sampler == "grid" else spec.epochs_range[1]
        return optuna.pruners.HyperbandPruner(min_resource=20, max_resource=top)
    return optuna.pruners.NopPruner()


def load_or_create(spec: StudySpec, create: bool = True) -> optuna.Study:
    """The study named ``spec.study_name``: created if it does not exist (and ``create``), or
    continued if it searches the same space; anything else is refused before it is changed."""
    storage = open_storage(spec.storage, spec.heartbeat_interval)
    name, where = spec.study_name, mask(spec.storage)
    try:
        if create:
            study = optuna.create_study(
                storage=storage, study_name=name, direction="minimize", sampler=sampler_for(spec),
                pruner=pruner_for(spec), load_if_exists=True,
            )  # fmt: skip
        else:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler_for(spec))
    except KeyError:
        raise UsageError(f"no study named {name!r} in {where}") from None
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 (the storage's own errors: reaching it, its schema)
        detail = _scrub(" ".join(str(err).split()), spec.storage)[:300]
        raise UsageError(f"cannot use the study {name!r} in {where}: {detail}") from None
    saved = study.user_attrs.get(DEFINITION_ATTR)
    wanted = spec.definition()
    if not create:
        return study  # a report: whatever the study searched
    if saved is None and study.get_trials(deepcopy=False):
        raise UsageError(f"study {name!r} in {where} is not a regression-lab sweep: choose another --study_name")
    if saved is not None and saved != wanted:
        raise UsageError(
            f"study {name!r} in {where} searches another space ({_describe(saved)}): "
            "choose another --study_name, or the same options as the study's"
        )
    if saved is None and create:
        study.set_user_attr(DEFINITION_ATTR, wanted)
    return study


def _describe(definition: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in definition.items())


# --------------------------------------------------------------------------- signals

#: The signal that asked the sweep to stop, once one has.
STOPPED_BY: dict[str, int | None] = {"signal": None}


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM: Optuna marks the running trial failed; the command exits 130 or 143."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_on_signals() -> None:
    """SIGINT and SIGTERM raise :class:`Stopped`, and are remembered (a fit turns them into exit(1))."""

    def handler(signum: int, frame: Any) -> None:
        STOPPED_BY["signal"] = signum
        raise Stopped(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------- one trial


class OptunaPruning(L.Callback):
    """Report the ensemble's mean validation loss to the trial at each validation, and stop the
    fit when the study's pruner says the trial is behind (Optuna's Lightning pruning callback,
    for the ensemble's ``val/loss``)."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val/loss") -> None:
        """Args: trial: the running Optuna trial. monitor: the logged metric reported to it."""
        super().__init__()
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        epoch = trainer.current_epoch + 1
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: mean validation loss {float(value):.4g}")


def _duplicate_of(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any]) -> int | None:
    """The number of another trial of the same grid setting that finished or runs (lower numbers
    first), if any: two workers can pick the last setting of a grid at once."""
    for t in study.get_trials(deepcopy=False):
        if t.number == trial.number or t.params != params or t.user_attrs.get("duplicate_of") is not None:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            t.state == TrialState.RUNNING and t.number < trial.number
        ):
            return t.number
    return None


def _floats(values: torch.Tensor) -> list[float | None]:
    return [None if not math.isfinite(v) else v for v in values.double().tolist()]


def objective(spec: StudySpec, study: optuna.Study, trial: optuna.Trial) -> float:
    """Train the trial's setting over every seed in one ensemble fit; return its mean val loss."""
    from regression_lab.lit.cli import cli_main

    if spec.sampler == "grid":
        hidden = trial.suggest_categorical("hidden_size", spec.hidden_sizes)
        lr = trial.suggest_categorical("lr", spec.lrs)
        epochs = sorted(spec.epochs)
        duplicate = _duplicate_of(study, trial, {"hidden_size": hidden, "lr": lr})
        if duplicate is not None:
            # Never train a grid setting twice: this trial ends at once, marked as a copy.
            trial.set_user_attr("duplicate_of", duplicate)
            raise optuna.TrialPruned(f"setting already taken by trial {duplicate}")
    else:
        hidden = trial.suggest_int("hidden_size", *spec.hidden_range)
        lr = trial.suggest_float("lr", *spec.lr_range, log=spec.log)
        epochs = [trial.suggest_int("epochs", *spec.epochs_range)]
    seeds = spec.seeds
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    seed_args = (
        ["--model.first_seed", str(seeds[0]), "--model.num_seeds", str(len(seeds))]
        if contiguous
        else ["--model.seeds", str(seeds)]
    )
    run_dir = Path(spec.out_dir) / f"trial_{trial.number}"
    args = [
        "fit", "--model.hidden_size", f"[{hidden}]", "--model.lr", f"[{lr!r}]", *seed_args,
        "--trainer.max_epochs", str(epochs[-1]), "--trainer.accelerator", spec.accelerator, "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false" if spec.quiet else "true", "--trainer.enable_model_summary", "false",
        "--trainer.logger.init_args.save_dir", str(run_dir.parent), "--trainer.logger.init_args.name", "",
        "--trainer.logger.init_args.version", run_dir.name,
    ]  # fmt: skip
    metrics = EnsembleMetrics(snapshot_epochs=epochs[:-1])
    start = time.perf_counter()
    argv = sys.argv
    try:
        # LightningCLI reads sys.argv when given no args, and warns when given both; fit's
        # closing report is for a person at a terminal, the sweep prints its own.
        sys.argv = argv[:1]
        with contextlib.redirect_stdout(io.StringIO()):
            cli = cli_main(args, callbacks=[metrics, OptunaPruning(trial)])
        model = cli.model
    except TrainingFailed:
        model = None  # every member diverged: a result (the worst), not the end of the sweep
    except SystemExit:
        # Lightning ends a fit interrupted by a signal with exit(1): hand the signal back to
        # Optuna as the interruption it is, so the trial is marked failed, not left running.
        if STOPPED_BY["signal"] is not None:
            raise Stopped(STOPPED_BY["signal"]) from None
        raise
    finally:
        sys.argv = argv
    per_epoch: dict[str, dict[str, list]] = {}
    for e in epochs:
        m = metrics.snapshots.get(e)
        if model is None or m is None:
            per_epoch[str(e)] = {"diverged": [True] * len(seeds)}
            continue
        per_epoch[str(e)] = {
            "prediction": _floats(m["prediction"]),
            "val_loss": _floats(m["val_loss"]),
            "train_loss": _floats(m["train_loss"]),
            "active_units": m["active_units"].tolist(),
            "diverged": m["diverged"].tolist(),
        }
    trial.set_user_attr("members", per_epoch)
    final = per_epoch[str(epochs[-1])]
    healthy = [v for v, d in zip(final.get("val_loss", []), final["diverged"], strict=False) if not d and v is not None]
    value = sum(healthy) / len(healthy) if healthy else math.inf
    for key, v in (("seconds", time.perf_counter() - start), ("diverged", len(seeds) - len(healthy))):
        trial.set_user_attr(key, v)
    print(
        f"trial {trial.number}: hidden_size={hidden}, lr={lr:g}, epochs {', '.join(map(str, epochs))}: "
        f"mean val loss {value:.4g} over {len(seeds)} seeds ({time.perf_counter() - start:.1f} s)",
        file=sys.stderr,
    )
    return value


def members_of(study: optuna.Study) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The report's input from the storage: one row per member and epoch count of the finished
    trials, and one row per pruned or failed setting (duplicates left out)."""
    ranges = study.user_attrs.get(DEFINITION_ATTR, {}).get("seeds", [])
    seeds = parse_seeds(ranges) if ranges else []
    grid_epochs = study.user_attrs.get(DEFINITION_ATTR, {}).get("epochs")
    done: set[tuple] = set()
    rows, unfinished = [], []
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.state != TrialState.COMPLETE)
    for t in trials:
        if t.user_attrs.get("duplicate_of") is not None or not {"hidden_size", "lr"} <= set(t.params):
            continue
        h, lr = t.params["hidden_size"], float(t.params["lr"])
        epochs = [t.params["epochs"]] if "epochs" in t.params else list(grid_epochs or [])
        if (h, lr, tuple(epochs)) in done:
            continue  # a retried trial: its finished copy counts
        if t.state == TrialState.COMPLETE and "members" in t.user_attrs:
            done.add((h, lr, tuple(epochs)))
            for e, m in t.user_attrs["members"].items():
                for i, seed in enumerate(seeds):
                    dead = bool(m["diverged"][i])
                    rows.append(
                        {
                            "hidden_size": h, "epochs": int(e), "lr": lr, "seed": seed, "diverged": int(dead),
                            "prediction": math.nan if dead else _num(m["prediction"][i]),
                            "val_loss": math.inf if dead else _num(m["val_loss"][i], math.inf),
                            "train_loss": math.inf if dead else _num(m["train_loss"][i], math.inf),
                            "active_units": 0 if dead else int(m["active_units"][i]),
                        }
                    )  # fmt: skip
        elif t.state in (TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
            last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else math.inf
            for e in epochs:
                unfinished.append(
                    {"hidden_size": h, "epochs": e, "lr": lr, "n_seeds": len(seeds), "state": t.state.name,
                     "val_loss_mean": last}
                )  # fmt: skip
    # A setting that finished after an earlier failed attempt is finished.
    unfinished = [u for u in unfinished if (u["hidden_size"], u["lr"], tuple(grid_epochs or [u["epochs"]])) not in done]
    seen: set[tuple] = set()
    unique = []
    for u in unfinished:
        key = (u["hidden_size"], u["epochs"], u["lr"])
        if key not in seen:
            seen.add(key)
            unique.append(u)
    for r in rows:
        r["name"] = trial_name(r["hidden_size"], r["epochs"], r["lr"], r["seed"])
        r["abs_error"] = abs(r["prediction"] - TRUTH) if not r["diverged"] else math.inf
    return rows, unique


def _num(value: Any, default: float = math.nan) -> float:
    return float(value) if value is not None else default


# --------------------------------------------------------------------------- workers


def _grid_state(study: optuna.Study, spec: StudySpec) -> tuple[int, list[tuple], bool]:
    """The grid's settings never tried, those whose every attempt failed, and whether a trial waits."""
    states: dict[tuple, set[TrialState]] = {}
    waiting = False
    for t in study.get_trials(deepcopy=False):
        waiting |= t.state == TrialState.WAITING
        # A trial another worker has just started may hold some of its params only yet.
        if {"hidden_size", "lr"} <= set(t.params) and t.user_attrs.get("duplicate_of") is None:
            states.setdefault((t.params["hidden_size"], float(t.params["lr"])), set()).add(t.state)
    grid = [(h, float(lr)) for h in spec.hidden_sizes for lr in spec.lrs]
    untried = sum(1 for g in grid if g not in states)
    failed = [g for g in grid if g in states and states[g] == {TrialState.FAIL}]
    return untried, failed, waiting


def work(spec: StudySpec, study: optuna.Study | None = None) -> None:
    """Run trials of the study until every grid setting has run (or ``n_trials`` have started)."""
    study = study or load_or_create(spec)
    while True:
        # Trials of dead workers (no heartbeat for a grace period) fail now, and the retry
        # callback queues them again; Optuna does it itself only when a new trial starts.
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        running = any(t.state == TrialState.RUNNING for t in trials)
        if spec.sampler == "grid":
            untried, failed, waiting = _grid_state(study, spec)
            if not untried and not waiting:
                if failed:
                    # Every attempt at this setting failed (an interrupted run): queue it again.
                    h, lr = failed[0]
                    study.enqueue_trial({"hidden_size": h, "lr": lr})
                elif running:
                    # The rest runs in other workers; if one of them died, its trial goes stale
                    # and is retried here.
                    time.sleep(min(2.0, spec.heartbeat_interval))
                    continue
                else:
                    return
        else:
            started = [t for t in trials if t.state != TrialState.FAIL]
            if len(started) >= spec.n_trials:
                if running:
                    time.sleep(min(2.0, spec.heartbeat_interval))
                    continue
                return
        study.optimize(lambda trial: objective(spec, study, trial), n_trials=1, catch=())


def worker_main(spec_dict: dict[str, Any], threads: int) -> None:
    """A spawned worker process: join the study and run trials (``--workers N``)."""
    import warnings

    # SIGTERM from the parent (or SIGINT from the terminal): Optuna marks the running trial failed.
    stop_on_signals()
    torch.set_num_threads(threads)
    quiet_logs()
    warnings.filterwarnings("ignore")
    try:
        work(StudySpec(**spec_dict))
    except UsageError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    except BaseException:
        # Stopped by a signal: wherever it landed (inside Optuna's own bookkeeping it can surface
        # as another exception), end quietly; the parent says it in one line.
        if STOPPED_BY["signal"] is not None:
            sys.exit(128 + STOPPED_BY["signal"])
        raise


def quiet_logs() -> None:
    """Optuna's and Lightning's per-trial chatter off: the sweep prints a line per trial."""
    import logging

    # ERROR: a trial stopped by a signal is a warning with a traceback in Optuna; the sweep says it in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
