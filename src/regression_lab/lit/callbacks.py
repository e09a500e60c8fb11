"""Lightning callbacks and the checkpoint writer of regression-lab.

- :class:`DivergenceGuard` stops training at a non-finite loss and refuses to save non-finite weights.
- :class:`FinalMetrics` puts the trained model's final losses and prediction beside its
  hyperparameters (TensorBoard's HParams tab).
- :class:`LandscapeLogger` logs the trained network's loss landscape when training ends.
- :class:`RunProgressBar` is Lightning's TQDMProgressBar with one training bar for the whole run.
- :class:`AtomicCheckpointIO` writes each checkpoint beside its final name and renames it.

``regression-lab fit`` adds the guard, the metrics, the bar and the writer; any of them works
with a plain Trainer::

    regression-lab fit --trainer.callbacks+=LandscapeLogger --trainer.callbacks.resolution 101
    L.Trainer(callbacks=[DivergenceGuard(), FinalMetrics()], plugins=[AtomicCheckpointIO()])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins import TorchCheckpointIO

from regression_lab.core import interrupts, landscape
from regression_lab.core.errors import TrainingFailed, check_int
from regression_lab.core.landscape_plots import log_to_writer
from regression_lab.core.safe_io import atomic_write
from regression_lab.core.samples import DATA_DEFAULTS, SQUARE_SAFE, largest_magnitude

#: Data beyond this size are named beside the learning rate when training diverges: the lab's
#: data reach 17, and SGD's step grows with the square of the inputs.
LARGE_DATA = 100.0


def divergence_advice(model: L.LightningModule, datamodule: L.LightningDataModule | None) -> str:
    """What to change after a divergence (or dead units): the learning rate, or the data when
    they are large enough to be the cause (as their squares overflow float32, the only cause)."""
    lr = model.hparams.get("lr")
    lower_lr = f"lower --model.lr (now {lr:g})" if isinstance(lr, (int, float)) else "lower --model.lr"
    settings = getattr(datamodule, "hparams", None)
    if not settings or not set(DATA_DEFAULTS) <= set(settings):
        return lower_lr
    size = largest_magnitude(settings, train_only=True)
    scale = "scale the data down (--data.x_min/x_max, --data.slope, --data.intercept, --data.noise_std)"
    if size > SQUARE_SAFE:
        return (
            f"the training data reach about {size:.3g}, whose squares overflow float32 whatever the learning "
            f"rate: {scale}"
        )
    if size > LARGE_DATA:
        return f"{lower_lr}, or {scale}: the data reach about {size:.3g} and a step grows with their square"
    return lower_lr


class StopOnSignal(L.Callback):
    """Stop ``fit`` cleanly on SIGINT or SIGTERM: while it trains, the first signal is only
    recorded (:func:`~regression_lab.core.interrupts.defer`), and the Trainer stops at the
    next batch end through ``trainer.should_stop`` (Lightning stops on SIGTERM by itself too).
    The run then ends through its normal path, and the command exits 128 + the signal's number."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interrupts.defer(True)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if interrupts.requested() is not None:
            trainer.should_stop = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interrupts.defer(False)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        interrupts.defer(False)


