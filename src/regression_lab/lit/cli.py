"""Training subcommands (``fit``, ``validate``, ``test``) through ``LightningCLI``.

Defaults live here, in code, so ``regression-lab fit`` reproduces the lab from any directory;
``configs/default.yaml`` writes the same defaults out. Run it::

    regression-lab fit                                   # the lab: hidden 5, lr 0.01, 400 epochs
    regression-lab fit --model.hidden_size 8 --trainer.max_epochs 200
    regression-lab fit --config configs/default.yaml --print_config
    regression-lab fit --ckpt_path last                  # resume the newest run
    regression-lab test --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt

Tests call :func:`cli_main` in-process with a list of arguments.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from regression_lab.core import interrupts
from regression_lab.core.checkpoints import DEFAULT_LOG_ROOT, load_model, newest_checkpoint, reserve_numbered_dir
from regression_lab.core.ensemble import MAX_SEED
from regression_lab.core.errors import TrainingFailed, UsageError
from regression_lab.core.safe_io import lock_dir
from regression_lab.lit.callbacks import (
    AtomicCheckpointIO,
    DivergenceGuard,
    FinalMetrics,
    RunProgressBar,
    StopOnSignal,
    divergence_advice,
)
from regression_lab.lit.data import RegressionDataModule
from regression_lab.lit.ensemble import EnsembleRegressionModule, regression_model
from regression_lab.lit.ensemble_metrics import EnsembleMetrics

#: Trainer settings that differ from Lightning's own defaults (README, "fit: train").
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": "auto",
    "max_epochs": 400,
    # A validation pass costs about 50 lab epochs of plain PyTorch; every 20th epoch still
    # draws a 20-point validation curve.
    "check_val_every_n_epoch": 20,
    # The logger writes the training loss every 20th step: in the lab, at the same epochs as
    # the validation curve's 20 points.
    "log_every_n_steps": 20,
}

#: The best checkpoint by val/loss, considered every 100 epochs (a write costs tens of lab epochs).
CHECKPOINT_DEFAULTS: dict[str, Any] = {
    "monitor": "val/loss",
    "mode": "min",
    "save_top_k": 1,
    "every_n_epochs": 100,
    "filename": "best-epoch={epoch}-step={step}",
    "auto_insert_metric_name": False,
    # A resumed run must refresh its files, not start best-v1.ckpt beside them.
    "enable_version_counter": False,
}

#: last.ckpt: refreshed every 5 s of training (a crash loses at most that much), and written
#: again when training ends, so it always holds the final weights.
LAST_CHECKPOINT_DEFAULTS: dict[str, Any] = {
    "save_top_k": 0,
    "save_last": True,
    "train_time_interval": timedelta(seconds=5),
    "enable_version_counter": False,
}

#: Lightning's advice that one-batch epochs are fewer than log_every_n_steps: the interval counts
#: steps across epochs, so the lab's loss is still written every 20th step.
_LOG_INTERVAL_NOTICE = r".*smaller than the logging interval.*"
#: Lightning 2.6's own CombinedLoader calls a pytree API that torch 2.13 deprecates, on every
#: fit: Lightning's debt, which no setting of this project can change.
_LIGHTNING_PYTREE_NOTICE = r".*isinstance\(treespec, LeafSpec\).*"


@contextlib.contextmanager
def lightning_notices_ignored() -> Iterator[None]:
    """Within the block, Lightning's two notices that say nothing about this project's settings
    (above) are not shown; every other warning is. ``cli_main`` fits inside it; so should a
    caller that runs ``trainer.fit`` itself (``run=False``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LOG_INTERVAL_NOTICE)
        warnings.filterwarnings("ignore", message=_LIGHTNING_PYTREE_NOTICE, category=FutureWarning)
        yield


