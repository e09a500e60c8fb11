"""The LightningModule that trains ``MyNN`` on the line with MSE and SGD.

One shared :meth:`RegressionModule.model_step` serves train, validation and test; torchmetrics
compute MSE, MAE and R^2 under the keys ``val/loss``, ``val/mae``, ``val/r2`` and ``test/...``.
Hyperparameters are primitives saved with ``save_hyperparameters()``, so a checkpoint loads
with ``torch.load(path, weights_only=True)``. Use it through the CLI (``regression-lab fit``)
or directly::

    import lightning as L
    from regression_lab.lit.data import RegressionDataModule
    from regression_lab.lit.module import RegressionModule
    L.Trainer(max_epochs=400).fit(RegressionModule(), RegressionDataModule())
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch.nn import functional as F

from regression_lab.core.checkpoints import INITIAL_STATE_KEY
from regression_lab.core.errors import check_float, check_int
from regression_lab.core.models import MyNN


class RegressionModule(L.LightningModule):
    """``MyNN`` regressing a line: MSE loss, SGD, TensorBoard-friendly metrics."""

    def __init__(
        self,
        hidden_size: int = 5,
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        probe_x: float = 10.0,
    ) -> None:
        """Build the model and its metrics.

        Args:
            hidden_size: ReLU units in MyNN's hidden layer (the lab's best: 5).
            lr: SGD learning rate (the lab's 0.01).
            momentum: SGD momentum (0 as in the lab).
            weight_decay: SGD L2 penalty (0 as in the lab).
            probe_x: the input whose prediction is reported after training (the lab asks for 10).
        """
        super().__init__()
        # Checked here too, not only by the CLI, so a bad value from Python fails just as clearly.
        check_int("model.hidden_size", hidden_size, 1)
        check_float("model.lr", lr, positive=True)
        check_float("model.momentum", momentum, non_negative=True)
        check_float("model.weight_decay", weight_decay, non_negative=True)
        check_float("model.probe_x", probe_x)
        self.save_hyperparameters()
        self.net = MyNN(hidden_size)
        # The weights before any step, kept in every checkpoint for the landscape's interpolation.
        self.initial_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        # Lets TensorBoardLogger(log_graph=True) trace the model graph.
        self.example_input_array = torch.zeros(1, 1)
        metrics = torchmetrics.MetricCollection(
            {
                "loss": torchmetrics.MeanSquaredError(),
                "mae": torchmetrics.MeanAbsoluteError(),
                "r2": torchmetrics.R2Score(),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict y for inputs of shape (N, 1)."""
        return self.net(x)

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step shared by train, validation and test: MSE loss, predictions and targets."""
        x, y = batch
        pred = self(x)
        return F.mse_loss(pred, y), pred, y

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self.model_step(batch)
        # The Trainer writes it every log_every_n_steps; the divergence check is DivergenceGuard's.
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        _, pred, y = self.model_step(batch)
        # torchmetrics accumulate over batches and reduce across ranks on compute.
        self.val_metrics.update(pred, y)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        _, pred, y = self.model_step(batch)
        self.test_metrics.update(pred, y)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Predictions for a batch of x, or of (x, y) pairs."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    @torch.no_grad()
    def predict_value(self, x: float) -> float:
        """The model's prediction for one input, as a float."""
        return float(self(torch.tensor([[x]], dtype=torch.float32, device=self.device)).item())

    @torch.no_grad()
    def active_units(self, x: torch.Tensor) -> int:
        """Hidden ReLU units that are on for at least one of the inputs ``x`` (shape (N, 1)).

        A unit that is off on every training input gets no gradient and stays off: it is dead.
        With all of them dead the network is flat over the training inputs (its output bias).
        """
        on = self.net.activation(self.net.linear1(x.to(self.device))) > 0
        return int(on.any(dim=0).sum())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[INITIAL_STATE_KEY] = self.initial_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming must keep the weights the run started from, not the resumed ones.
        if INITIAL_STATE_KEY in checkpoint:
            self.initial_state = checkpoint[INITIAL_STATE_KEY]
