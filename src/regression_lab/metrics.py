"""What a fit measures when it ends: every member's final numbers (one for ``MyNN``, all of an ensemble's), snapshots
after chosen epochs, and their pictures in TensorBoard. ``fit`` adds :class:`FinalMetrics` to every Trainer; the sweep
brings one with snapshot epochs, so its 100- and 200-epoch results are read off the 400-epoch fit::

    regression-lab fit --model.num_seeds 1000 \\
        --trainer.callbacks+=FinalMetrics --trainer.callbacks.snapshot_epochs [100,200]
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from regression_lab.errors import check_int
from regression_lab.files import write_figure


def setting_name(setting: dict[str, Any], epochs: int | None = None) -> str:
    """A setting's short name, e.g. ``h5_e400_lr0.01`` (momentum and weight decay only if set)."""
    # repr, not %g: two settings that differ in the 7th digit must not share a name.
    name = f"h{setting['hidden_size']}" + (f"_e{epochs}" if epochs is not None else "") + f"_lr{float(setting['lr'])!r}"
    for key, short in (("momentum", "m"), ("weight_decay", "wd")):
        if setting.get(key):
            name += f"_{short}{float(setting[key])!r}"
    return name


@torch.no_grad()
def member_numbers(module: L.LightningModule, dm: Any, strategy: Any = None) -> dict[str, torch.Tensor]:
    """Per member, (M,) CPU tensors: ``prediction`` at ``probe_x``, ``train_loss`` and ``val_loss`` (over the ranks'
    shards with a ``strategy``), ``active_units`` on the training inputs and ``diverged`` (its numbers NaN)."""
    probe = torch.tensor([[float(module.hparams.probe_x)]], device=module.device)
    out = {"prediction": module.predict_members(probe)[:, 0, 0]}
    for split in ("train", "val"):
        x, y = getattr(dm, f"{split}_x", None), getattr(dm, f"{split}_y", None)
        if x is not None and y is not None:
            sse = ((module.predict_members(x) - y) ** 2).sum(dim=(1, 2))
            count = torch.tensor(float(len(x)), device=x.device)
            if strategy is not None:
                sse, count = strategy.reduce(sse, reduce_op="sum"), strategy.reduce(count, reduce_op="sum")
            out[f"{split}_loss"] = sse / count
    if getattr(dm, "train_x", None) is not None:
        out["active_units"] = module.active_units(dm.train_x)
    diverged = module.diverged()
    out = {k: torch.where(diverged, torch.nan, v) if k != "active_units" else v for k, v in out.items()}
    return {k: v.detach().cpu() for k, v in {**out, "diverged": diverged}.items()}


def summary(members: dict[str, torch.Tensor], truth: float | None) -> dict[str, float]:
    """The healthy members' mean numbers, ``abs_error`` from ``truth`` (an ensemble's spread and divergences too)."""
    healthy = ~members["diverged"]
    out: dict[str, float] = {}
    for key in ("prediction", "train_loss", "val_loss"):
        if key in members:
            out[key] = float(members[key][healthy].double().mean()) if bool(healthy.any()) else math.nan
    if len(healthy) > 1:
        pred = members["prediction"][healthy].double()
        out.update(members=float(len(healthy)), diverged=float((~healthy).sum()))
        out["prediction_std"] = float(pred.std()) if len(pred) > 1 else 0.0
    if truth is not None:
        out["abs_error"] = abs(out["prediction"] - truth)
    return out


