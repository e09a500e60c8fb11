"""Lightning's own floor: the least any LightningModule costs on a row's data, timed in the same run.

A minimal module (``MyNN`` through ``self(x)``, MSE, SGD and, unless told not to, one
``self.log`` of the loss per step, as every ``fit`` logs its training loss) is fitted by a
``Trainer`` with nothing else: no logger, checkpoint, progress bar, validation or callback of
the project. It is fed by the project's own DataModule, so the floor differs from ``fit`` only
in what the project adds. A row whose target lies below this floor cannot be met by any
project that trains through Lightning and logs its loss; the gap between ``fit`` and the floor
is what the project's defaults cost. Run it alone::

    python -c "import benchmarks.floor as f; print(f.floor_seconds({}, 400, 'cpu'))"   # from the repository root
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from torch.nn import functional as F

from benchmarks.timer import TrainTimer
from regression_lab.core.models import MyNN
from regression_lab.lit.cli import lightning_notices_ignored
from regression_lab.lit.data import RegressionDataModule


class FloorModule(L.LightningModule):
    """The least a LightningModule does to train ``MyNN`` with MSE and SGD."""

    def __init__(self, hidden_size: int = 5, lr: float = 0.01, log: bool = True) -> None:
        """Build the network.

        Args:
            hidden_size: ReLU units of MyNN's hidden layer.
            lr: SGD learning rate.
            log: ``self.log`` the training loss every step (not to a logger: there is none).
        """
        super().__init__()
        self.net = MyNN(hidden_size)
        self.lr = lr
        self.log_loss = log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        if self.log_loss:
            # logger=False: the Trainer has none, and saying so skips its per-call warning.
            self.log("train/loss", loss, prog_bar=True, logger=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def fit_floor(data: dict[str, Any], epochs: int, accelerator: str, log: bool = True) -> tuple[float, FloorModule]:
    """Fit :class:`FloorModule` (seeded 0, as ``fit``'s default seed) on ``RegressionDataModule(**data)``:
    the seconds of its training loop, and the trained module."""
    timer = TrainTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    torch.manual_seed(0)
    module = FloorModule(log=log)
    with lightning_notices_ignored(), warnings.catch_warnings():
        # The DataModule offers validation data; the floor has no validation, on purpose.
        warnings.filterwarnings("ignore", message=r".*but have no `validation_step`.*")
        trainer.fit(module, datamodule=RegressionDataModule(**data))
    return timer.seconds, module


def floor_seconds(data: dict[str, Any], epochs: int, accelerator: str, log: bool = True) -> float:
    """Seconds of the training loop of :class:`FloorModule` on ``RegressionDataModule(**data)``."""
    return fit_floor(data, epochs, accelerator, log)[0]
