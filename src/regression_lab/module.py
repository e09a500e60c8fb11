"""The LightningModule that trains ``MyNN`` on the line with MSE and SGD.

One shared :meth:`RegressionModule.model_step` serves train, validation and test; torchmetrics
compute MSE, MAE and R^2 for validation and test under the keys ``val/loss``, ``val/mae``,
``val/r2`` and ``test/...``. Hyperparameters are primitives saved with
``save_hyperparameters()``, so a checkpoint loads with ``torch.load(path, weights_only=True)``.
Use it through the CLI (``regression-lab fit``) or directly::

    import lightning as L
    from regression_lab.data import RegressionDataModule
    from regression_lab.module import RegressionModule
    L.Trainer(max_epochs=400).fit(RegressionModule(), RegressionDataModule())
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn

from regression_lab.checkpoints import INITIAL_STATE_KEY
from regression_lab.errors import TrainingFailed, check_float, check_int
from regression_lab.models import MyNN
from regression_lab.samples import line_split


class RegressionModule(L.LightningModule):
    """``MyNN`` regressing a line: MSE loss, SGD, TensorBoard-friendly metrics.

    Training stops with :class:`~regression_lab.errors.TrainingFailed` (the CLI's exit 1) at a
    non-finite training loss. Each step folds ``isfinite(loss)`` into a flag kept on the
    training device; the flag is read (a host sync on a GPU) only on the steps that log
    (``Trainer(log_every_n_steps=...)``) and on each epoch's last batch, always before that
    step's update. So a GPU is not stalled every step, and the lab's one-batch epochs are still
    checked every step. It lives here rather than in a callback because Lightning calls every
    callback's hooks about six times a step, which at scale cost more than the check itself.
    """

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
        check_int("model.hidden_size", hidden_size, 1)
        check_float("model.lr", lr, positive=True)
        check_float("model.momentum", momentum, non_negative=True)
        check_float("model.weight_decay", weight_decay, non_negative=True)
        check_float("model.probe_x", probe_x)
        self.save_hyperparameters()
        self.net = MyNN(hidden_size)
        self.loss_fn = nn.MSELoss()
        # The weights before any step: kept in every checkpoint for the landscape's interpolation.
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
        self._losses_finite: torch.Tensor | None = None  # the divergence flag, on the device
        self._finite_up_to = 0  # the last step whose flag was read and found finite

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name before and after each hook it calls, about 45 times a
        # step, and nn.Module.__setattr__ looks through parameters, buffers and submodules each
        # time (~1.4 us, measured; ~6 ms an epoch at 1M samples). It is a plain attribute, so
        # object.__setattr__ stores it exactly as nn.Module would.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict y for inputs of shape (N, 1)."""
        return self.net(x)

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step shared by train, validation and test: predictions, targets and MSE loss."""
        x, y = batch
        # The plain net, not self(x): the LightningModule's own __call__ costs about 0.1 ms a
        # step here (measured), more than a lab step itself.
        pred = self.net(x)
        return self.loss_fn(pred, y), pred, y

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self.model_step(batch)
        step = self.global_step + 1  # this step, counted as Lightning counts the steps taken
        # A self.log call costs more than a whole lab step (~0.45 ms measured, even when nothing
        # is written), so the loss is logged only on the steps the logger writes anyway
        # (Trainer(log_every_n_steps=...)), not recorded every step and then dropped.
        logs = step % max(1, self.trainer.log_every_n_steps) == 0
        if logs:
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        self._guard_divergence(loss, read=logs or batch_idx + 1 == self.trainer.num_training_batches)
        return loss

    @torch.no_grad()
    def active_units(self) -> int | None:
        """Hidden ReLU units that are on for at least one training input (``None`` outside fit).

        A unit that is off on every training input gets no gradient and stays off: it is dead.
        With all of them dead the network is flat over the training inputs (its output bias).
        """
        settings = self._line_settings()
        if settings is None:
            return None
        x, _ = self._whole_split(settings, "train")
        on = self.net.activation(self.net.linear1(x)) > 0
        return int(on.any(dim=0).sum())

    def on_train_start(self) -> None:
        self._losses_finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._finite_up_to = self.global_step

    def on_train_end(self) -> None:
        # A run stopped mid-epoch (max_steps) has steps that no read covered yet.
        self._guard_divergence(None, read=True)
        # Final metrics beside the hyperparameters make TensorBoard's HParams tab a results
        # table (the logger writes the hparams summary only when metrics are given).
        self.final = self.final_metrics()
        if self.logger is None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        params = dict(self.hparams)
        if dm is not None:
            params.update({f"data.{k}": v for k, v in dm.hparams.items() if not k.startswith("_")})
        # What the CLI recorded beside them (the seed).
        params.update({k: v for k, v in getattr(self.logger, "hparams", {}).items() if k == "seed_everything"})
        self.logger.log_hyperparams(params, {f"hp/{k}": v for k, v in self.final.items()}, step=self.global_step)

    def _guard_divergence(self, loss: torch.Tensor | None, read: bool) -> None:
        """Fold ``isfinite(loss)`` into the flag; when ``read``, raise if any loss so far was not."""
        if self._losses_finite is None:
            return  # not inside fit
        if loss is not None:
            self._losses_finite.logical_and_(torch.isfinite(loss.detach()))  # no host sync
        if not read:
            return
        diverged = not bool(self._losses_finite)
        if self.trainer.world_size > 1:
            # Every rank must stop together, or the others wait forever in the next collective.
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        step = self.global_step + (loss is not None)
        if not diverged:
            self._finite_up_to = step
            return
        # Exact when the previous read was the previous step (the lab's one-batch epochs);
        # otherwise the first non-finite loss came somewhere after that read.
        since = "" if step - self._finite_up_to <= 1 else f" (finite up to step {self._finite_up_to})"
        what = f"loss {float(loss.detach())}" if loss is not None else "a non-finite loss"
        raise TrainingFailed(
            f"training diverged: {what} at epoch {self.current_epoch + 1}, step {step}{since}; "
            f"lower --model.lr (now {self.hparams.lr:g})"
        )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        _, pred, y = self.model_step(batch)
        # torchmetrics accumulate over batches and reduce across ranks on compute.
        self.val_metrics.update(pred, y)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=False)

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
    def final_metrics(self) -> dict[str, float]:
        """The trained model's MSE on the whole training and validation sets, its prediction for
        ``probe_x`` and that prediction's absolute error (exact, from the final weights)."""
        settings = self._line_settings()
        pred = self.predict_value(self.hparams.probe_x)
        metrics = {"prediction": pred}
        if settings is not None:
            for split in ("train", "val"):
                x, y = self._whole_split(settings, split)
                metrics[f"{split}_loss"] = float(self.loss_fn(self(x), y))
            metrics["abs_error"] = abs(pred - (settings["slope"] * self.hparams.probe_x + settings["intercept"]))
        return metrics

    def _line_settings(self) -> dict[str, Any] | None:
        """The attached RegressionDataModule's settings (``None`` without a trainer or one)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return dict(dm.hparams) if dm is not None and "slope" in dm.hparams else None

    def _whole_split(self, settings: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        # The whole split (not this rank's shard), as the DataModule generates it, on our device.
        x, y = line_split(settings, split)
        return x.to(self.device), y.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[INITIAL_STATE_KEY] = self.initial_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming must keep the weights the run started from, not the resumed ones.
        if INITIAL_STATE_KEY in checkpoint:
            self.initial_state = checkpoint[INITIAL_STATE_KEY]
