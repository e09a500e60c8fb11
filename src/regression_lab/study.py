"""The sweep's Optuna study: storage, sampler, pruner, the objective (one ensemble fit per trial, as Python objects),
the workers' loop, for :mod:`regression_lab.sweep`. Try: ``python -c "from regression_lab.study import
mask; print(mask('postgresql://u:pw@h/db'))"``."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import lightning as L
import optuna
from lightning.pytorch.loggers import TensorBoardLogger
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from regression_lab import errors
from regression_lab.callbacks import Guard
from regression_lab.csvfile import check_unchanged
from regression_lab.data import RegressionDataModule
from regression_lab.ensemble import regression_model
from regression_lab.errors import UsageError
from regression_lab.metrics import FinalMetrics
from regression_lab.notices import quiet_notices
from regression_lab.sweep import SETTINGS_FILE, StudySpec, parse_seeds
from regression_lab.sweep_report import DEFINITION_ATTR, MEMBERS_ATTR
from regression_lab.train import TRAINER_DEFAULTS

#: The lab's question, from the model's and the data's own defaults: the prediction at probe_x against the true line.
PROBE_X = inspect.signature(regression_model).parameters["probe_x"].default
#: Optuna's RDB tables: SQLite creates them one by one, so a study being made shows some of them.
OPTUNA_TABLES = {"studies", "version_info", "study_directions", "study_user_attributes", "study_system_attributes",
                 "trials", "trial_user_attributes", "trial_system_attributes", "trial_params", "trial_values",
                 "trial_intermediate_values", "trial_heartbeats", "alembic_version"}  # fmt: skip


def mask(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, tables and error messages)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _scrub(text: str, url: str) -> str:
    """An error message with the storage's password taken out wherever it appears (whole words only: a password "p"
    must not turn "psycopg" into "***sycopg")."""
    found = re.search(r"://[^:/@]*:([^@/]*)@", url)
    text = " ".join(text.replace(url, mask(url)).split())[:300]
    if not (found and found.group(1)):
        return text
    return re.sub(rf"(?<![A-Za-z0-9]){re.escape(found.group(1))}(?![A-Za-z0-9])", "***", text)


def open_study(spec: StudySpec, create: bool = True) -> optuna.Study:
    """The study ``spec.study_name`` in ``spec.storage``: created if new (and ``create``), continued if it searches the
    same space, else refused. An RDB storage gets heartbeats (a dead worker's trial is retried); a path is a journal."""
    where, name, path = mask(spec.storage), spec.study_name, file_of(spec.storage)
    if not create and path is not None and not path.exists():  # Optuna would make the file to look in it
        raise UsageError(f"no study named {name!r} in {where}: there is no such file")
    if (why := _foreign(spec.storage, create)) is not None:
        raise UsageError(f"storage {where} is not an Optuna study ({why}): choose another --storage; it stays as is")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep says what it does itself
    for attempt in range(5):  # sweeps started together on a new database race to create its tables
        try:
            return _create(spec, create)
        except UsageError:
            raise
        except ImportError as err:
            raise UsageError(
                f"storage {where} needs a driver: {err} (pip install 'regression-lab[postgres]')"
            ) from None
        except KeyError:
            raise UsageError(f"no study named {name!r} in {where}") from None
        except Exception as err:  # noqa: BLE001 (SQLAlchemy, drivers, the OS: all say "cannot use it")
            if attempt == 4 or not any(word in str(err) for word in ("UNIQUE", "already exists", "Duplicate")):
                raise UsageError(f"cannot open the storage {where}: {_scrub(str(err), spec.storage)}") from None
            time.sleep(0.5)  # the loser's next attempt finds them made


def _foreign(storage: str, create: bool) -> str | None:
    """Why an existing file the storage names is not an Optuna study's, or None: Optuna would add its schema to a
    user's own SQLite file, or take a text file for a journal and append to it. A file with nothing in it yet is a
    study to make (``create``: another sweep may be making it this moment)."""
    sqlite, path = storage.startswith("sqlite:///"), file_of(storage)
    if path is None or not path.is_file():
        return None
    if path.stat().st_size == 0:
        return None if create else "an empty file"
    if sqlite:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)) as db:
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError:
            return "not a SQLite database"
        ours = {"studies", "version_info"} <= tables or (create and tables <= OPTUNA_TABLES)  # (being made)
        return None if ours else "a SQLite database of another schema"
    with path.open("rb") as fh:
        first = fh.readline(1_000_000)
    with contextlib.suppress(ValueError):
        if isinstance(entry := json.loads(first), dict) and "op_code" in entry:
            return None
    return "a file that is not an Optuna journal"


