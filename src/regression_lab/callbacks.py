"""Lightning callbacks of regression-lab: a progress bar over the whole run.

Lightning's default bar starts a new bar every epoch, which for the lab's 400 one-batch epochs
means 400 bars (and a few hundred microseconds each). :class:`RunProgressBar` shows one bar over
all training batches of the run, refreshed at most a few times a second. Used by default by
``regression-lab fit``; in your own code::

    L.Trainer(callbacks=[RunProgressBar()])
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks.progress import ProgressBar
from tqdm.auto import tqdm


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
