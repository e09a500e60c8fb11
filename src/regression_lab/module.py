"""The LightningModule that trains ``MyNN`` on the line with MSE and SGD: one :meth:`RegressionModule.model_step` for
train, validation and test; torchmetrics under ``val/loss``, ``val/mae``, ``val/r2`` (and ``test/...``); primitive
hyperparameters, so a checkpoint loads with ``weights_only=True``. Use it through ``regression-lab fit``, or::

    from regression_lab.data import RegressionDataModule
    L.Trainer(max_epochs=400).fit(RegressionModule(5, lr=0.01, momentum=0.0, weight_decay=0.0, probe_x=10.0),
                                  RegressionDataModule())
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from regression_lab.checkpoint import INITIAL_STATE_KEY
from regression_lab.models import MyNN


def batch_parts(batch: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A batch's x, y and share of its global batch's loss (see :class:`~regression_lab.data.TensorBatches`; or 1.0)."""
    x, y, *rest = batch
    return x, y, (rest[0] if rest else 1.0)


class RegressionModule(L.LightningModule):
    """``MyNN`` regressing a line: MSE loss, SGD, TensorBoard-friendly metrics."""

    def __init__(self, hidden_size: int, lr: float, momentum: float, weight_decay: float, probe_x: float) -> None:
        """Build the model and its metrics (``fit`` builds it with ``ensemble.regression_model``, which holds the
        defaults and checks the values).

        Args:
            hidden_size: ReLU units in MyNN's hidden layer.
            lr: SGD learning rate.
            momentum: SGD momentum.
            weight_decay: SGD L2 penalty.
            probe_x: the input whose prediction is reported after training (the lab asks for 10).
        """
        super().__init__()
        self.save_hyperparameters()
        self.net = MyNN(hidden_size)
        # The weights before any step, kept in every checkpoint for the landscape's interpolation.
        self.initial_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        # Lets the TensorBoard logger trace the model graph (the Graphs tab).
        self.example_input_array = torch.zeros(1, 1)
        metrics = MetricCollection({"loss": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict y for inputs of shape (N, 1)."""
        return self.net(x)

    def monitored(self) -> list[str]:
        """The metrics a callback can monitor: what the training and validation steps log."""
        return ["train/loss", *self.val_metrics.keys()]

    def model_step(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step shared by train, validation and test: MSE loss (weighted by the batch's share, see
        :class:`~regression_lab.data.TensorBatches`), predictions and targets."""
        x, y, share = batch_parts(batch)
        pred = self(x)
        # An empty part of a global batch (a rank with fewer samples) adds nothing, yet every rank steps.
        return (F.mse_loss(pred, y) * share if len(x) else pred.sum()), pred, y

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self.model_step(batch)
        # Over several ranks each logs its share: their mean is the global batch's loss.
        self.log("train/loss", loss, prog_bar=True, sync_dist=self.trainer.world_size > 1)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        _, pred, y = self.model_step(batch)
        # torchmetrics accumulate over batches and reduce across ranks when computed.
        metrics = self.test_metrics if self.trainer.testing else self.val_metrics
        metrics.update(pred, y)
        self.log_dict(metrics, on_step=False, on_epoch=True)

    test_step = validation_step

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    # The ensemble's interface for one member: the final metrics and the closing report read every model through it.
    def predict_members(self, x: torch.Tensor) -> torch.Tensor:
        """The prediction for x (N, 1) as (1 member, N, 1)."""
        return self(x).unsqueeze(0)

    @torch.no_grad()
    def active_units(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden ReLU units on for at least one input of ``x``, shape (1,) (one off on all gets no gradient: dead)."""
        return (self.net.activation(self.net.linear1(x)) > 0).any(dim=0).sum().reshape(1)

    def diverged(self) -> torch.Tensor:
        """Whether the member diverged: never in a finished run (the guard stops it first)."""
        return torch.zeros(1, dtype=torch.bool, device=self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[INITIAL_STATE_KEY] = self.initial_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming keeps the weights the run started from, not the resumed ones.
        if isinstance(checkpoint.get(INITIAL_STATE_KEY), dict):
            self.initial_state = checkpoint[INITIAL_STATE_KEY]
