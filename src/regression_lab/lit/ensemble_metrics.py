"""What an ensemble fit measures: every member's final numbers, snapshots at chosen epochs, and
pictures of their spread in TensorBoard.

:class:`EnsembleMetrics` is the ensemble's :class:`~regression_lab.lit.callbacks.FinalMetrics`:
``regression-lab fit`` adds it for an :class:`~regression_lab.lit.ensemble.EnsembleRegressionModule`;
the sweep brings its own with snapshot epochs, so the 100- and 200-epoch results are read
off the 400-epoch fit instead of trained again::

    regression-lab fit --model.num_seeds 1000 \\
        --trainer.callbacks+=regression_lab.lit.ensemble_metrics.EnsembleMetrics \\
        --trainer.callbacks.snapshot_epochs [100,200]
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from regression_lab.core.errors import check_int
from regression_lab.lit.callbacks import FinalMetrics

#: The training-loss percentiles drawn per setting, over the seeds.
QUANTILES = (0.1, 0.5, 0.9)


def setting_name(setting: dict[str, Any], epochs: int | None = None) -> str:
    """A setting's short name, e.g. ``h5_e400_lr0.01`` (momentum and weight decay only if set)."""
    # repr, not %g: two settings that differ in the 7th digit must not share a name.
    name = f"h{setting['hidden_size']}" + (f"_e{epochs}" if epochs is not None else "")
    name += f"_lr{float(setting['lr'])!r}"
    if setting.get("momentum"):
        name += f"_m{float(setting['momentum'])!r}"
    if setting.get("weight_decay"):
        name += f"_wd{float(setting['weight_decay'])!r}"
    return name


