"""Training through ``LightningCLI``: ``fit``, ``validate`` and ``test`` with the lab's defaults, which live in the
typed signatures (``regression_model``, ``RegressionDataModule``) and the few Trainer and checkpoint settings below;
``configs/default.yaml`` is their ``--print_config``. Run it::

    regression-lab fit                                   # the lab: hidden 5, lr 0.01, 400 epochs
    regression-lab fit --ckpt_path last                  # resume the newest run
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins import CheckpointIO, DoublePrecision, HalfPrecision
from lightning.pytorch.utilities import rank_zero_only

from regression_lab import errors, files
from regression_lab.callbacks import AtomicCheckpointIO, Guard, LandscapeLogger, RunProgressBar, Trajectory
from regression_lab.checkpoint import load_model, resume_problem
from regression_lab.data import DATA_DEFAULTS, LINE_SETTINGS, RegressionDataModule, refuse_ignored
from regression_lab.ensemble import EnsembleRegressionModule, refuse_counts_beside_seeds, regression_model
from regression_lab.errors import FLOAT32_MAX, UsageError
from regression_lab.files import LOG_ROOT, check_writable_dir, lock_dir, newest_checkpoint, reserve_numbered_dir
from regression_lab.metrics import FinalMetrics, report
from regression_lab.models import MAX_SEED
from regression_lab.module import RegressionModule
from regression_lab.notices import quiet_notices

#: Trainer settings unlike Lightning's: the lab's 400 epochs, a GPU if any, validation and loss every 20th epoch.
TRAINER_DEFAULTS = {"accelerator": "auto", "devices": "auto", "max_epochs": 400, "check_val_every_n_epoch": 20,
                    "log_every_n_steps": 20}  # fmt: skip
#: ``--checkpoint.*``: the best by val/loss, every 100 epochs; a resumed run refreshes its files (no best-v1.ckpt).
CHECKPOINT_DEFAULTS = {"monitor": "val/loss", "mode": "min", "save_top_k": 1, "every_n_epochs": 100,
                       "filename": "best-epoch={epoch}-step={step}", "auto_insert_metric_name": False,
                       "enable_version_counter": False}  # fmt: skip
#: ``--last_checkpoint.*``: last.ckpt every 5 s of training (a crash loses at most that), and again at the end.
LAST_CHECKPOINT_DEFAULTS = {"save_top_k": 0, "save_last": True, "train_time_interval": timedelta(seconds=5),
                            "enable_version_counter": False}  # fmt: skip
#: Why 64-true, 16-true and bf16-true (as names or as plugins) are refused.
CONVERTS = "converts the model, not its own float32 inputs: use 32-true (the default), bf16-mixed or 16-mixed"
#: A Trainer argument that takes one object or a list of them (callbacks, plugins), as a list.
listed = lambda value: list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]  # noqa: E731
LOGGER_DEFAULT = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": ".",
                  "name": str(LOG_ROOT), "log_graph": True, "default_hp_metric": False}}  # fmt: skip


class RegressionLabCLI(LightningCLI):
    """LightningCLI with the lab's defaults, checked settings, its own run directories, atomic checkpoints, a report."""

    final_metrics: dict[str, float]
    last_path: str | None = None  #: the run's last.ckpt, once fit has written it

    def __init__(self, *args: Any, command: str = "fit", **kwargs: Any) -> None:
        """LightningCLI's arguments, and ``command``: the one subcommand (fit, validate or test) to parse."""
        self._run_lock: int | None = None  # the run directory this process holds until it returns
        self._command = command
        self._trained_on: tuple[dict[str, Any], str] | None = None  # a checkpoint run on, and its path
        self._chose_version = False  # the run's version_N is this CLI's choice, not a setting
        self._chosen_ckpt: str | None = None  # validate and test without --ckpt_path: which checkpoint they take
        given = kwargs.get("args") or []
        if isinstance(given, dict):  # the Python API's {command: {group: {option: value}}}, as the flags it names
            given = [f"--{g}.{k}" for g, v in given[command].items() for k in (v if isinstance(v, dict) else [""])]
        flags = [str(a).split("=")[0] for a in given if str(a).startswith("-")]
        self._data_given = any(f in ("--data", "--data.csv", "--config", "-c") for f in flags)  # else a checkpoint's
        self._named = {g: {f.split(".", 1)[1] for f in flags if f.startswith(f"--{g}.")} for g in ("model", "data")}
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._run_lock is not None:
                os.close(self._run_lock)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        # Only the command being run: `regression-lab` dispatches it, so other parsers would be built for nothing.
        return {self._command: LightningCLI.subcommands()[self._command]}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Both checkpoint callbacks are option groups (--checkpoint.every_n_epochs 10), added in instantiate_trainer.
        for group, defaults in (("checkpoint", CHECKPOINT_DEFAULTS), ("last_checkpoint", LAST_CHECKPOINT_DEFAULTS)):
            parser.add_class_arguments(ModelCheckpoint, group)
            parser.set_defaults({f"{group}.{k}": v for k, v in defaults.items()})
        parser.set_defaults({"trainer.logger": LOGGER_DEFAULT})
        parser.add_argument("--trajectory_every", type=int | None, default=None,
                            help="keep the weights every N epochs in the run, for landscape --trajectory")  # fmt: skip

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # Checked right after parsing: a bad setting is one line before any file is touched.
        super().parse_arguments(parser, args)
        cfg = self.config[sub] if (sub := self.config.get("subcommand")) else self.config  # run=False: fit's at the top
        for key in ("max_epochs", "check_val_every_n_epoch"):  # Lightning divides by the latter
            if cfg.trainer.get(key) is not None and cfg.trainer[key] < 1:
                raise UsageError(f"trainer.{key} must be >= 1 (or null), got {cfg.trainer[key]}")
        if "spawn" in str(cfg.trainer.get("strategy")):  # a spawned process imports the model's class by name
            raise UsageError(f"--trainer.strategy {cfg.trainer.strategy}: the processes it spawns cannot rebuild the "
                             "model LightningCLI makes from regression_model; use ddp")  # fmt: skip
        if str(cfg.trainer.get("precision")) in ("64-true", "64", "16-true", "bf16-true"):
            raise UsageError(f"--trainer.precision {cfg.trainer.precision} {CONVERTS}")
        refuse_counts_beside_seeds(self._named["model"], (cfg.get("model") or {}).get("seeds"))  # named at defaults too
        if type(seed := cfg.get("seed_everything")) is int and not 0 <= seed <= MAX_SEED:  # a bool is no seed
            raise UsageError(f"seed_everything must be in [0, {MAX_SEED}], got {seed}")
        self._new_fit = sub in ("fit", None) and not cfg.get("ckpt_path") and not cfg.trainer.get("fast_dev_run")
        for group in ("checkpoint", "last_checkpoint"):
            files.check_checkpoint_dir((cfg.get(group) or {}).get("dirpath"), f"--{group}.dirpath", self._new_fit)
        if cfg.get("weights_only") is False:
            raise UsageError("--weights_only false is not allowed: checkpoints load with weights_only=True")
        if "weights_only" in cfg:  # whatever Lightning's default, never unpickle objects
            cfg.weights_only = True
        logger = self._logger_args(cfg)
        if logger is not None and cfg.trainer.get("default_root_dir") and logger.save_dir == ".":  # as Lightning's
            logger.save_dir = str(cfg.trainer.default_root_dir)
        if logger is not None and logger.save_dir:  # Lightning expands ~ and $VAR in the logs' path only
            logger.save_dir = os.path.expandvars(os.path.expanduser(logger.save_dir))
        if isinstance(ckpt := cfg.get("ckpt_path"), str) and not ckpt.strip():
            raise UsageError(files.EMPTY_CKPT_PATH)
        if sub == "fit" and ckpt == "last":
            ckpt = newest_checkpoint(self._log_root(cfg), name="last.ckpt")  # always in a version_N run
            self._lock(ckpt.parent.parent)  # before its config.yaml or events are touched
            if logger is not None and logger.get("version") is None:
                logger.version = int(ckpt.parent.parent.name.removeprefix("version_"))  # its curves go on
                self._chose_version = True
        elif sub in ("validate", "test") and not ckpt:
            ckpt = newest_checkpoint(self._log_root(cfg))
            self._chosen_ckpt = f"{sub}: using the newest checkpoint {ckpt}"  # said once every setting is checked
        if ckpt:
            _, checkpoint = load_model(ckpt)  # a missing, corrupt, foreign or crafted file, by name
            cfg.ckpt_path = str(ckpt)
            self._check_against(cfg, checkpoint, ckpt, sub)
            self._trained_on = (checkpoint, str(ckpt))
            # The data the run was trained on, but for the --data.* options given (another source: none of it).
            saved = checkpoint.get("datamodule_hyper_parameters")
            if isinstance(saved, dict) and cfg.get("data") is not None and not self._data_given:
                for key in DATA_DEFAULTS.keys() & saved.keys() - self._named["data"]:
                    cfg.data[key] = saved[key]
        # The line's settings beside a file, even named at their defaults (split settings: the DataModule's, by value).
        refuse_ignored(set(LINE_SETTINGS) & self._named["data"], (cfg.get("data") or {}).get("csv"), None)

    def _check_against(self, cfg: Any, checkpoint: dict[str, Any], ckpt: Any, sub: str) -> None:
        """Refuse a run on a checkpoint that cannot run, or that would not do what was asked."""
        if sub == "fit" and (problem := resume_problem(checkpoint)) is not None:
            raise UsageError(f"refusing to resume from {ckpt}: it {problem}")
        if "pytorch-lightning_version" not in checkpoint or not isinstance(checkpoint.get("loops", {}), dict):
            raise UsageError(f"{ckpt} lacks Lightning's bookkeeping (pytorch-lightning_version, loops): {sub} cannot "
                             "use it; predict and export read its weights")  # fmt: skip
        epoch, max_epochs = checkpoint.get("epoch"), cfg.trainer.get("max_epochs")
        if sub == "fit" and isinstance(epoch, int) and max_epochs is not None and max_epochs < epoch:
            raise UsageError(f"{ckpt} has trained {epoch} epochs: --trainer.max_epochs must be >= {epoch} to "
                             f"resume it (now {max_epochs})")  # fmt: skip
        # LightningCLI rebuilds the model from the checkpoint whatever --model.* says: a contradicting change fails.
        saved = checkpoint.get("hyper_parameters") or {}
        default = {k: p.default for k, p in inspect.signature(regression_model).parameters.items()}
        for key, value in (cfg.get("model") or {}).items():
            was = saved.get(key, default.get(key))  # one MyNN's checkpoint has no num_seeds: it had the default
            if listed(value) != listed(was) and (key in self._named["model"] or value != default.get(key)):  # 8 is [8]
                what = "a resumed run: start a new one without --ckpt_path" if sub == "fit" else "its model"
                raise UsageError(f"{ckpt} was trained with model.{key}={was!r}; --model.{key} {value!r} "
                                 f"cannot change {what}")  # fmt: skip

    @staticmethod
    def _logger_args(cfg: Any) -> Any:
        """The configured TensorBoard-like logger's init_args (save_dir, name, version), if any."""
        init = getattr(cfg.trainer.get("logger"), "init_args", None)
        return init if init is not None and all(k in init for k in ("save_dir", "name", "version")) else None

    @classmethod
    def _log_root(cls, cfg: Any) -> Path:
        init = cls._logger_args(cfg)
        return Path(init.save_dir or ".") / (init.name or "") if init is not None else LOG_ROOT

    def _lock(self, run_dir: Path) -> None:
        """Hold ``run_dir`` while writing there (rank 0): another ``fit --ckpt_path last`` of it is refused."""
        if rank_zero_only.rank == 0 and self._run_lock is None:
            busy = f"{run_dir} is in use by another fit (training or resuming it now): wait until it ends"
            self._run_lock = lock_dir(run_dir, busy=busy)

    def instantiate_classes(self) -> None:
        # This run's version_N is reserved now (an atomic mkdir), so runs started together get their own; by rank 0.
        cfg, made = self.config[self.subcommand] if self.subcommand else self.config, []
        init, quick = self._logger_args(cfg), cfg.trainer.get("fast_dev_run")  # quick: a test run, no run directory
        fresh = init is not None and init.get("version") is None and not quick  # validate and test write config there
        self.save_config_callback = self.save_config_callback if fresh or self.subcommand in ("fit", None) else None
        if fresh and rank_zero_only.rank == 0:
            check_writable_dir(root := self._log_root(cfg), "logs")
            made = [p for p in (root, *root.parents) if not p.exists()]  # the log root and its parents made here
            made.insert(0, reserved := reserve_numbered_dir(root))
            init.version = int(reserved.name.removeprefix("version_"))
            self._chose_version = True
            self._lock(reserved)
        elif self._new_fit:
            # A version given, or no logger at all: Lightning writes config.yaml and checkpoints/ into default_root_dir.
            run = Path(cfg.trainer.get("default_root_dir") or ".").expanduser() if cfg.trainer.logger is False else None
            run = self._log_root(cfg) / (v if isinstance(v := init.version, str) else f"version_{v}") if init else run
            if run is not None and ((run / "checkpoints").exists() or (run / "config.yaml").exists()):
                raise UsageError(f"{run} holds a run, which a new fit would overwrite: resume it with --ckpt_path, or "
                                 "write elsewhere (no logger version, another --trainer.default_root_dir)")  # fmt: skip
        try:
            super().instantiate_classes()
            if self._chose_version:  # the logger has it: the run's config.yaml, reused with --config, makes a new run
                init.version = None
            if cfg.get("ckpt_path") and self.subcommand in ("fit", None):  # the fit has it: config.yaml won't resume
                cfg.ckpt_path = None
            if isinstance(self.model, EnsembleRegressionModule) and self.datamodule is not None:
                self.model.check_memory(self.datamodule)  # before anything is written
            probe = float(self.model.hparams.probe_x)
            line = getattr(self.datamodule, "line_at", float)(probe)
            if line is not None and not abs(line) <= FLOAT32_MAX:
                raise UsageError(f"--model.probe_x {probe:g}: the line's value there, {line:g}, is past float32's "
                                 "range")  # fmt: skip
        except BaseException:
            for path in made:  # bad settings found while building: no empty run or directory left behind
                with contextlib.suppress(OSError):  # one another process has written to stays
                    path.rmdir()
            raise

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        if self._trained_on is not None and isinstance(self.datamodule, RegressionDataModule):
            self.datamodule.check_source(*self._trained_on)  # the same file, unchanged: before the Trainer says a word
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        callbacks = listed(cfg["trainer"].get("callbacks"))
        self._final = next((c for c in callbacks if isinstance(c, FinalMetrics)), None) or FinalMetrics()
        callbacks += [Guard()] + ([self._final] if self._final not in callbacks else [])
        writes = cfg["trainer"].get("enable_checkpointing") is not False and not cfg["trainer"].get("fast_dev_run")
        self._last = cfg["last_checkpoint"] if writes else None  # a test run: its save_last would write at the end
        callbacks += [cfg["checkpoint"], self._last] if self._last is not None else []
        if cfg.get("trajectory_every") is not None and not cfg["trainer"].get("fast_dev_run"):
            if not isinstance(self.model, RegressionModule):  # before any file is written
                raise UsageError("--trajectory_every keeps one network's weights: not an ensemble's")
            callbacks.append(Trajectory(cfg["trajectory_every"]))
        for cb in callbacks:  # before the run's directory holds a file
            if isinstance(cb, LandscapeLogger) and (why := cb.problem(self.model, cfg["trainer"].get("logger"))):
                raise UsageError(why)
        bar = not any(isinstance(c, ProgressBar) for c in callbacks)  # the user's own, or the run's
        callbacks += [RunProgressBar()] if bar and cfg["trainer"].get("enable_progress_bar") is not False else []
        plugins = listed(cfg["trainer"].get("plugins"))
        plugins += [] if any(isinstance(p, CheckpointIO) for p in plugins) else [AtomicCheckpointIO()]
        if converting := next((p for p in plugins if isinstance(p, (DoublePrecision, HalfPrecision))), None):
            raise UsageError(f"--trainer.plugins {type(converting).__name__} {CONVERTS}")
        for cb in callbacks if self.subcommand in ("fit", None) else []:  # Lightning finds out at the first save
            if isinstance(cb, ModelCheckpoint) and cb.monitor not in (None, *(names := self.model.monitored())):
                raise UsageError(f"--checkpoint.monitor {cb.monitor!r} is not a metric this model logs: {names}")
        trainer = super().instantiate_trainer(**{"callbacks": callbacks, "plugins": plugins, **kwargs})
        if self._chosen_ckpt is not None:
            print(self._chosen_ckpt, file=sys.stderr)
        return trainer

    def fit(self, **kwargs: Any) -> None:
        """``trainer.fit``; SIGINT and SIGTERM stop it at the next batch end (see :class:`Guard`)."""
        seed = self.config["fit"].get("seed_everything")
        if self.trainer.logger is not None and isinstance(seed, int):
            self.trainer.logger.log_hyperparams({"seed_everything": seed})  # hparams.yaml, the HParams tab
        try:
            with errors.deferred():
                self.trainer.fit(**kwargs)
        except errors.Interrupted:  # SIGINT ends the fit, SIGTERM raises out of it (Lightning), at a batch end
            if not errors.forced():  # a second signal stops anywhere (mid-step, mid-restore): no save then
                self.save_last_checkpoint()
            raise

    def save_last_checkpoint(self) -> str | None:
        """Write the run's last.ckpt as of now (timed saves can be an interval old); its path, if the run has one."""
        last = os.path.join(self._last.dirpath, "last.ckpt") if self._last is not None and self._last.dirpath else None
        if last is not None:  # weights_only=False is the save flag: optimizer and loop states too
            self.trainer.save_checkpoint(last, weights_only=False)
        return last

    def after_fit(self) -> None:
        """Write the final last.ckpt, and report what the lab asks and where the weights are."""
        # A resumed run that had nothing left to train never reached on_train_end.
        self.final_metrics = self._final.metrics or self._final.compute(self.trainer, self.model)
        self.last_path = self.save_last_checkpoint()  # for the Python API
        if self.trainer.is_global_zero:
            report(self.model, self.trainer, self.datamodule, self.final_metrics, self.last_path)


def cli_main(args: list[str] | dict[str, Any], run: bool = True) -> RegressionLabCLI:
    """Build the CLI for ``args`` (``[command, *options]``, or ``{command: {option: value}}``) and run it; with
    ``run=False``, ``args`` are fit's options and the caller runs the fit."""
    kwargs = {"exit_on_error": False, "prog": "regression-lab", "allow_abbrev": False}
    command = "fit" if not run else args[0] if isinstance(args, list) else next(iter(args))
    if run and isinstance(args, dict):  # named: jsonargparse does not infer a command whose groups are all empty
        args = {"subcommand": command, **args}
    with quiet_notices():
        return RegressionLabCLI(
            regression_model,  # one MyNN, or an ensemble of them with --model.num_seeds N
            RegressionDataModule,
            seed_everything_default=0,  # not a random one: the lab's numbers (README, "Seeds", says why not 42)
            trainer_defaults=TRAINER_DEFAULTS,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},  # a resumed run writes its config.yaml again
            parser_kwargs={**kwargs, command: dict(kwargs)},
            args=args,
            run=run,
            command=command,
        )
