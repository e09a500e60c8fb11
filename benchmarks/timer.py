"""The benchmarks' timer of a ``fit``'s training loop, as a Lightning callback.

Used by ``benchmarks.run`` (through ``--trainer.callbacks``) and ``benchmarks.floor``; see
``python scripts/benchmark.py --help``.
"""

from __future__ import annotations

import gc
import time

import lightning as L
import torch


class TrainTimer(L.Callback):
    """Times the training loop: from training's start to its end, every epoch's work included.

    Given as ``--trainer.callbacks+=benchmarks.timer.TrainTimer``, it comes before the CLI's own
    callbacks, so its ``on_train_end`` runs before theirs: the one-off teardown after the loop
    (final metrics, the final checkpoint, closing the logger) is left out.
    """

    def __init__(self) -> None:
        """Nothing to configure."""
        super().__init__()
        self.start = self.end = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The CLI's setup leaves a lot of garbage; a full collection it triggers costs ~70 ms
        # here (measured), a third of a 1M-sample epoch. Collect it now, outside the timed part.
        gc.collect()
        self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.end - self.start