def file_of(storage: str) -> Path | None:
    """The local file a storage names (a journal's path, ``sqlite:///path``), if it names one."""
    sqlite = storage.startswith("sqlite:///")
    return Path(storage.removeprefix("sqlite:///")) if sqlite or "://" not in storage else None


def check_same_study(out: str | None, spec: StudySpec) -> None:
    """Refuse an ``--out`` whose sweep.json names another study: its results would be replaced by this one's."""
    if out is None:
        return
    saved: object = None
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads((Path(out) / SETTINGS_FILE).read_text())
    was, name = (saved.get("storage"), saved.get("study_name")) if isinstance(saved, dict) else (None, None)
    now = spec.storage or f"sqlite:///{Path(out) / 'study.db'}"
    files = file_of(str(was)), file_of(now)
    # A relative path was relative to its own working directory: the directory's own study.db is its default storage.
    own = not spec.storage and files[0] is not None and files[0].parts[-2:] == (Path(out).resolve().name, "study.db")
    same = own or (files[0].resolve() == files[1].resolve() if all(files) else was == mask(now))
    if was is not None and not (same and name in (None, spec.study_name)):
        raise UsageError(f"{out} holds the sweep of study {name!r} in {was}: choose another --out, or give that "
                         "--storage and --study_name")  # fmt: skip


def _create(spec: StudySpec, create: bool) -> optuna.Study:
    with quiet_notices():  # heartbeats and retries are experimental in Optuna
        if "://" not in spec.storage:
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(spec.storage))
        else:
            beats = dict(heartbeat_interval=spec.heartbeat_interval, grace_period=2 * spec.heartbeat_interval)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
            storage = optuna.storages.RDBStorage(spec.storage, **beats, heartbeat_stale_trial_callback=retry)
    if spec.sampler == "grid":
        sampler = optuna.samplers.GridSampler({"hidden_size": spec.hidden_sizes, "lr": spec.lrs}, seed=spec.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=spec.seed)
    if not create:  # --report: each search option not at its default must be the study's own, not ignored
        study = optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler)
        saved, default = study.user_attrs.get(DEFINITION_ATTR) or {}, StudySpec().definition()
        if any(v != default.get(k) and v != saved.get(k) for k, v in spec.definition().items()):
            raise _another_space(saved, spec)
        return study
    top = max(spec.epochs) if spec.sampler == "grid" else spec.epochs_range[1]
    pruner = {
        "median": optuna.pruners.MedianPruner(n_startup_trials=2),  # a grid is often small
        "hyperband": optuna.pruners.HyperbandPruner(min_resource=20, max_resource=top),
    }.get(spec.pruner, optuna.pruners.NopPruner())
    return _checked(optuna.create_study(storage=storage, study_name=spec.study_name, direction="minimize",
                                        sampler=sampler, pruner=pruner, load_if_exists=True), spec)  # fmt: skip


def _another_space(saved: dict, spec: StudySpec) -> UsageError:
    """The refusal of options that describe another search than the study's ``saved`` definition."""
    searched = ", ".join(f"{k} {v}" for k, v in saved.items())
    return UsageError(f"study {spec.study_name!r} in {mask(spec.storage)} searches another space ({searched}): "
                      "choose another --study_name, or the same options as the study's")  # fmt: skip


