"""The sweep's report: statistics over the seeds, the ranked table, the verdict, CSV files and
figures. It reads the members' numbers (one row per member and epoch count), whoever trained them.

Used by :mod:`regression_lab.commands.sweep`; try it::

    python -c "from regression_lab.commands.sweep_report import mean_ci; print(mean_ci([1.0, 2.0, 3.0]))"
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

from regression_lab.core.safe_io import atomic_write

#: The lab's question: the prediction for this x, against the line's value there.
PROBE_X, TRUTH = 10.0, 32.0


def seed_ranges(seeds: list[int]) -> list[str]:
    """Seeds written compactly as ranges, in order: ``[0, 1, 2, 7]`` gives ``["0-2", "7"]``."""
    out: list[str] = []
    start = prev = seeds[0]
    for s in [*seeds[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(f"{start}-{prev}" if prev != start else str(start))
        if s is not None:
            start = prev = s
    return out


def trial_name(hidden: int, epochs: int, lr: float, seed: int | None = None) -> str:
    """A trial's name, e.g. ``h5_e400_lr0.01_s0`` (a setting's without the seed)."""
    # repr, not %g: 0.01 and 0.0100001 are two settings and must keep two names.
    return f"h{hidden}_e{epochs}_lr{float(lr)!r}" + (f"_s{seed}" if seed is not None else "")


#: Student's t at 97.5% for 1..30 degrees of freedom; beyond, the normal 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def mean_ci(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the 95% confidence interval of the mean (Student's t)."""
    n = len(values)
    if n == 0:
        return math.inf, math.nan, math.inf, math.inf
    mean = statistics.fmean(values)
    if n == 1:
        return mean, 0.0, -math.inf, math.inf
    std = statistics.stdev(values)
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def summarize(results: list[dict[str, Any]], unfinished: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per setting, best first by mean validation loss over its healthy seeds.

    ``results`` holds one row per member and epoch count of the finished settings;
    ``unfinished`` one row per pruned or failed setting (``hidden_size``, ``epochs``, ``lr``,
    ``state``, ``n_seeds`` and the last reported ``val_loss_mean``), ranked after the others.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["hidden_size"], r["epochs"], r["lr"]), []).append(r)
    # How often each setting is the best one: per seed, the setting of lowest validation loss.
    by_seed: dict[int, tuple[float, tuple]] = {}
    for key, group in groups.items():
        for r in group:
            best = by_seed.get(r["seed"])
            if best is None or r["val_loss"] < best[0]:
                by_seed[r["seed"]] = (r["val_loss"], key)
    wins = statistics.Counter(key for _, key in by_seed.values()) if by_seed else {}
    rows = []
    for (h, e, lr), group in groups.items():
        healthy = [r for r in group if not r["diverged"]]
        vl = mean_ci([r["val_loss"] for r in healthy])
        er = mean_ci([r["abs_error"] for r in healthy])
        units = [int(r["active_units"]) for r in healthy]
        rows.append(
            {
                "hidden_size": h, "epochs": e, "lr": lr, "n_seeds": len(group),
                "val_loss_mean": vl[0], "val_loss_std": vl[1], "err10_mean": er[0], "err10_std": er[1],
                "val_loss_ci_low": vl[2], "val_loss_ci_high": vl[3], "err10_ci_low": er[2], "err10_ci_high": er[3],
                "val_loss_median": statistics.median([r["val_loss"] for r in group]),
                "err10_median": statistics.median([r["abs_error"] for r in group]),
                "train_loss_mean": statistics.fmean([r["train_loss"] for r in healthy]) if healthy else math.inf,
                "all_dead_share": sum(u == 0 for u in units) / len(group),
                "dead_unit_share": sum(u < h for u in units) / len(group),
                "diverged_share": (len(group) - len(healthy)) / len(group),
                "best_share": wins.get((h, e, lr), 0) / max(1, len(by_seed)),
                "state": "COMPLETE",
                "_group": group,
            }
        )  # fmt: skip
    rows.sort(key=lambda r: (r["val_loss_mean"], r["err10_mean"]))
    nan = math.nan
    for u in sorted(unfinished or [], key=lambda u: (u["state"], u.get("val_loss_mean", math.inf))):
        empty = {k: nan for k in CSV_COLUMNS if k not in u}
        rows.append({**empty, "err10_mean": math.inf, "_group": [], **u})
    return rows


