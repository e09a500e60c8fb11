"""What a fit measures: every member's final numbers (one for ``MyNN``, all of an ensemble's), snapshots after chosen
epochs, an ensemble's spread over training, their pictures in TensorBoard (one HParams table for every kind of run),
and fit's closing report. ``fit`` adds :class:`FinalMetrics` to every Trainer; the sweep brings one with snapshot
epochs, so its 100- and 200-epoch results are read off the 400-epoch fit::

    regression-lab fit --model.num_seeds 1000 \\
        --trainer.callbacks+=FinalMetrics --trainer.callbacks.snapshot_epochs [100,200]
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from regression_lab.callbacks import divergence_advice
from regression_lab.curvature import log_top_eigenvalues
from regression_lab.errors import TrainingFailed, check_int
from regression_lab.files import write_figure, write_text
from regression_lab.pictures import box_figure, mean_and_median, percentile_layout, setting_name, write_hparams


@torch.no_grad()
def member_numbers(
    module: L.LightningModule, dm: Any, strategy: Any = None, splits: tuple[str, ...] = ("train", "val")
) -> dict[str, torch.Tensor]:
    """Per member, (M,) CPU tensors: ``prediction`` at ``probe_x``, the ``splits``' losses (``train_loss``,
    ``val_loss``, over the ranks' shards with a ``strategy``), ``active_units`` on the training inputs (with "train")
    and ``diverged`` (its numbers NaN)."""
    probe = torch.tensor([[float(module.hparams.probe_x)]], device=module.device)
    out = {"prediction": module.predict_members(probe)[:, 0, 0]}
    for split in splits:
        x, y = getattr(dm, f"{split}_x", None), getattr(dm, f"{split}_y", None)
        if x is not None and y is not None:
            sse = ((module.predict_members(x) - y) ** 2).sum(dim=(1, 2))
            count = torch.tensor(float(len(x)), device=x.device)
            if strategy is not None:
                sse, count = strategy.reduce(sse, reduce_op="sum"), strategy.reduce(count, reduce_op="sum")
            out[f"{split}_loss"] = sse / count
    if "train" in splits and getattr(dm, "train_x", None) is not None:
        out["active_units"] = module.active_units(dm.train_x)
    diverged = module.diverged()
    out = {k: torch.where(diverged, torch.nan, v) if k != "active_units" else v for k, v in out.items()}
    return {k: v.detach().cpu() for k, v in {**out, "diverged": diverged}.items()}


def summary(members: dict[str, torch.Tensor], truth: float | None) -> dict[str, float]:
    """The healthy members' mean numbers, ``abs_error`` from ``truth`` (an ensemble's spread and divergences too)."""
    healthy = ~members["diverged"]
    keys = [k for k in ("prediction", "train_loss", "val_loss") if k in members]
    out = {k: float(members[k][healthy].double().mean()) for k in keys}  # NaN when every member diverged
    if len(healthy) > 1:
        pred = members["prediction"][healthy].double()
        out.update(members=float(len(healthy)), diverged=float((~healthy).sum()))
        out["prediction_std"] = float(pred.std()) if len(pred) > 1 else 0.0
    if truth is not None:
        out["abs_error"] = abs(out["prediction"] - truth)
    return out


#: The percentiles of the members' losses drawn per setting (TensorBoard's margin charts).
QUANTILES = (0.1, 0.5, 0.9)


def percentiles(name: str, module: L.LightningModule, losses: torch.Tensor) -> dict[str, float]:
    """Per setting, the 10th, 50th and 90th percentile and the mean of ``losses`` (M,) over its healthy members."""
    losses = torch.where(module.diverged(), torch.nan, losses)
    q = torch.tensor(QUANTILES, dtype=losses.dtype, device=losses.device)
    parts = losses.split(module.setting_sizes())
    rows = torch.stack([torch.cat([torch.nanquantile(p, q), p.nanmean()[None]]) for p in parts]).tolist()
    labels = [f"p{round(100 * level)}" for level in QUANTILES] + ["mean"]
    return {f"{name}_percentiles/{setting_name(s)}/{label}": v
            for s, row in zip(module.settings, rows, strict=True) for label, v in zip(labels, row, strict=True)
            if math.isfinite(v)}  # fmt: skip


class FinalMetrics(L.Callback):
    """Every member's numbers after chosen epochs and at the end: :attr:`snapshots` (epochs to :func:`member_numbers`,
    kept in checkpoints) and :attr:`metrics` (the last :func:`summary`). In TensorBoard: each run's (or each ensemble
    setting's) HParams row; for an ensemble, per setting over training the loss percentiles (Custom Scalars) and the
    members' validation loss (log10) and prediction at every validation (Distributions, Histograms), and at the end a
    box plot of the prediction's error over every setting and a note on why mean and median differ (Text)."""

    def __init__(self, snapshot_epochs: list[int] | None = None, box_plot: bool = True) -> None:
        """Configure what is recorded.

        Args:
            snapshot_epochs: epoch counts after which every member's numbers are recorded, besides the last epoch.
            box_plot: draw an ensemble's box plot at the end (a sweep draws one over all its trials).
        """
        super().__init__()
        self.box_plot = box_plot
        self.snapshot_epochs = sorted({check_int("snapshot_epochs", e, 1) for e in snapshot_epochs or []})
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.metrics: dict[str, float] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hasattr(pl_module, "settings") and (writer := _writer(trainer)) is not None:
            writer.add_custom_scalars(percentile_layout(pl_module.settings))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *_: Any) -> None:
        # Not M curves: each setting's percentiles, at the steps whose loss is written anyway.
        losses = outputs.get("member_losses") if isinstance(outputs, dict) else None
        step = trainer.global_step
        if losses is not None and trainer.logger is not None and step % max(1, trainer.log_every_n_steps) == 0:
            losses = trainer.strategy.reduce(losses, reduce_op="mean")  # every rank: a shard's loss is weighted
            trainer.logger.log_metrics(percentiles("train_loss", pl_module, losses), step=step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 in self.snapshot_epochs:
            self.snapshots[trainer.current_epoch + 1] = member_numbers(pl_module, trainer.datamodule, trainer.strategy)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "settings") or trainer.sanity_checking or trainer.logger is None:
            return
        numbers = member_numbers(pl_module, trainer.datamodule, trainer.strategy, ("val",))  # every rank: reduced
        if "val_loss" not in numbers or not trainer.is_global_zero:
            return
        trainer.logger.log_metrics(percentiles("val_loss", pl_module, numbers["val_loss"]), step=trainer.global_step)
        if (writer := _writer(trainer)) is None:
            return
        sizes = pl_module.setting_sizes()
        parts = zip(*(numbers[k].split(sizes) for k in ("val_loss", "prediction", "diverged")), strict=True)
        for setting, (val, pred, diverged) in zip(pl_module.settings, parts, strict=True):
            name, val, pred = setting_name(setting), val[~diverged], pred[~diverged]
            for tag, values in (("val_loss_log10", val.clamp_min(1e-12).log10()), ("prediction", pred)):
                # log10: the dead-unit tail shows beside the spike near 0. Values past the bins' 1e20 (a far
                # probe_x) cannot be binned: no histogram, the numbers are in the report.
                with contextlib.suppress(ValueError):
                    writer.add_histogram(f"members_{tag}/{name}", values[torch.isfinite(values)], trainer.global_step)

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
        params = {k: v for k, v in pl_module.hparams.items() if not k.startswith("_")}  # not _instantiator
        params.update({f"data.{k}": v for k, v in getattr(trainer.datamodule, "hparams", {}).items() if k[0] != "_"})
        logged = getattr(trainer.logger, "hparams", None)  # (DummyLogger: a no-op function)
        if isinstance(logged, dict) and logged.get("seed_everything") is not None:
            params["seed_everything"] = logged["seed_everything"]
        writer, ensemble = _writer(trainer), hasattr(pl_module, "settings")
        if ensemble and writer is not None:
            self._write_ensemble(trainer, pl_module, writer, params)
        elif writer is not None:  # a row per fit (a resumed run adds one): TensorBoard keeps a run's first
            row = {**params, "epochs": trainer.current_epoch, "seeds": 1, "first_seed": params.get("seed_everything")}
            write_hparams(writer, setting_name(row, row["epochs"]), row, self.metrics, trainer.global_step)
        elif not ensemble:
            trainer.logger.log_hyperparams(params)
            trainer.logger.log_metrics({f"hp/{k}": v for k, v in self.metrics.items()}, step=trainer.global_step)

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

    def _write_ensemble(self, trainer: L.Trainer, pl_module: L.LightningModule, writer: Any, params: dict) -> None:
        probe_x = float(pl_module.hparams.probe_x)
        truth = trainer.datamodule.line_at(probe_x)
        errors, labels, notes = [], [], []
        data = {k: v for k, v in params.items() if k.startswith("data.") or k in ("seed_everything", "probe_x")}
        for setting, epochs, m in self.per_setting(pl_module):  # a row per setting, not per member
            name, healthy = setting_name(setting, epochs), ~m["diverged"]
            numbers = summary(m, truth) if bool(healthy.any()) else {}
            numbers["diverged_share"] = float((~healthy).double().mean())
            row = {**data, **setting, "epochs": epochs, "seeds": len(m["diverged"]), "first_seed": pl_module.seeds[0]}
            write_hparams(writer, name, row, numbers, epochs)
            if not bool(healthy.any()):
                notes.append([name, "every member diverged", *[""] * (2 if truth is None else 4)])
                continue
            err = None if truth is None else (m["prediction"][healthy].double() - truth).abs()  # None: from a file
            if err is not None:  # a prediction past float32 (a far probe_x) has no place on the axis
                errors.append(err[err.isfinite()].numpy())
                labels.append(name)
            val, dead = m["val_loss"][healthy].double(), m["active_units"][healthy] < setting["hidden_size"]
            stats = (val.mean(), val.median(), *(() if err is None else (err.mean(), err.median())))
            notes.append([name, *(f"{float(t):.4g}" for t in stats), f"{float(dead.double().mean()):.1%}"])
        if trainer.world_size == 1:  # the curvature on the whole training set: one process's
            log_top_eigenvalues(writer, pl_module, trainer.datamodule, trainer.current_epoch)
        if errors and self.box_plot:
            write_figure(box_figure(errors, labels, probe_x, truth), writer, f"ensemble/abs_error_at_{probe_x:g}")
        if notes:
            write_text(writer, "ensemble/mean_and_median", mean_and_median(probe_x, notes, truth is not None))
        writer.flush()