def _checked(study: optuna.Study, spec: StudySpec) -> optuna.Study:
    """The study, if it is this sweep's (or new: then made so); refused before it is changed otherwise."""
    where, name = mask(spec.storage), spec.study_name
    truth = None if spec.data_csv else RegressionDataModule().line_at(PROBE_X)  # a file has no known line
    wanted = {**spec.definition(), "probe_x": PROBE_X, "truth": truth}
    saved = study.user_attrs.get(DEFINITION_ATTR)
    if saved is None and study.get_trials(deepcopy=False):
        raise UsageError(f"study {name!r} in {where} is not a regression-lab sweep: choose another --study_name")
    if saved and saved != wanted and {**saved, "data_sha256": 0} == {**wanted, "data_sha256": 0}:  # the hash alone
        raise UsageError(f"{spec.data_csv} has changed since study {name!r} in {where} began on it (its SHA-256 "
                         "differs): restore the file, or choose another --study_name")  # fmt: skip
    if saved is not None and saved != wanted:
        raise _another_space(saved, spec)
    if saved is None:
        study.set_user_attr(DEFINITION_ATTR, wanted)
        with quiet_notices():
            epochs = f"{max(spec.epochs)} epochs" if spec.sampler == "grid" else "the trial's epochs"
            study.set_metric_names([f"mean val loss over the seeds at {epochs}"])
    return study


def objective(spec: StudySpec, trial: optuna.Trial) -> float:
    """Train the trial's setting over every seed in one ensemble fit; return its mean val loss."""
    if spec.sampler == "grid":
        hidden = trial.suggest_categorical("hidden_size", spec.hidden_sizes)
        lr = trial.suggest_categorical("lr", spec.lrs)
        epochs = sorted(spec.epochs)
    else:
        hidden = trial.suggest_int("hidden_size", *spec.hidden_range)
        lr = trial.suggest_float("lr", *spec.lr_range, log=spec.log)
        epochs = [trial.suggest_int("epochs", *spec.epochs_range)]
    seeds, start = parse_seeds(spec.seeds), time.perf_counter()
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    given = {"first_seed": seeds[0], "num_seeds": len(seeds)} if contiguous else {"seeds": seeds}
    model = regression_model(hidden_size=[hidden], lr=[lr], **given)
    metrics = FinalMetrics(snapshot_epochs=epochs[:-1], box_plot=False)  # the report draws one of every setting
    trainer = L.Trainer(
        **{**TRAINER_DEFAULTS, "accelerator": spec.accelerator, "devices": 1, "max_epochs": epochs[-1]},
        logger=TensorBoardLogger(spec.out_dir, name="", version=f"trial_{trial.number}", default_hp_metric=False),
        callbacks=[metrics, Guard(), PyTorchLightningPruningCallback(trial, monitor="val/loss")],
        enable_checkpointing=False, enable_progress_bar=not spec.quiet, enable_model_summary=False,
    )  # fmt: skip
    dm = RegressionDataModule(csv=spec.data_csv)  # the lab's line, or the file the study began on, unchanged
    if spec.data_csv is not None:
        check_unchanged({"path": spec.data_csv, "sha256": spec.data_sha256}, dm.source["csv"], "this sweep began")
    # Stopped early by a signal (however Lightning ended the fit), the trial is interrupted: Optuna marks it failed.
    with quiet_notices(), errors.deferred():
        trainer.fit(model, datamodule=dm)
    floats = lambda t: [v if math.isfinite(v) else None for v in t.double().tolist()]  # noqa: E731  (JSON: no NaN)
    members = {str(e): {k: floats(v) if v.is_floating_point() else v.tolist() for k, v in metrics.snapshots[e].items()}
               for e in epochs}  # fmt: skip
    final = members[str(epochs[-1])]
    healthy = [v for v, d in zip(final["val_loss"], final["diverged"], strict=True) if not d and v is not None]
    value, seconds = (float(f"{sum(healthy) / len(healthy):.6g}") if healthy else math.inf), time.perf_counter() - start
    # The members' numbers stay in the storage (the table is rebuilt from it) as a system attribute, which
    # optuna-dashboard does not draw; the user attributes it shows are short.
    storage = trial.storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(trial.study.study_name),
                                                               trial.number)  # fmt: skip
    storage.set_trial_system_attr(trial_id, MEMBERS_ATTR, members)
    for key, v in (("seconds", round(seconds, 1)), ("diverged", len(seeds) - len(healthy))):
        trial.set_user_attr(key, v)
    print(f"trial {trial.number}: hidden_size={hidden}, lr={lr:g}, epochs {', '.join(map(str, epochs))}: mean val "
          f"loss {value:.4g} over {len(seeds)} seeds ({seconds:.1f} s)", file=sys.stderr)  # fmt: skip
    return value


