"""Lightning callbacks of regression-lab: a progress bar over the whole run, and the landscape
of the trained network logged at the end of training.

Lightning's default bar starts a new bar every epoch, which for the lab's 400 one-batch epochs
means 400 bars (and a few hundred microseconds each). :class:`RunProgressBar` shows one bar over
all training batches of the run, refreshed at most a few times a second; ``regression-lab fit``
uses it by default. :class:`LandscapeLogger` writes the trained network's loss landscape into
the run's TensorBoard events when training ends::

    regression-lab fit --trainer.callbacks+=LandscapeLogger --trainer.callbacks.resolution 101
    L.Trainer(callbacks=[RunProgressBar(), LandscapeLogger()])
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar
from tqdm.auto import tqdm

from regression_lab.errors import TrainingFailed
from regression_lab.safe_io import atomic_write


class RunProgressBar(ProgressBar):
    """One tqdm bar over every training batch of the run, with the epoch and the logged metrics."""

    def __init__(self, refresh_seconds: float = 0.2) -> None:
        """Create the bar (it opens when training starts).

        Args:
            refresh_seconds: minimum time between screen updates; updates cost, batches are cheap.
        """
        super().__init__()
        self.refresh_seconds = refresh_seconds
        self._enabled = True
        self._bar: tqdm | None = None
        self._pending = 0
        self._last_refresh = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.is_enabled:
            return
        per_epoch = self.total_train_batches
        total = None
        if trainer.max_epochs is not None and trainer.max_epochs > 0 and per_epoch != float("inf"):
            total = int(per_epoch) * trainer.max_epochs
        # A resumed run starts where its checkpoint left off (one optimizer step per batch here).
        done = trainer.global_step
        self._bar = tqdm(
            total=total,
            initial=done,
            desc="Training",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            leave=True,
            smoothing=0.1,
        )
        self._last_refresh = time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._bar is None:
            return
        self._pending += 1
        now = time.monotonic()
        if now - self._last_refresh >= self.refresh_seconds:
            self._refresh(trainer, pl_module)
            self._last_refresh = now

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is None:
            return
        self._refresh(trainer, pl_module)
        self._bar.close()
        self._bar = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # End the bar's line, so an error message starts on a line of its own.
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _refresh(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._bar is not None
        # current_epoch has already moved past the last epoch when training ends.
        epoch = min(trainer.current_epoch + 1, trainer.max_epochs or trainer.current_epoch + 1)
        self._bar.set_description(f"Epoch {epoch}/{trainer.max_epochs}", refresh=False)
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        self._bar.set_postfix(metrics, refresh=False)
        self._bar.update(self._pending)
        self._pending = 0

    def print(self, *args: Any, **kwargs: Any) -> None:
        # Print above the bar instead of through it.
        tqdm.write(" ".join(map(str, args)), file=sys.stderr)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes that a crash cannot leave half-done.

    Lightning's own writer goes through an fsspec transaction, which for local files writes a
    temporary file in the system's temp directory and moves it into place; when that directory
    is on another file system (a tmpfs /tmp, say) the move is a copy, and a kill during it
    leaves a truncated checkpoint under the final name. This writes the temporary file beside
    the target and renames it (see :func:`regression_lab.safe_io.atomic_write`).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "wb") as fh:
            torch.save(checkpoint, fh)


def _finite_weights(pl_module: L.LightningModule) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in pl_module.parameters())


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always the end of training, and fresh during it.

    Lightning's ModelCheckpoint writes ``last.ckpt`` only alongside its scheduled saves, so a run
    of 120 epochs saving every 50 ends with a ``last.ckpt`` from epoch 100, and a long epoch can
    go unsaved for its whole length. This one also writes ``last.ckpt`` when training ends, and
    refreshes it every ``last_every_seconds`` of training, so a crash loses at most that much.
    Lightning writes each file atomically (to a temporary name, then renamed), so a crash during
    a write leaves the previous file whole.
    """

    def __init__(self, *args: Any, last_every_seconds: float | None = 5.0, **kwargs: Any) -> None:
        """Configure it as ModelCheckpoint, plus:

        Args:
            last_every_seconds: refresh ``last.ckpt`` at most this often (seconds of training);
                ``None`` turns the time-based refresh off.
        """
        super().__init__(*args, **kwargs)
        if last_every_seconds is not None and not last_every_seconds > 0:
            raise ValueError(f"last_every_seconds must be > 0 or None, got {last_every_seconds}")
        self.last_every_seconds = last_every_seconds
        self._last_refresh: float | None = None

    @property
    def state_key(self) -> str:
        # Lightning reads state_key on every hook dispatch (six a training step), and
        # ModelCheckpoint builds it from a dict's repr each time (~1.3 us, measured). It is
        # cached here; any attribute assignment drops the cache, so it can never go stale.
        key = self.__dict__.get("_state_key")
        if key is None:
            key = super().state_key
            object.__setattr__(self, "_state_key", key)
        return key

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__.pop("_state_key", None)
        super().__setattr__(name, value)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_refresh = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if not self.save_last or self.last_every_seconds is None or self._last_refresh is None:
            return
        if trainer.world_size > 1 and trainer.global_step % max(1, trainer.log_every_n_steps) != 0:
            return  # under DDP the decision is a collective: take it only every few steps
        due = time.monotonic() - self._last_refresh >= self.last_every_seconds
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due)  # every rank must agree to save
        if due and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_refresh = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The final weights, unless this very step was just saved.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Every save (best, last, timed) passes here: never write weights that are NaN or inf.
        if not _finite_weights(trainer.lightning_module):
            raise TrainingFailed(
                f"training diverged: non-finite weights at epoch {trainer.current_epoch + 1}, "
                f"step {trainer.global_step}; not saving {Path(filepath).name}; lower the learning rate"
            )
        super()._save_checkpoint(trainer, filepath)


class LandscapeLogger(L.Callback):
    """Log the trained network's loss landscape (see ``regression-lab landscape``) at the end of fit.

    The figures, meshes, curves and summaries land in the run's own TensorBoard directory, beside
    its training curves. Only rank 0 computes; it uses the whole training set.
    """

    def __init__(self, resolution: int = 51, seed: int = 0, include_bias: bool = False) -> None:
        """Configure the landscape.

        Args:
            resolution: points per axis of the 2D grids and of the random 1D line (at least 2).
            seed: seed of the random directions.
            include_bias: give the random directions bias components (zero by default).
        """
        from regression_lab.landscape import Settings

        super().__init__()
        self.settings = Settings(resolution=resolution, seed=seed, include_bias=include_bias)
        self.settings.validate()  # fail at start-up, not after training

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from regression_lab import landscape
        from regression_lab.samples import line_split

        logger = trainer.logger
        writer = getattr(logger, "experiment", None)
        if not trainer.is_global_zero or not hasattr(writer, "add_figure"):
            return  # rank 0 only, and only into a TensorBoard logger
        dm = getattr(trainer, "datamodule", None)
        x, y = line_split(dict(dm.hparams) if dm is not None else {}, "train")
        net = getattr(pl_module, "net", pl_module)
        results = landscape.compute_for(self.settings, x, y, net, getattr(pl_module, "initial_state", None))
        # The run's own writer: the landscape joins the run's event file, beside its curves.
        landscape.log_to_writer(results, writer, None, step=trainer.global_step)
        writer.flush()