def _writer(trainer: L.Trainer) -> Any:
    """The run's TensorBoard SummaryWriter on rank 0, else None (not by duck typing: fast_dev_run's DummyLogger)."""
    tensorboard = isinstance(trainer.logger, TensorBoardLogger) and trainer.is_global_zero
    return trainer.logger.experiment if tensorboard else None


def report(model: Any, trainer: L.Trainer, datamodule: Any, metrics: dict[str, float], last: str | None) -> None:
    """The closing lines of ``fit``: the lab's prediction, dead or diverged members, checkpoints, TensorBoard run."""
    probe, advice = f"{model.hparams.probe_x:g}", divergence_advice(model, datamodule)
    members, diverged = int(metrics.get("members", 1)), int(metrics.get("diverged", 0))
    if members == 1:
        print(f"Model prediction for {probe} is {metrics['prediction']:.4f}")
    else:
        print(f"Ensemble prediction for {probe} is {metrics['prediction']:.4f} ± {metrics['prediction_std']:.4f} "
              f"(mean ± std over {members - diverged} members)")  # fmt: skip
    if not math.isfinite(metrics["prediction"]) and diverged < members:
        print(f"warning: the prediction at --model.probe_x {probe} is past float32's range; choose an x "
              "nearer the data", file=sys.stderr)  # fmt: skip
    if diverged:
        print(f"warning: {diverged} of {members} members diverged and were left out; {advice}", file=sys.stderr)
    dead = int(((model.active_units(datamodule.train_x) == 0) & ~model.diverged()).sum())
    if dead and members == 1:
        # A too-large step can push every ReLU unit off all the data: the loss stops falling, nothing diverges.
        print("warning: every hidden ReLU unit is off on all training inputs (dead): no gradient reaches them and "
              f"the fit is flat over the training data; {advice}; or try another --seed_everything",
              file=sys.stderr)  # fmt: skip
    elif dead:
        print(f"warning: {dead} of {members} members have every hidden ReLU unit dead (a flat fit)", file=sys.stderr)
    if last is not None:
        print(f"Checkpoint: {last}")
    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path:
        print(f"Best checkpoint ({trainer.checkpoint_callback.monitor}): {trainer.checkpoint_callback.best_model_path}")
    if isinstance(trainer.logger, TensorBoardLogger):
        log_dir = trainer.logger.log_dir
        print(f"TensorBoard logs: {log_dir}  (tensorboard --logdir {Path(log_dir).parent})")
    if diverged == members:
        raise TrainingFailed(f"every member of the ensemble diverged; {advice}")