def _grid_states(study: optuna.Study) -> dict[tuple, list]:
    """The trials of each grid setting, by (hidden_size, lr)."""
    found: dict[tuple, list] = {}
    for t in study.get_trials(deepcopy=False):
        if {"hidden_size", "lr"} <= set(t.params):
            found.setdefault((t.params["hidden_size"], float(t.params["lr"])), []).append(t)
    return found


def requeue_failed(study: optuna.Study, spec: StudySpec) -> None:
    """Queue again each grid setting whose every attempt failed (a run stopped by a signal). Called once per run,
    before its trials start: workers deciding it each for themselves would queue a setting twice."""
    if spec.sampler != "grid":
        return
    for attempts in _grid_states(study).values():
        if all(t.state == TrialState.FAIL for t in attempts):
            with quiet_notices():  # Optuna's own retry (as for a dead worker's): keeps the grid point
                optuna.storages.RetryHeartbeatStaleTrialCallback()(study, attempts[-1])


def _next(study: optuna.Study, spec: StudySpec) -> str:
    """``run`` when a trial is left to start here, ``wait`` while only other workers' trials run, ``done`` when the
    study is complete (a setting that failed in this run is retried by the next, see :func:`requeue_failed`)."""
    with quiet_notices():
        optuna.storages.fail_stale_trials(study)  # Optuna does it itself only when a new trial starts
    trials = study.get_trials(deepcopy=False)
    if spec.sampler == "tpe":
        left = sum(t.state != TrialState.FAIL for t in trials) < spec.n_trials
    else:
        left = not {(h, float(lr)) for h in spec.hidden_sizes for lr in spec.lrs}.issubset(_grid_states(study))
    if left or any(t.state == TrialState.WAITING for t in trials):
        return "run"
    return "wait" if any(t.state == TrialState.RUNNING for t in trials) else "done"


def work(spec: StudySpec, study: optuna.Study) -> None:
    """Run trials until the study is complete, waiting for other workers' last ones (each ends with the whole table)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # its start-up lines, per trial
    while errors.requested() is None and (step := _next(study, spec)) != "done":  # a signal ends a wait too
        if step == "wait":
            time.sleep(min(2.0, spec.heartbeat_interval))
        else:
            study.optimize(lambda trial: objective(spec, trial), n_trials=1)


@contextlib.contextmanager
def storage_failures(storage: str) -> Iterator[None]:
    """A storage failing within the block (damaged or gone mid-run) ends the sweep in one line, exit 1."""
    try:
        yield
    except Exception as err:
        from sqlalchemy.exc import SQLAlchemyError

        chain = [err]  # the database's own error, behind what Optuna raised while it handled it
        while chain[-1].__cause__ or chain[-1].__context__:
            chain.append(chain[-1].__cause__ or chain[-1].__context__)
        if not (found := [e for e in chain if isinstance(e, SQLAlchemyError | optuna.exceptions.StorageInternalError)]):
            raise
        why = _scrub(str(getattr(found[-1], "orig", None) or found[-1]), storage)
        raise errors.TrainingFailed(f"the study's storage {mask(storage)} failed during the sweep: {why}") from None
