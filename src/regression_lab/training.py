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
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from regression_lab.callbacks import AtomicCheckpointIO, RunCheckpoint, RunProgressBar
from regression_lab.checkpoints import DEFAULT_LOG_ROOT, load_mynn, newest_checkpoint, reserve_numbered_dir
from regression_lab.data import RegressionDataModule
from regression_lab.errors import UsageError
from regression_lab.module import RegressionModule

# The lab has one batch per epoch; Lightning warns that this is fewer than log_every_n_steps,
# but the interval counts steps across epochs, so the loss is still written every 20th step.
# The pytree notice is Lightning's own deprecation debt with newer torch: nothing to act on.
warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# validate/test log into a new run directory; the checkpoint's callback state for the old one
# is irrelevant there, and fit resumes into the run it came from.
warnings.filterwarnings("ignore", message=r".*The dirpath has changed from.*")


class _DropAdverts(logging.Filter):
    """Keep Lightning's informative lines (seed, accelerator), drop its product tips."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("\N{ELECTRIC LIGHT BULB}")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdverts())

#: Trainer settings that differ from Lightning's own defaults (README, "fit: train").
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": "auto",
    "max_epochs": 400,
    # A validation pass costs about 50 lab epochs of plain PyTorch; every 20th epoch still
    # draws a 20-point validation curve.
    "check_val_every_n_epoch": 20,
    # A logged step costs about 1 ms (self.log and the logger's write, measured), several lab
    # steps: the training loss is logged every 20th step, in the lab at the same epochs as the
    # validation curve's 20 points.
    "log_every_n_steps": 20,
}

#: Checkpointing: the best by val/loss considered every 100 epochs (a checkpoint write costs
#: tens of lab epochs), and last.ckpt at those saves, every 5 s of training and at the end.
CHECKPOINT_DEFAULTS: dict[str, Any] = {
    "monitor": "val/loss",
    "mode": "min",
    "save_top_k": 1,
    "save_last": True,
    "every_n_epochs": 100,
    "last_every_seconds": 5.0,
    # A resumed run must refresh last.ckpt, not start last-v1.ckpt beside it (Lightning's
    # counter does that when the callback's saved state does not match, e.g. other settings).
    "enable_version_counter": False,
    "filename": "best-epoch={epoch}-step={step}",
    "auto_insert_metric_name": False,
}


class RegressionLabCLI(LightningCLI):
    """LightningCLI with the lab's defaults, safe checkpoint handling and a closing report."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # `predict` is the light, Lightning-free command in regression_lab.predict.
        return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "validate", "test")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # ModelCheckpoint as its own group makes it configurable: --checkpoint.every_n_epochs 10.
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({f"checkpoint.{k}": v for k, v in CHECKPOINT_DEFAULTS.items()})
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
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
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        if sub is None:
            return
        cfg = self.config[sub]
        max_epochs = cfg.trainer.get("max_epochs")
        if max_epochs is not None and max_epochs < 1:
            raise UsageError(f"trainer.max_epochs must be >= 1, got {max_epochs}")
        # Never unpickle arbitrary objects from a checkpoint, whatever was asked.
        if "weights_only" in cfg:
            if cfg.weights_only is False:
                raise UsageError("--weights_only false is not allowed: checkpoints load with weights_only=True")
            cfg.weights_only = True
        ckpt = cfg.get("ckpt_path")
        if sub == "fit" and ckpt == "last":
            ckpt = newest_checkpoint(self._log_root(cfg), name="last.ckpt")
            self._resume_into_run(cfg, ckpt)
        elif sub in ("validate", "test") and not ckpt:
            ckpt = newest_checkpoint(self._log_root(cfg))
            print(f"{sub}: using the newest checkpoint {ckpt}", file=sys.stderr)
        if ckpt:
            # Check the file here, with a clear error, before Lightning reads it.
            load_mynn(ckpt)
            cfg.ckpt_path = str(ckpt)

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
        the launching process (rank 0) reserves; the other ranks of a DDP run do not log.
        """
        cfg = self.config[self.subcommand]
        init = self._logger_args(cfg)
        if init is None or init.get("version") is not None or _launch_rank() != 0:
            return None
        root = self._log_root(cfg)
        try:
            root.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=root).close()  # a write probe: permissions, read-only disks
        except OSError as err:
            raise UsageError(f"cannot write logs under {root}: {err.strerror or err}") from None
        run = reserve_numbered_dir(root, "version_")
        init.version = int(run.name.split("_", 1)[1])
        return run

    def instantiate_classes(self) -> None:
        reserved = self._reserve_run_dir() if self.subcommand else None
        try:
            super().instantiate_classes()
        except BaseException:
            # Bad settings found while building the model or data: leave no empty run behind.
            if reserved is not None:
                with contextlib.suppress(OSError):
                    reserved.rmdir()
            raise

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        # --trainer.enable_checkpointing false turns off the --checkpoint.* callback too.
        if cfg.get("enable_checkpointing") is False:
            extra = [c for c in extra if not isinstance(c, ModelCheckpoint)]
        # One bar over the whole run instead of Lightning's bar per epoch, unless the user
        # turned the bar off or brought their own.
        given = list(cfg.get("callbacks") or [])
        if cfg.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            extra.append(RunProgressBar())
        # Checkpoints are written beside their final name and renamed into place.
        plugins = cfg.get("plugins")
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else ([plugins] if plugins else [])
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            cfg["plugins"] = [*plugins, AtomicCheckpointIO()]
        return self._instantiate_trainer(cfg, extra)

    def before_fit(self) -> None:
        # The seed belongs with the run's hyperparameters (hparams.yaml, the HParams tab).
        seed = self.config["fit"].get("seed_everything")
        if self.trainer.logger is not None and not isinstance(seed, bool) and seed is not None:
            self.trainer.logger.log_hyperparams({"seed_everything": seed})

    def after_fit(self) -> None:
        """Report what the lab asks for: the prediction for probe_x, and where the weights are."""
        if not self.trainer.is_global_zero:
            return
        model: RegressionModule = self.model
        x = model.hparams.probe_x
        print(f"Model prediction for {x:g} is {model.predict_value(x):.4f}")
        if model.active_units() == 0:
            # A too-large step can push every ReLU unit off all the data (lr 0.05-1 does in the
            # lab): the loss stops falling, nothing diverges, and the fit is flat.
            print(
                "warning: every hidden ReLU unit is off on all training inputs (dead): no gradient "
                "reaches them and the fit is flat over the training data; lower --model.lr "
                f"(now {model.hparams.lr:g}) or try another --seed_everything",
                file=sys.stderr,
            )
        cb = self.trainer.checkpoint_callback
        if cb is not None and cb.last_model_path:
            print(f"Checkpoint: {cb.last_model_path}")
        if cb is not None and cb.best_model_path and cb.best_model_path != cb.last_model_path:
            print(f"Best checkpoint (val/loss): {cb.best_model_path}")
        logger = self.trainer.logger
        if isinstance(logger, TensorBoardLogger):
            print(f"TensorBoard logs: {logger.log_dir}  (tensorboard --logdir {Path(logger.log_dir).parent})")


def _launch_rank() -> int:
    """This process's global rank as the launchers set it (0 when launched by hand)."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "0")
        if value.isdigit() and int(value) != 0:
            return int(value)
    return 0


def cli_main(
    args: ArgsType = None, run: bool = True, datamodule_class: type[L.LightningDataModule] = RegressionDataModule
) -> RegressionLabCLI:
    """Build the CLI and run its subcommand; ``args`` is a list as on the command line.

    With ``run=False`` there are no subcommands: ``args`` are fit's options, and the caller
    runs ``cli.trainer.fit(cli.model, datamodule=cli.datamodule)`` itself.
    """
    return RegressionLabCLI(
        RegressionModule,
        datamodule_class,
        # With seed 42 the lab's init leaves one ReLU unit switched off on x <= 5 but on at x = 10,
        # so the prediction for 10 is 32.27 despite a training loss of 3e-8 (README, "Seeds").
        seed_everything_default=0,
        trainer_defaults=TRAINER_DEFAULTS,
        auto_configure_optimizers=False,
        # A resumed run writes its config into the same run directory again.
        save_config_kwargs={"overwrite": True},
        # Errors come back as exceptions, so the entry point prints one line and exits 2.
        parser_kwargs={"exit_on_error": False, "prog": "regression-lab"},
        args=args,
        run=run,
    )


if __name__ == "__main__":  # pragma: no cover
    cli_main()