class FinalMetrics(L.Callback):
    """Every member's numbers after chosen epochs and at the end: :attr:`snapshots` (epochs to :func:`member_numbers`,
    kept in checkpoints) and :attr:`metrics` (the last :func:`summary`). In TensorBoard: a single model's numbers beside
    its hyperparameters (``hp/...``); an ensemble's per setting and snapshot as histograms of the validation loss and of
    the prediction, one HParams row of their means, and a box plot of the prediction's error."""

    def __init__(self, snapshot_epochs: list[int] | None = None) -> None:
        """Configure what is recorded.

        Args:
            snapshot_epochs: epoch counts after which every member's numbers are recorded, besides
                the last epoch.
        """
        super().__init__()
        self.snapshot_epochs = sorted({check_int("snapshot_epochs", e, 1) for e in snapshot_epochs or []})
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.metrics: dict[str, float] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 in self.snapshot_epochs:
            self.snapshots[trainer.current_epoch + 1] = member_numbers(pl_module, trainer.datamodule, trainer.strategy)

    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The last epoch's snapshot and summary (every rank must call it: losses are reduced)."""
        dm = trainer.datamodule
        self.snapshots[trainer.current_epoch] = member_numbers(pl_module, dm, trainer.strategy)
        truth = dm.line_at(float(pl_module.hparams.probe_x)) if hasattr(dm, "line_at") else None
        self.metrics = summary(self.snapshots[trainer.current_epoch], truth)
        return self.metrics

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.compute(trainer, pl_module)
        if trainer.logger is None or not trainer.is_global_zero:
            return
        if hasattr(pl_module, "settings"):
            self._write_ensemble(trainer, pl_module)
            return
        params = {k: v for k, v in pl_module.hparams.items() if not k.startswith("_")}  # not _instantiator
        params.update({f"data.{k}": v for k, v in getattr(trainer.datamodule, "hparams", {}).items()})
        logged = getattr(trainer.logger, "hparams", None)  # fast_dev_run's DummyLogger answers any name with a no-op
        seed = logged.get("seed_everything") if isinstance(logged, dict) else None
        if seed is not None:
            params["seed_everything"] = seed
        metrics, step = {f"hp/{k}": v for k, v in self.metrics.items()}, trainer.global_step
        if isinstance(trainer.logger, TensorBoardLogger):  # declares the metrics in the HParams tab
            trainer.logger.log_hyperparams(params, metrics, step=step)
        else:
            trainer.logger.log_hyperparams(params)
            trainer.logger.log_metrics(metrics, step=step)

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.snapshots = dict(state_dict.get("snapshots", {}))

    def per_setting(self, pl_module: L.LightningModule) -> list[tuple[dict[str, Any], int, dict[str, torch.Tensor]]]:
        """Each (setting, epochs) with its members' numbers: a slice of :attr:`snapshots`."""
        sizes, out = pl_module.setting_sizes(), []
        for epochs, members in sorted(self.snapshots.items()):
            parts = {k: v.split(sizes) for k, v in members.items()}
            out += [(s, epochs, {k: parts[k][i] for k in parts}) for i, s in enumerate(pl_module.settings)]
        return out

    def _write_ensemble(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = getattr(trainer.logger, "experiment", None)
        if not hasattr(writer, "add_histogram"):
            return  # pictures need a TensorBoard logger
        probe_x = float(pl_module.hparams.probe_x)
        truth = trainer.datamodule.line_at(probe_x)
        errors, labels = [], []
        for setting, epochs, m in self.per_setting(pl_module):
            name, healthy = setting_name(setting, epochs), ~m["diverged"]
            if not bool(healthy.any()):
                continue
            # Histograms and HParams rows hold one value per setting, never one per member.
            writer.add_histogram(f"ensemble_val_loss/{name}", m["val_loss"][healthy], global_step=epochs)
            writer.add_histogram(f"ensemble_prediction/{name}", m["prediction"][healthy], global_step=epochs)
            err = (m["prediction"][healthy].double() - truth).abs()
            metrics = {
                "hp/val_loss_mean": float(m["val_loss"][healthy].double().mean()),
                "hp/prediction_mean": float(m["prediction"][healthy].double().mean()),
                "hp/abs_error_mean": float(err.mean()),
                "hp/diverged_share": float((~healthy).double().mean()),
            }
            hparams = {**setting, "epochs": epochs, "seeds": len(healthy)}
            writer.add_hparams(hparams, metrics, run_name=f"hparams/{name}")
            errors.append(err.numpy())
            labels.append(name)
        if errors:
            write_figure(_box_figure(errors, labels, probe_x, truth), writer, f"ensemble/abs_error_at_{probe_x:g}")
        writer.flush()


def _box_figure(errors: list, labels: list[str], probe_x: float, truth: float) -> Any:
    """A box plot of |prediction - truth| per setting (log scale when every error is positive)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.8 * len(labels) + 2), 4.2), dpi=100)
    ax = fig.add_subplot()
    ax.boxplot(errors, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel=f"|prediction({probe_x:g}) - {truth:g}|", title="Error over the seeds, per setting")
    if all(float(e.min()) > 0 for e in errors):
        ax.set_yscale("log")
    return fig