class EnsembleMetrics(FinalMetrics):
    """Per-member metrics of an ensemble after chosen epochs and at the end, and their pictures.

    - :attr:`snapshots` maps an epoch count to the members' ``train_loss``, ``val_loss``,
      ``prediction``, ``active_units`` and ``diverged`` (CPU tensors of shape (M,), members in
      the module's order, see ``member_index()``); saved in checkpoints, so a resumed fit keeps them.
    - :attr:`metrics` (as in ``FinalMetrics``) holds the mean over the healthy members, the
      spread of the prediction and how many diverged.
    - Training-loss percentiles (10th, median, 90th) over the seeds of each setting are written
      every ``curves_every_n_steps`` steps; at the end, per setting and snapshot, histograms of
      the validation loss and of the prediction, a box plot of the prediction's error, and one
      HParams row per setting with its mean metrics.
    """

    def __init__(self, snapshot_epochs: list[int] | None = None, curves_every_n_steps: int | None = None) -> None:
        """Configure what is recorded.

        Args:
            snapshot_epochs: epoch counts after which every member's metrics are recorded, besides
                the last epoch.
            curves_every_n_steps: write the training-loss percentiles every this many steps;
                ``None`` follows the Trainer's ``log_every_n_steps``.
        """
        super().__init__()
        self.snapshot_epochs = sorted({check_int("snapshot_epochs", e, 1) for e in snapshot_epochs or []})
        if curves_every_n_steps is not None:
            check_int("curves_every_n_steps", curves_every_n_steps, 1)
        self.curves_every_n_steps = curves_every_n_steps
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    # ----------------------------------------------------------------- recording

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        every = self.curves_every_n_steps or max(1, trainer.log_every_n_steps)
        losses = outputs.get("member_losses") if isinstance(outputs, dict) else None
        if trainer.logger is None or losses is None or trainer.global_step % every:
            return
        losses = torch.where(pl_module.diverged(), torch.nan, losses)
        q = torch.tensor(QUANTILES, dtype=losses.dtype, device=losses.device)
        names, rows = [], []
        for setting, part in zip(pl_module.settings, losses.split(pl_module.setting_sizes()), strict=True):
            names.append(setting_name(setting))
            rows.append(torch.nanquantile(part, q))
        values = torch.stack(rows).tolist()  # the one host sync of this step
        metrics = {
            f"train_loss_percentiles/{name}/p{round(100 * level)}": v
            for name, row in zip(names, values, strict=True)
            for level, v in zip(QUANTILES, row, strict=True)
            if math.isfinite(v)
        }
        trainer.logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch in self.snapshot_epochs:
            self.snapshots[epoch] = self._members(trainer, pl_module)

    def _members(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        found = pl_module.member_metrics(trainer.datamodule, trainer.strategy)
        return {k: v.detach().cpu() for k, v in found.items()}

    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The healthy members' mean metrics, the prediction's spread and the diverged count."""
        members = self._members(trainer, pl_module)
        healthy = ~members["diverged"]
        metrics: dict[str, float] = {"members": float(len(healthy)), "diverged": float((~healthy).sum())}
        pred = members["prediction"][healthy].double()
        metrics["prediction"] = float(pred.mean()) if len(pred) else math.nan
        metrics["prediction_std"] = float(pred.std()) if len(pred) > 1 else 0.0
        for key in ("train_loss", "val_loss"):
            if key in members:
                metrics[key] = float(members[key][healthy].double().mean()) if len(pred) else math.nan
        dm = trainer.datamodule
        if hasattr(dm, "line_at"):
            metrics["abs_error"] = abs(metrics["prediction"] - dm.line_at(float(pl_module.hparams.probe_x)))
        return metrics

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.snapshots[trainer.current_epoch] = self._members(trainer, pl_module)
        self.metrics = self.compute(trainer, pl_module)
        writer = getattr(trainer.logger, "experiment", None)
        if trainer.is_global_zero and hasattr(writer, "add_histogram"):
            self._write_pictures(writer, trainer, pl_module)
            writer.flush()

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.snapshots = dict(state_dict.get("snapshots", {}))

    # ----------------------------------------------------------------- pictures

    def per_setting(self, pl_module: L.LightningModule) -> list[tuple[dict[str, Any], int, dict[str, torch.Tensor]]]:
        """Each (setting, epochs) with its members' snapshot: a slice of :attr:`snapshots`."""
        sizes = pl_module.setting_sizes()
        out = []
        for epochs, members in sorted(self.snapshots.items()):
            parts = {k: v.split(sizes) for k, v in members.items()}
            for i, setting in enumerate(pl_module.settings):
                out.append((setting, epochs, {k: parts[k][i] for k in parts}))
        return out

    def _write_pictures(self, writer: Any, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        probe_x = float(pl_module.hparams.probe_x)
        truth = dm.line_at(probe_x) if hasattr(dm, "line_at") else None
        errors, labels = [], []
        for setting, epochs, m in self.per_setting(pl_module):
            name = setting_name(setting, epochs)
            healthy = ~m["diverged"]
            if not bool(healthy.any()):
                continue
            # Histograms and HParams rows hold one value per setting, never one per member.
            writer.add_histogram(f"ensemble_val_loss/{name}", m["val_loss"][healthy], global_step=epochs)
            writer.add_histogram(f"ensemble_prediction/{name}", m["prediction"][healthy], global_step=epochs)
            metrics = {
                "hp/val_loss_mean": float(m["val_loss"][healthy].double().mean()),
                "hp/prediction_mean": float(m["prediction"][healthy].double().mean()),
                "hp/diverged_share": float((~healthy).double().mean()),
            }
            if truth is not None:
                err = (m["prediction"][healthy].double() - truth).abs()
                metrics["hp/abs_error_mean"] = float(err.mean())
                errors.append(err.numpy())
                labels.append(name)
            writer.add_hparams(
                {**setting, "epochs": epochs, "seeds": int(len(healthy))}, metrics, run_name=f"hparams/{name}"
            )
        if errors:
            writer.add_figure(f"ensemble/abs_error_at_{probe_x:g}", _box_figure(errors, labels, probe_x, truth))


def _box_figure(errors: list, labels: list[str], probe_x: float, truth: float):
    """A box plot of |prediction - truth| per setting (log scale when every error is positive)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.8 * len(labels) + 2), 4.2), dpi=100)
    ax = fig.add_subplot()
    ax.boxplot(errors, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel=f"|prediction({probe_x:g}) - {truth:g}|", title="Error over the seeds, per setting")
    if all(float(e.min()) > 0 for e in errors):
        ax.set_yscale("log")
    fig.tight_layout()
    return fig