class DivergenceGuard(L.Callback):
    """Stop training with :class:`~regression_lab.core.errors.TrainingFailed` (the CLI's exit 1) at
    a non-finite training loss, and never let a checkpoint with NaN or inf weights be written.

    Each step folds ``isfinite(loss)`` into a flag kept on the training device; the flag is read
    (a host sync on a GPU) only every ``check_every_n_steps`` steps and on each epoch's last
    batch, so a GPU is not stalled every step while the lab's one-batch epochs are still checked
    every step. Every checkpoint, scheduled or not, passes :meth:`on_save_checkpoint`, which
    refuses non-finite weights before anything is written.
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        """Configure the cadence of the check.

        Args:
            check_every_n_steps: read the on-device flag every this many steps; ``None`` follows
                the Trainer's ``log_every_n_steps``, the steps whose loss is written anyway.
        """
        super().__init__()
        if check_every_n_steps is not None:
            check_int("check_every_n_steps", check_every_n_steps, 1)
        self.check_every_n_steps = check_every_n_steps
        self._finite: torch.Tensor | None = None
        self._checked_step = 0  # the last step whose flag was read and found finite

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finite = torch.ones((), dtype=torch.bool, device=pl_module.device)
        self._checked_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if self._finite is None or not isinstance(loss, torch.Tensor):
            return
        self._finite.logical_and_(torch.isfinite(loss.detach()))  # no host sync
        every = self.check_every_n_steps or max(1, trainer.log_every_n_steps)
        if trainer.global_step % every == 0 or batch_idx + 1 == trainer.num_training_batches:
            self._check(trainer, pl_module, loss)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run stopped mid-epoch (max_steps) has steps that no read covered yet.
        self._check(trainer, pl_module, None)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in pl_module.parameters()):
            raise TrainingFailed(
                f"training diverged: non-finite weights at epoch {trainer.current_epoch + 1}, step "
                f"{trainer.global_step}; no checkpoint written; {divergence_advice(pl_module, trainer.datamodule)}"
            )

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor | None) -> None:
        if self._finite is None:
            return
        diverged = not bool(self._finite)
        if trainer.world_size > 1:
            # Every rank must stop together, or the others wait forever in the next collective.
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        step = trainer.global_step
        if not diverged:
            self._checked_step = step
            return
        # Exact when the previous read was the previous step (the lab's one-batch epochs);
        # otherwise the first non-finite loss came somewhere after that read.
        since = "" if step - self._checked_step <= 1 else f" (finite up to step {self._checked_step})"
        what = f"loss {float(loss.detach())}" if loss is not None else "a non-finite loss"
        advice = divergence_advice(pl_module, trainer.datamodule)
        raise TrainingFailed(
            f"training diverged: {what} at epoch {trainer.current_epoch + 1}, step {step}{since}; {advice}"
        )


class FinalMetrics(L.Callback):
    """The trained model's final numbers, beside its hyperparameters in TensorBoard's HParams tab.

    When training ends: the MSE on the DataModule's training and validation data (summed over
    the ranks' shards), the prediction for the module's ``probe_x`` and, where the DataModule
    knows the true line (``line_at``), that prediction's absolute error. They are kept in
    :attr:`metrics` and logged as ``hp/<name>`` with the module's and DataModule's
    hyperparameters (``data.<name>``) and the seed, one HParams row per run.
    """

    def __init__(self) -> None:
        """Nothing to configure: the metrics come from the model and the DataModule's data."""
        super().__init__()
        #: ``train_loss``, ``val_loss``, ``prediction``, ``abs_error`` after ``fit``.
        self.metrics: dict[str, float] = {}

    @torch.no_grad()
    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The final metrics of ``pl_module`` on the Trainer's DataModule (every rank must call it)."""
        dm = trainer.datamodule
        probe_x = float(pl_module.hparams.get("probe_x", 10.0))
        prediction = float(pl_module(torch.tensor([[probe_x]], device=pl_module.device)).item())
        metrics = {"prediction": prediction}
        for split in ("train", "val"):
            x, y = getattr(dm, f"{split}_x", None), getattr(dm, f"{split}_y", None)
            if x is None or y is None:
                continue
            # Sums and counts over the ranks' shards, so the loss is over the whole split.
            sse = trainer.strategy.reduce(((pl_module(x) - y) ** 2).sum(), reduce_op="sum")
            count = trainer.strategy.reduce(torch.tensor(float(len(x)), device=x.device), reduce_op="sum")
            metrics[f"{split}_loss"] = float(sse / count)
        if hasattr(dm, "line_at"):
            metrics["abs_error"] = abs(prediction - dm.line_at(probe_x))
        return metrics

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = self.metrics = self.compute(trainer, pl_module)
        dm = trainer.datamodule
        if trainer.logger is None:
            return
        # Private keys (LightningCLI's _instantiator) are bookkeeping, not hyperparameters.
        params = {k: v for k, v in pl_module.hparams.items() if not k.startswith("_")}
        if dm is not None:
            params.update({f"data.{k}": v for k, v in dm.hparams.items() if not k.startswith("_")})
        seed = getattr(trainer.logger, "hparams", {}).get("seed_everything")
        if seed is not None:
            params["seed_everything"] = seed
        trainer.logger.log_hyperparams(params, {f"hp/{k}": v for k, v in metrics.items()}, step=trainer.global_step)


class RunProgressBar(TQDMProgressBar):
    """Lightning's ``TQDMProgressBar`` with one training bar over the whole run.

    The stock bar restarts at every epoch and redraws at every epoch's end: for the lab's 400
    one-batch epochs that costs about 0.3 ms an epoch here (measured), three plain epochs'
    worth. This one counts every training batch of the run (``Epoch 120/400`` in front) and
    lets tqdm redraw at most every ``mininterval`` seconds. Validation and test bars are the
    stock ones.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar, per_epoch, epochs = self.train_progress_bar, self.total_train_batches, trainer.max_epochs
        bar.total = int(per_epoch) * epochs if epochs and epochs > 0 and per_epoch != float("inf") else None
        # A resumed run starts where its checkpoint left off (one optimizer step per batch here).
        bar.initial = bar.n = trainer.global_step

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        epoch = f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        self.train_progress_bar.set_description(epoch, refresh=False)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.train_progress_bar.update(1)  # tqdm redraws only once mininterval has passed

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)


class LandscapeLogger(L.Callback):
    """Log the trained network's loss landscape (see ``regression-lab landscape``) at the end of fit.

    The figures, meshes, curves and summaries land in the run's own TensorBoard events, at the
    run's last step, beside its training curves. Only rank 0 computes, on its training data.
    """

    def __init__(self, resolution: int = 51, seed: int = 0, include_bias: bool = False) -> None:
        """Configure the landscape.

        Args:
            resolution: points per axis of the 2D grids and of the random 1D line (at least 2).
            seed: seed of the random directions.
            include_bias: give the random directions bias components (zero by default).
        """
        super().__init__()
        self.settings = landscape.Settings(resolution=resolution, seed=seed, include_bias=include_bias)
        self.settings.validate()  # fail at start-up, not after training

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = getattr(trainer.logger, "experiment", None)
        dm = trainer.datamodule
        if not trainer.is_global_zero or not hasattr(writer, "add_figure") or dm is None:
            return  # rank 0 only, only into a TensorBoard logger, and only with data to measure on
        net = getattr(pl_module, "net", pl_module)
        results = landscape.compute_for(
            self.settings, dm.train_x, dm.train_y, net, getattr(pl_module, "initial_state", None)
        )
        log_to_writer(results, writer, None, step=trainer.global_step)
        writer.flush()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes that a crash cannot leave half-done.

    Lightning's own writer goes through an fsspec transaction, which for local files writes a
    temporary file in the system's temp directory and moves it into place; when that directory
    is on another file system (a tmpfs /tmp, say) the move is a copy, and a kill during it
    leaves a truncated checkpoint under the final name. This writes the temporary file beside
    the target, flushes it and renames it (see :func:`regression_lab.core.safe_io.atomic_write`).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "wb") as fh:
            torch.save(checkpoint, fh)