CSV_COLUMNS = [
    "hidden_size", "epochs", "lr", "n_seeds", "val_loss_mean", "val_loss_std", "err10_mean", "err10_std",
    "val_loss_ci_low", "val_loss_ci_high", "err10_ci_low", "err10_ci_high", "val_loss_median", "err10_median",
    "train_loss_mean", "all_dead_share", "dead_unit_share", "diverged_share", "best_share", "state",
]  # fmt: skip
MEMBER_COLUMNS = [
    "name", "hidden_size", "epochs", "lr", "seed", "prediction", "val_loss", "train_loss", "abs_error",
    "active_units", "diverged",
]  # fmt: skip


def format_table(rows: list[dict[str, Any]]) -> str:
    """The ranked table for the terminal."""
    head = (
        f"{'rank':>4}  {'hidden':>6}  {'epochs':>6}  {'lr':>7}  {'seeds':>5}  {'val loss, mean [95% CI]':<27}  "
        f"{'median':>8}  {'|pred(10) - 32|, mean [95% CI]':<31}  {'dead all/some':>13}  {'diverged':>8}  {'best':>5}"
    )
    lines = [head]
    for i, r in enumerate(rows, start=1):
        if r["state"] != "COMPLETE":
            last = r.get("val_loss_mean", math.nan)
            what = f"{r['state'].lower()}" + (f" (val loss {last:.3g} when stopped)" if math.isfinite(last) else "")
            lines.append(f"{i:>4}  {r['hidden_size']:>6}  {r['epochs']:>6}  {r['lr']:>7g}  {r['n_seeds']:>5}  {what}")
            continue
        val = f"{r['val_loss_mean']:.3g} [{r['val_loss_ci_low']:.3g}, {r['val_loss_ci_high']:.3g}]"
        err = f"{r['err10_mean']:.4f} [{r['err10_ci_low']:.4f}, {r['err10_ci_high']:.4f}]"
        dead = f"{r['all_dead_share']:.1%}/{r['dead_unit_share']:.1%}"
        lines.append(
            f"{i:>4}  {r['hidden_size']:>6}  {r['epochs']:>6}  {r['lr']:>7g}  {r['n_seeds']:>5}  {val:<27}  "
            f"{r['val_loss_median']:>8.3g}  {err:<31}  {dead:>13}  {r['diverged_share']:>8.1%}  {r['best_share']:>5.0%}"
        )
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> str:
    """One line naming the best setting and whether it is clearly ahead of the runner-up.

    The comparison is paired by seed (both settings see the same seeds and data): the 95%
    confidence interval of the mean difference in validation loss over the seeds where both
    stayed finite. The winner is clearly ahead when that interval lies above zero.
    """
    b = rows[0]
    if b["state"] != "COMPLETE":
        return "best: none yet (no setting has finished)"
    line = (
        f"best: hidden_size={b['hidden_size']}, epochs={b['epochs']}, lr={b['lr']:g} "
        f"(val loss {b['val_loss_mean']:.3g} [{b['val_loss_ci_low']:.3g}, {b['val_loss_ci_high']:.3g}], "
        f"|pred(10) - 32| {b['err10_mean']:.4f}, best for {b['best_share']:.0%} of {b['n_seeds']} seeds)"
    )
    if len(rows) < 2 or rows[1]["state"] != "COMPLETE":
        return line
    r = rows[1]
    theirs = {t["seed"]: t["val_loss"] for t in r["_group"] if not t["diverged"]}
    diffs = [theirs[t["seed"]] - t["val_loss"] for t in b["_group"] if not t["diverged"] and t["seed"] in theirs]
    mean, _, low, high = mean_ci(diffs)
    runner = f"hidden_size={r['hidden_size']}, epochs={r['epochs']}, lr={r['lr']:g}"
    if len(diffs) > 1 and low > 0:
        return (
            f"{line}; clearly ahead of {runner} (paired difference {mean:.3g} [{low:.3g}, {high:.3g}] "
            f"over {len(diffs)} seeds)"
        )
    return (
        f"{line}; within the noise of {runner} (paired difference {mean:.3g} [{low:.3g}, {high:.3g}] "
        f"over {len(diffs)} seeds): more seeds would be needed to tell them apart"
    )


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def error_figure(rows: list[dict[str, Any]]):
    """|pred(10) - 32| against epochs, one line per hidden size (and lr), with 95% CI bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    ax = fig.add_subplot()
    rows = [r for r in rows if r["state"] == "COMPLETE"]
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault((r["hidden_size"], r["lr"]), []).append(r)
    many_lrs = len({r["lr"] for r in rows}) > 1
    for (h, lr), group in sorted(lines.items()):
        group.sort(key=lambda r: r["epochs"])
        label = f"hidden {h}" + (f", lr {lr:g}" if many_lrs else "")
        means = [r["err10_mean"] for r in group]
        bars = [
            [max(0.0, m - r["err10_ci_low"]) for m, r in zip(means, group, strict=True)],
            [max(0.0, r["err10_ci_high"] - m) for m, r in zip(means, group, strict=True)],
        ]
        bars = [[b if math.isfinite(b) else 0.0 for b in side] for side in bars]
        ax.errorbar([r["epochs"] for r in group], means, yerr=bars, marker="o", capsize=3, label=label)
    ax.set(xlabel="epochs", ylabel="|prediction(10) - 32|, mean and 95% CI over seeds", title="Error at x = 10")
    if rows and all(0 < r["err10_mean"] < math.inf for r in rows):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_outputs(rows: list[dict[str, Any]], members: list[dict[str, Any]], out_dir: Path, writer: Any) -> None:
    """results.csv, members.csv and the error figure as PNG; the table, verdict and figure into
    the TensorBoard ``writer`` (a ``SummaryWriter``)."""
    write_csv(out_dir / "results.csv", rows, CSV_COLUMNS)
    member_rows = sorted(members, key=lambda r: (r["hidden_size"], r["epochs"], r["lr"], r["seed"]))
    write_csv(out_dir / "members.csv", member_rows, MEMBER_COLUMNS)
    fig = error_figure(rows)
    with atomic_write(out_dir / "error_vs_epochs.png", "wb") as fh:
        fig.savefig(fh, format="png")
    writer.add_figure("sweep/error_vs_epochs", fig)
    table = (
        "| rank | hidden | epochs | lr | seeds | state | val loss [95% CI] | median | abs error at 10 [95% CI] "
        "| all dead | diverged | best |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    table += "\n".join(
        f"| {i} | {r['hidden_size']} | {r['epochs']} | {r['lr']:g} | {r['n_seeds']} | {r['state'].lower()} | "
        f"{r['val_loss_mean']:.3g} [{r['val_loss_ci_low']:.3g}, {r['val_loss_ci_high']:.3g}] | "
        f"{r['val_loss_median']:.3g} | {r['err10_mean']:.4f} [{r['err10_ci_low']:.4f}, {r['err10_ci_high']:.4f}] | "
        f"{r['all_dead_share']:.1%} | {r['diverged_share']:.1%} | {r['best_share']:.0%} |"
        for i, r in enumerate(rows, start=1)
    )
    writer.add_text("sweep/results", table + "\n\n" + verdict(rows))