class RegressionLabCLI(LightningCLI):
    """LightningCLI with the lab's defaults, safe checkpoints and a closing report.

    After ``fit``, :attr:`final_metrics` holds the trained model's final losses and prediction
    (see :class:`~regression_lab.lit.callbacks.FinalMetrics`).
    """

    final_metrics: dict[str, float]

    def __init__(self, *args: Any, callbacks: list[L.Callback] | None = None, **kwargs: Any) -> None:
        """LightningCLI's arguments, plus ``callbacks``: callback objects to add to the Trainer,
        for a caller that holds state no command line can carry (a sweep's Optuna trial)."""
        self._extra_callbacks = list(callbacks or [])
        # A running subcommand holds its run directory (see _lock_run) until it returns.
        self._lock_runs = kwargs.get("run", True)
        self._run_lock: int | None = None
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._run_lock is not None:
                os.close(self._run_lock)
                self._run_lock = None

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # `predict` is the light, Lightning-free command in regression_lab.commands.predict.
        return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "validate", "test")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Both checkpoint callbacks are option groups (--checkpoint.every_n_epochs 10); they are
        # added to the Trainer in instantiate_trainer, unless checkpointing is turned off.
        parser.add_class_arguments(ModelCheckpoint, "checkpoint")
        parser.set_defaults({f"checkpoint.{k}": v for k, v in CHECKPOINT_DEFAULTS.items()})
        parser.add_class_arguments(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({f"last_checkpoint.{k}": v for k, v in LAST_CHECKPOINT_DEFAULTS.items()})
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": "regression_lab.lit.loggers.TensorBoardLogger",
                    "init_args": {
                        "save_dir": ".",
                        "name": str(DEFAULT_LOG_ROOT),
                        "log_graph": True,
                        "default_hp_metric": False,
                    },
                }
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # Settings are checked right after parsing, so a bad one is one clear line before any
        # file is read or written. (Warning filters set here last until cli_main returns.)
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        if sub is None:
            return
        cfg = self.config[sub]
        max_epochs = cfg.trainer.get("max_epochs")
        if max_epochs is not None and max_epochs < 1:
            raise UsageError(f"trainer.max_epochs must be >= 1, got {max_epochs}")
        seed = cfg.get("seed_everything")
        if not isinstance(seed, bool) and isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
            # seed_everything seeds numpy too, which takes 32 bits.
            raise UsageError(f"seed_everything must be in [0, {MAX_SEED}], got {seed}")
        for group in ("checkpoint", "last_checkpoint"):
            dirpath = cfg.get(group, {}).get("dirpath") if cfg.get(group) is not None else None
            if dirpath is not None and Path(dirpath).exists() and not Path(dirpath).is_dir():
                raise UsageError(f"--{group}.dirpath is a file, not a directory: {dirpath}")
        # --trainer.default_root_dir moves the logs as it does with Lightning's own default logger
        # (DIR/lightning_logs/version_N): the project's logger sets save_dir, which would
        # otherwise win silently. A save_dir the user set still wins, as in Lightning.
        root_dir, init = cfg.trainer.get("default_root_dir"), self._logger_args(cfg)
        if root_dir is not None and init is not None and init.get("save_dir") == ".":
            init.save_dir = str(root_dir)
        # Never unpickle arbitrary objects from a checkpoint, whatever was asked.
        if "weights_only" in cfg:
            if cfg.weights_only is False:
                raise UsageError("--weights_only false is not allowed: checkpoints load with weights_only=True")
            cfg.weights_only = True
        ckpt = cfg.get("ckpt_path")
        if sub == "fit" and ckpt == "last":
            ckpt = newest_checkpoint(self._log_root(cfg), name="last.ckpt")
            if ckpt.parent.parent.name.startswith("version_"):
                self._lock_run(ckpt.parent.parent)  # before its config.yaml or events are touched
            self._resume_into_run(cfg, ckpt)
            # Resuming continues the run's own checkpoint directory: of course it is not empty.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        elif sub in ("validate", "test") and not ckpt:
            ckpt = newest_checkpoint(self._log_root(cfg))
            print(f"{sub}: using the newest checkpoint {ckpt}", file=sys.stderr)
        if sub in ("validate", "test"):
            # They log into a run of their own; the checkpoint's callback state for its training
            # run's directory does not apply there, which Lightning points out.
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
        if ckpt:
            _, checkpoint = load_model(ckpt)  # refuses a missing, corrupt, foreign or crafted file by name
            cfg.ckpt_path = str(ckpt)
            if sub == "fit":
                # Checked now, before the run's config.yaml and event files are touched.
                self._check_resume(cfg, checkpoint, ckpt)

    @staticmethod
    def _check_resume(cfg: Any, checkpoint: dict[str, Any], ckpt: Any) -> None:
        """Refuse a resume that cannot run or would silently not do what was asked."""
        epoch = checkpoint.get("epoch")
        max_epochs = cfg.trainer.get("max_epochs")
        if isinstance(epoch, int) and max_epochs is not None and max_epochs < epoch:
            raise UsageError(
                f"{ckpt} has trained {epoch} epochs: --trainer.max_epochs must be >= {epoch} to resume it "
                f"(now {max_epochs})"
            )
        # LightningCLI rebuilds the model from the checkpoint's hyperparameters, whatever --model.*
        # says: a setting changed from its default that the checkpoint contradicts is refused.
        saved = checkpoint.get("hyper_parameters") or {}
        defaults = {k: p.default for k, p in inspect.signature(regression_model).parameters.items()}
        for key, value in (cfg.get("model") or {}).items():
            if key in saved and value != saved[key] and value != defaults.get(key, value) and key != "first_seed":
                raise UsageError(
                    f"{ckpt} was trained with model.{key}={saved[key]!r}; --model.{key} {value!r} cannot change a "
                    "resumed run: start a new one without --ckpt_path"
                )

    @staticmethod
    def _logger_args(cfg: Any) -> Any:
        """The configured logger's init_args (save_dir, name, version), if it has them."""
        logger = cfg.trainer.get("logger")
        init = getattr(logger, "init_args", None) if logger not in (None, True, False) else None
        return init if init is not None and "save_dir" in init and "version" in init else None

    @classmethod
    def _log_root(cls, cfg: Any) -> Path:
        init = cls._logger_args(cfg)
        if init is not None and init.get("save_dir") is not None:
            return Path(init.save_dir) / (init.get("name") or "")
        return DEFAULT_LOG_ROOT

    @classmethod
    def _resume_into_run(cls, cfg: Any, ckpt: Path) -> None:
        """Log a resumed run into the run directory it came from, so its curves continue."""
        init = cls._logger_args(cfg)
        run_dir = ckpt.parent.parent
        if init is not None and run_dir.name.startswith("version_") and init.get("version") is None:
            init.version = int(run_dir.name.split("_", 1)[1])

    def _reserve_run_dir(self) -> Path | None:
        """Create this run's ``version_N`` directory now, atomically, and pin the logger to it.

        Two runs started together would otherwise both pick the same next version and write
        into one directory. ``mkdir`` fails for the second, which takes the next number. Only
        rank 0 (as the launchers set it) reserves; the other ranks of a DDP run do not log.
        """
        cfg = self.config[self.subcommand]
        init = self._logger_args(cfg)
        if init is None or init.get("version") is not None or rank_zero_only.rank != 0:
            return None
        root = self._log_root(cfg)
        try:
            root.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=root).close()  # a write probe: permissions, read-only disks
        except OSError as err:
            raise UsageError(f"cannot write logs under {root}: {err.strerror or err}") from None
        run = reserve_numbered_dir(root, "version_")
        init.version = int(run.name.split("_", 1)[1])
        self._lock_run(run)
        return run

    def _lock_run(self, run_dir: Path) -> None:
        """Hold ``run_dir`` for this process while the subcommand runs: a second ``fit
        --ckpt_path last`` of a run that is training (or being resumed) is refused instead of
        writing into the same directory. Only rank 0 holds it (the other ranks do not log)."""
        if not self._lock_runs or rank_zero_only.rank != 0 or self._run_lock is not None:
            return
        try:
            self._run_lock = lock_dir(run_dir)
        except BlockingIOError:
            raise UsageError(
                f"{run_dir} is in use by another fit (training or resuming it now): wait until it ends"
            ) from None
        except OSError as err:
            raise UsageError(f"cannot open the run directory {run_dir}: {err.strerror or err}") from None

    def instantiate_classes(self) -> None:
        reserved = self._reserve_run_dir() if self.subcommand else None
        try:
            super().instantiate_classes()
            if isinstance(self.model, EnsembleRegressionModule) and self.datamodule is not None:
                self.model.check_memory(self.datamodule)  # before anything is written
        except BaseException:
            # Bad settings found while building the model or data: leave no empty run behind.
            if reserved is not None:
                with contextlib.suppress(OSError):
                    reserved.rmdir()
            raise

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_cfg = cfg["trainer"]
        callbacks = [*(trainer_cfg.get("callbacks") or []), *self._extra_callbacks, DivergenceGuard()]
        # The final metrics: an ensemble's per member (unless the user brought a configured one).
        brought = [c for c in callbacks if isinstance(c, FinalMetrics)]
        if brought:
            self._final = brought[0]
        else:
            self._final = EnsembleMetrics() if isinstance(self.model, EnsembleRegressionModule) else FinalMetrics()
            callbacks.append(self._final)
        # One training bar over the whole run, unless the bar is off or the user brought one.
        if trainer_cfg.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            callbacks.append(RunProgressBar())
        # --trainer.enable_checkpointing false turns the --checkpoint.* callbacks off too.
        self._last_checkpoint: ModelCheckpoint | None = None
        if trainer_cfg.get("enable_checkpointing") is not False:
            self._last_checkpoint = cfg["last_checkpoint"]
            callbacks += [cfg["checkpoint"], self._last_checkpoint]
        # Checkpoints are written beside their final name and renamed into place.
        plugins = trainer_cfg.get("plugins")
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else ([plugins] if plugins else [])
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        return super().instantiate_trainer(**{"callbacks": callbacks, "plugins": plugins, **kwargs})

    def before_fit(self) -> None:
        # The seed belongs with the run's hyperparameters (hparams.yaml, the HParams tab).
        seed = self.config["fit"].get("seed_everything")
        if self.trainer.logger is not None and not isinstance(seed, bool) and seed is not None:
            self.trainer.logger.log_hyperparams({"seed_everything": seed})

    def after_fit(self) -> None:
        """Write the final last.ckpt, and report what the lab asks for and where the weights are."""
        # A resumed run that had nothing left to train never reached on_train_end.
        self.final_metrics = dict(self._final.metrics) or self._final.compute(self.trainer, self.model)
        last = self._last_checkpoint
        last_path = None
        if last is not None and last.dirpath is not None:
            # Timed saves can be up to an interval old: last.ckpt gets the final weights now.
            last_path = os.path.join(last.dirpath, f"{last.CHECKPOINT_NAME_LAST}{last.FILE_EXTENSION}")
            # weights_only=False is a save flag: optimizer and loop state too, so it resumes (every
            # load stays torch.load(..., weights_only=True), core.checkpoints.load_model).
            self.trainer.save_checkpoint(last_path, weights_only=False)
        if not self.trainer.is_global_zero or interrupts.requested() is not None:
            return  # stopped by a signal: last.ckpt is written, the command says the rest
        if isinstance(self.model, EnsembleRegressionModule):
            self._report_ensemble()
        else:
            self._report_single()
        if last_path is not None:
            print(f"Checkpoint: {last_path}")
        best = self.trainer.checkpoint_callback
        if best is not None and best.best_model_path:
            print(f"Best checkpoint ({best.monitor}): {best.best_model_path}")
        logger = self.trainer.logger
        if isinstance(logger, TensorBoardLogger):
            print(f"TensorBoard logs: {logger.log_dir}  (tensorboard --logdir {Path(logger.log_dir).parent})")
        if (
            isinstance(self.model, EnsembleRegressionModule)
            and self.final_metrics["diverged"] == self.final_metrics["members"]
        ):
            raise TrainingFailed(
                f"every member of the ensemble diverged; {divergence_advice(self.model, self.datamodule)}"
            )

    def _report_single(self) -> None:
        model = self.model
        print(f"Model prediction for {model.hparams.probe_x:g} is {self.final_metrics['prediction']:.4f}")
        train_x = getattr(self.datamodule, "train_x", None)
        if train_x is not None and model.active_units(train_x) == 0:
            # A too-large step can push every ReLU unit off all the data (lr 0.05-1 does in the
            # lab): the loss stops falling, nothing diverges, and the fit is flat.
            print(
                "warning: every hidden ReLU unit is off on all training inputs (dead): no gradient "
                "reaches them and the fit is flat over the training data; "
                f"{divergence_advice(model, self.datamodule)}; or try another --seed_everything",
                file=sys.stderr,
            )

    def _report_ensemble(self) -> None:
        m = self.final_metrics
        members, diverged = int(m["members"]), int(m["diverged"])
        print(
            f"Ensemble prediction for {self.model.hparams.probe_x:g} is {m['prediction']:.4f} ± "
            f"{m['prediction_std']:.4f} (mean ± std over {members - diverged} members)"
        )
        if diverged:
            advice = divergence_advice(self.model, self.datamodule)
            print(f"warning: {diverged} of {members} members diverged and were left out; {advice}", file=sys.stderr)
        final = self._final.snapshots.get(self.trainer.current_epoch, {})
        units = final.get("active_units")
        if units is not None:
            dead = int(((units == 0) & ~final["diverged"]).sum())
            if dead:
                print(f"warning: {dead} of {members} members have every hidden ReLU unit dead (a flat fit)",
                      file=sys.stderr)  # fmt: skip


