"""The Lightning callbacks ``fit`` needs beyond Lightning's own, and the checkpoint writer: :class:`Guard`
stops at a non-finite loss (exit 1) or a signal (exit 130/143), :class:`RunProgressBar` draws one bar per run,
:class:`LandscapeLogger` logs the loss landscape when training ends, :class:`Trajectory` keeps the weights on the
way, :class:`AtomicCheckpointIO` writes checkpoints atomically. Each works with a plain Trainer::

    regression-lab fit --trainer.callbacks+=LandscapeLogger --trainer.callbacks.resolution 101
    L.Trainer(callbacks=[Guard()], plugins=[AtomicCheckpointIO()])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins import TorchCheckpointIO

from regression_lab import errors
from regression_lab.checkpoint import TRAJECTORY_FILE, read_trajectory
from regression_lab.data import LARGE_DATA
from regression_lab.errors import FLOAT32_MAX, TrainingFailed, UsageError, check_int
from regression_lab.files import atomic_write


def divergence_advice(model: L.LightningModule, datamodule: Any) -> str:
    """What to change after a divergence or dead units: the learning rate, or the data when they are the cause."""
    lr = model.hparams.get("lr")
    lower_lr = f"lower --model.lr (now {lr:g})" if isinstance(lr, (int, float)) else "lower --model.lr"
    size = datamodule.largest_magnitude() if hasattr(datamodule, "largest_magnitude") else 0.0
    scale = ("scale the file's x and y down" if getattr(datamodule, "hparams", {}).get("csv") else
             "scale the data down (--data.x_min/x_max, --data.slope, --data.intercept, --data.noise_std)")  # fmt: skip
    if size > FLOAT32_MAX**0.5:  # their squares overflow float32 whatever the rate
        return f"the training data reach about {size:.3g}, whose squares overflow float32 whatever the rate: {scale}"
    if size > LARGE_DATA:
        return f"{lower_lr}, or {scale}: the data reach about {size:.3g} and a step grows with their square"
    return lower_lr


class Guard(L.Callback):
    """Stop at a non-finite loss (:class:`~regression_lab.errors.TrainingFailed`), and at the batch end after a signal
    (several processes: at the next check, all together).

    ``isfinite(loss)`` folds into an on-device flag, read (a host sync on a GPU) only every ``check_every_n_steps``
    steps and at each epoch's last batch; non-finite weights are never checkpointed."""

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        """Configure the cadence of the divergence check.

        Args:
            check_every_n_steps: read the on-device flag every this many steps; ``None`` follows
                the Trainer's ``log_every_n_steps``, the steps whose loss is written anyway.
        """
        super().__init__()
        self.every = None if check_every_n_steps is None else check_int("check_every_n_steps", check_every_n_steps, 1)
        self._finite: torch.Tensor | None = None
        self._checked = 0  # the last step whose flag was read and found finite

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finite = torch.ones((), dtype=torch.bool, device=pl_module.device)
        self._checked = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        every = self.every or max(1, trainer.log_every_n_steps)
        check = trainer.global_step % every == 0 or batch_idx + 1 == trainer.num_training_batches
        if isinstance(loss, torch.Tensor):
            self._finite.logical_and_(torch.isfinite(loss.detach()))  # no host sync
            if check:
                self._check(trainer, pl_module, loss)
        # A signal to one of several processes stops them all at one step, decided together at a check: a rank
        # stopping alone leaves the others waiting forever in their next collective.
        signalled = errors.requested() is not None
        if trainer.world_size > 1:
            signalled = check and trainer.strategy.reduce_boolean_decision(signalled, all=False)
        if signalled:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module, None)  # a run stopped mid-epoch has steps no read covered

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in pl_module.parameters()):
            raise TrainingFailed(
                f"training diverged: non-finite weights at epoch {trainer.current_epoch + 1}, step "
                f"{trainer.global_step}; no checkpoint written; {divergence_advice(pl_module, trainer.datamodule)}"
            )

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor | None) -> None:
        # Every rank must stop together, or the others wait forever in the next collective.
        diverged = trainer.strategy.reduce_boolean_decision(not bool(self._finite), all=False)
        step = trainer.global_step
        if not diverged:
            self._checked = step
            return
        # Exact when the previous read was the previous step (the lab's one-batch epochs).
        since = "" if step - self._checked <= 1 else f" (finite up to step {self._checked})"
        what = f"loss {float(loss.detach())}" if loss is not None else "a non-finite loss"
        raise TrainingFailed(
            f"training diverged: {what} at epoch {trainer.current_epoch + 1}, step {step}{since}; "
            f"{divergence_advice(pl_module, trainer.datamodule)}"
        )


class RunProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with one training bar over the whole run (``Epoch 120/400`` in front),
    redrawn at most every ``mininterval`` seconds: the stock bar restarts and redraws at every
    epoch, which the lab's 400 one-batch epochs pay for on every one. Validation and test bars are
    the stock ones."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        per_epoch, epochs = self.total_train_batches, trainer.max_epochs
        finite = epochs is not None and epochs > 0 and per_epoch != float("inf")
        self.train_progress_bar.total = int(per_epoch) * epochs if finite else None
        self.train_progress_bar.initial = self.train_progress_bar.n = trainer.global_step  # a resumed run

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        epoch = f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        self.train_progress_bar.set_description(epoch, refresh=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        self.train_progress_bar.update(1)  # tqdm redraws only once mininterval has passed

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)


class LandscapeLogger(L.Callback):
    """Log the trained network's loss landscapes (``regression-lab landscape``) to TensorBoard at the end, rank 0."""

    def __init__(self, resolution: int = 51, seed: int = 0, include_bias: bool = False) -> None:
        """Configure the landscape.

        Args:
            resolution: points per axis of the 2D grids and of the random 1D line (at least 2).
            seed: seed of the random directions.
            include_bias: give the random directions bias components (zero by default).
        """
        super().__init__()
        from regression_lab.landscape import Settings

        self.settings = Settings(resolution=resolution, seed=seed, include_bias=include_bias)
        self.settings.check()  # at start-up, not after training

    @staticmethod
    def problem(pl_module: L.LightningModule, logger: Any) -> str | None:
        """Why the landscapes could not be drawn for this module and logger, or None."""
        if not hasattr(pl_module, "net"):
            return "LandscapeLogger draws one network's landscapes: not an ensemble's (use regression-lab landscape)"
        if not isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
            return "LandscapeLogger draws to TensorBoard: keep the default TensorBoardLogger"
        return None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.fast_dev_run and (why := self.problem(pl_module, trainer.logger)):  # refused, not ignored
            raise UsageError(why)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer, dm = trainer.logger.experiment, trainer.datamodule
        if trainer.is_global_zero and not trainer.fast_dev_run:  # Lightning's test run logs nothing
            from regression_lab.landscape import compute_for
            from regression_lab.landscape_plots import log_to_writer

            results = compute_for(self.settings, dm.train_x, dm.train_y, pl_module.net, pl_module.initial_state)
            log_to_writer(results, writer, None, step=trainer.global_step)
            writer.flush()


class Trajectory(L.Callback):
    """Keep the network's weights at the start, every ``every_n_epochs`` epochs and at the end, in the run's
    ``trajectory.pt`` (not in every checkpoint), for ``regression-lab landscape --trajectory``; a resumed run goes on
    with its file. It loads with ``weights_only=True``: ``{"epochs": (T,), "weights": (T, P)}``."""

    def __init__(self, every_n_epochs: int) -> None:
        """Configure the cadence.

        Args:
            every_n_epochs: keep the weights after every this many epochs (at least 1).
        """
        super().__init__()
        self.every = check_int("--trajectory_every", every_n_epochs, 1)
        self.epochs: list[int] = []
        self.weights: list[torch.Tensor] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(trainer.log_dir or ".") / TRAJECTORY_FILE
        if path.is_file():  # a resumed run: its points so far
            saved = read_trajectory(path)
            keep = saved["epochs"] <= trainer.current_epoch
            self.epochs, self.weights = saved["epochs"][keep].tolist(), list(saved["weights"][keep])
        if not self.epochs:
            self._keep(trainer.current_epoch, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every == 0:
            self._keep(trainer.current_epoch + 1, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epochs[-1] != trainer.current_epoch:
            self._keep(trainer.current_epoch, pl_module)
        self.write(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.write(trainer)  # also when SIGTERM raises out of the fit (Lightning's way): a resume goes on from here

    def write(self, trainer: L.Trainer) -> None:
        """Write the points kept so far to the run's ``trajectory.pt`` (rank 0), replacing it atomically."""
        if trainer.is_global_zero and self.epochs:
            with atomic_write(Path(trainer.log_dir or ".") / TRAJECTORY_FILE) as fh:
                torch.save({"epochs": torch.tensor(self.epochs), "weights": torch.stack(self.weights)}, fh)

    def _keep(self, epoch: int, pl_module: L.LightningModule) -> None:
        self.epochs.append(epoch)
        self.weights.append(torch.cat([p.detach().flatten() for p in pl_module.net.parameters()]).cpu())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes that a crash cannot leave half-done: written beside the target, then renamed (Lightning's own
    moves a file from the temp directory, a copy across file systems that a kill can leave truncated)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as fh:
            try:
                torch.save(checkpoint, fh)
            except RuntimeError as err:  # torch's zip writer reports a failed write (a full disk) as its own error
                raise err.__context__ if isinstance(err.__context__, OSError) else err  # noqa: B904
