"""How runs are pictured in TensorBoard: the one HParams experiment every run declares, an ensemble's Custom Scalars
layout, its box plot and its note on mean and median, and the sweep's error figure. Used by
:mod:`regression_lab.metrics` and the sweep's report::

    python -c "from regression_lab.pictures import setting_name; print(setting_name({'hidden_size': 5, 'lr': 1}, 9))"
"""

from __future__ import annotations

import math
import os
import re
from typing import Any


def setting_name(setting: dict[str, Any], epochs: int | None = None) -> str:
    """A setting's short name, e.g. ``h5_e400_lr0.01`` (momentum and weight decay only if set)."""
    # repr, not %g: two settings that differ in the 7th digit must not share a name.
    name = f"h{setting['hidden_size']}" + (f"_e{epochs}" if epochs is not None else "") + f"_lr{float(setting['lr'])!r}"
    for key, short in (("momentum", "m"), ("weight_decay", "wd")):
        if setting.get(key):
            name += f"_{short}{float(setting[key])!r}"
    return name


#: The HParams columns and metrics every run declares: one experiment, so TensorBoard's HParams tab shows every lab run,
#: ensemble setting and sweep setting in one table (a run leaves blank what it has not).
HPARAMS = ("hidden_size", "lr", "momentum", "weight_decay", "epochs", "seeds", "first_seed", "seed_everything",
           "probe_x")  # fmt: skip
HP_METRICS = ("prediction", "abs_error", "train_loss", "val_loss", "prediction_std", "diverged_share")


def write_hparams(writer: Any, name: str, params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """One HParams row, the sub-run ``hparams/<name>`` of ``writer``'s run unless a resumed run has written it:
    ``params`` (``data.*`` included) and ``metrics`` (as ``hp/...`` scalars), under the one experiment."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    if os.path.isdir(path := os.path.join(writer.log_dir, "hparams", name)):
        return
    kind = lambda v: v if isinstance(v, (bool, str)) else 0.0  # noqa: E731  (a column's type, not its value)
    names = {**{k: 0.0 for k in HPARAMS}, **{k: kind(v) for k, v in params.items() if k.startswith("data.")}}
    declared = hparams(names, {f"hp/{k}": 0.0 for k in HP_METRICS})[0]
    _, start, end = hparams({k: v for k, v in params.items() if k in names and isinstance(v, (int, float, str))}, {})
    with SummaryWriter(path) as row:
        for part in (declared, start, end):
            row.file_writer.add_summary(part)
        for key, value in metrics.items():
            if key in HP_METRICS:
                row.add_scalar(f"hp/{key}", value, global_step=step)


def percentile_layout(settings: list[dict[str, Any]]) -> dict[str, Any]:
    """TensorBoard's Custom Scalars: per setting, the loss percentiles as margin charts and the mean beside the median;
    and the settings' medians compared (across every run that logs them)."""
    tag = lambda split, name: f"{split}_loss_percentiles/{name}/"  # noqa: E731
    layout = {
        f"loss over the seeds: {name}": {
            **{f"{split} loss, median and 10th-90th percentiles":
               ["Margin", [tag(split, name) + q for q in ("p50", "p10", "p90")]] for split in ("train", "val")},
            **{f"{split} loss, mean and median": ["Multiline", [re.escape(tag(split, name)) + "(mean|p50)$"]]
               for split in ("train", "val")},
        }
        for name in map(setting_name, settings)
    }  # fmt: skip
    layout["loss over the seeds: settings compared"] = {
        f"{split} loss, median per setting": ["Multiline", [rf"{split}_loss_percentiles/.*/p50$"]]
        for split in ("train", "val")
    }
    return layout


#: The Text note beside the percentile charts (why the ensemble's mean is not its typical member), then its table.
MEAN_AND_MEDIAN = (
    "The mean over the seeds is ruled by the few members that end far from the line (a ReLU unit off on all the data "
    "stops learning), while the median is the typical member: compare them per setting."
)


def mean_and_median(probe_x: float, rows: list[list[Any]], errors: bool = True) -> str:
    """:data:`MEAN_AND_MEDIAN` and its table, a row per setting (its name, the numbers, the dead-unit share)."""
    from regression_lab.files import markdown_table

    error = [f"error at {probe_x:g} mean", f"error at {probe_x:g} median"] if errors else []  # a file: no known line
    header = ["setting", "val loss mean", "val loss median", *error, "seeds with a dead unit"]
    return MEAN_AND_MEDIAN + "\n\n" + markdown_table(header, rows)


def log_scale(ax: Any) -> None:
    """A log y axis labelled in plain numbers (0.01, 0.1, 1), not in mathtext powers of ten, which matplotlib parses
    anew at every draw; within one decade the minor ticks are labelled too, as matplotlib's own would be."""
    from matplotlib import ticker

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if high < 10 * low else ticker.NullFormatter())


def box_figure(errors: list, labels: list[str], probe_x: float, truth: float) -> Any:
    """A box plot of |prediction - truth| per setting, every outlier drawn and the mean marked (log scale when every
    error is positive): the outliers are why the mean is far above the median."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.8 * len(labels) + 2), 4.2), dpi=100)
    ax = fig.add_subplot()
    ax.boxplot(errors, showfliers=True, showmeans=True, flierprops={"markersize": 3, "alpha": 0.5},
               meanprops={"marker": "D", "markerfacecolor": "C3", "markeredgecolor": "C3"})  # fmt: skip
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=8)
    seeds = ", ".join(sorted({f"{len(e):,}" for e in errors}))
    ax.set(ylabel=f"|prediction({probe_x:g}) - {truth:g}|",
           title=f"Error over the seeds ({seeds} per setting): boxes, outliers, mean (red diamond)")  # fmt: skip
    if all(e.size and float(e.min()) > 0 for e in errors):
        log_scale(ax)
    return fig


def error_figure(rows: list[dict[str, Any]], truth: float, probe_x: float) -> Any:
    """|pred(probe_x) - truth| against epochs, one line per hidden size (and lr), with 95% CI bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    ax = fig.add_subplot()
    done = [r for r in rows if r["state"] == "COMPLETE"]
    lrs, seeds = sorted({r["lr"] for r in done}), sorted({r["n_seeds"] for r in done})
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for r in sorted(done, key=lambda r: r["epochs"]):
        lines.setdefault((r["hidden_size"], r["lr"]), []).append(r)
    for (h, lr), group in sorted(lines.items()):
        means = [r["err10_mean"] for r in group]
        bars = [[max(0.0, m - r["err10_ci_low"]) for m, r in zip(means, group, strict=True)],
                [max(0.0, r["err10_ci_high"] - m) for m, r in zip(means, group, strict=True)]]  # fmt: skip
        bars = [[b if math.isfinite(b) else 0.0 for b in side] for side in bars]
        label = f"hidden {h}" + (f", lr {lr:g}" if len(lrs) > 1 else "")
        ax.errorbar([r["epochs"] for r in group], means, yerr=bars, marker="o", capsize=3, label=label)
    title = (
        f"Error at x = {probe_x:g}: lr {', '.join(f'{lr:g}' for lr in lrs)}, {', '.join(f'{n:,}' for n in seeds)} seeds"
    )
    ax.set(xlabel="epochs", ylabel=f"|prediction({probe_x:g}) - {truth:g}|, mean and 95% CI over seeds", title=title)
    if done and all(0 < r["err10_mean"] < math.inf for r in done):
        log_scale(ax)
    ax.legend(fontsize=8)
    return fig