def cli_main(
    args: ArgsType = None,
    run: bool = True,
    datamodule_class: type[L.LightningDataModule] = RegressionDataModule,
    callbacks: list[L.Callback] | None = None,
    stop_on_signals: bool = False,
) -> RegressionLabCLI:
    """Build the CLI and run its subcommand; ``args`` is a list as on the command line.

    With ``run=False`` there are no subcommands: ``args`` are fit's options, and the caller
    runs ``cli.trainer.fit(cli.model, datamodule=cli.datamodule)`` itself. ``callbacks`` are
    added to the Trainer as they are (e.g. an ``EnsembleMetrics`` the caller reads afterwards).
    ``stop_on_signals`` adds :class:`~regression_lab.lit.callbacks.StopOnSignal`, for a caller
    that runs inside :func:`~regression_lab.core.interrupts.interruptible` (the command line).
    """
    if stop_on_signals:
        callbacks = [*(callbacks or []), StopOnSignal()]
    with lightning_notices_ignored():
        return RegressionLabCLI(
            # One MyNN, or an ensemble of them with --model.num_seeds N (see regression_model).
            regression_model,
            datamodule_class,
            # With seed 42 the lab's init leaves one ReLU unit switched off on x <= 5 but on at
            # x = 10, so the prediction for 10 is 32.27 despite a training loss of 3e-8 (README, "Seeds").
            seed_everything_default=0,
            trainer_defaults=TRAINER_DEFAULTS,
            auto_configure_optimizers=False,
            # A resumed run writes its config into the same run directory again.
            save_config_kwargs={"overwrite": True},
            # Errors come back as exceptions, so the entry point prints one line and exits 2.
            parser_kwargs={"exit_on_error": False, "prog": "regression-lab"},
            args=args,
            run=run,
            callbacks=callbacks,
        )


if __name__ == "__main__":  # pragma: no cover
    cli_main()
