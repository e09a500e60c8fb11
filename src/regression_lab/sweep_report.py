"""The sweep's report, made from the study's storage alone: every member's numbers, statistics over the seeds, the
ranked table, the verdict, and the CSV files and figures. Used by :mod:`regression_lab.sweep`; try it::

    python -c "from regression_lab.sweep_report import mean_ci; print(mean_ci([1.0, 2.0, 3.0]))"
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from regression_lab.errors import UsageError
from regression_lab.files import atomic_write, markdown_table, write_figure, write_text
from regression_lab.pictures import box_figure, error_figure, setting_name
from regression_lab.sweep import parse_seeds

#: The study user attribute that records what the sweep searches (and the probe's truth).
DEFINITION_ATTR = "regression_lab_sweep"
#: The trial system attribute that holds every member's numbers (a sweep before it kept them in ``members``).
MEMBERS_ATTR = "regression_lab_members"
CSV_COLUMNS = [
    "hidden_size", "epochs", "lr", "n_seeds", "val_loss_mean", "val_loss_std", "err10_mean", "err10_std",
    "val_loss_ci_low", "val_loss_ci_high", "err10_ci_low", "err10_ci_high", "val_loss_median", "err10_median",
    "train_loss_mean", "all_dead_share", "dead_unit_share", "diverged_share", "best_share", "state",
]  # fmt: skip
MEMBER_COLUMNS = [
    "name", "hidden_size", "epochs", "lr", "seed", "prediction", "val_loss", "train_loss", "abs_error",
    "active_units", "diverged",
]  # fmt: skip
#: A diverged member's numbers, and a missing one's: no prediction, an infinite loss.
MISSING = {"prediction": math.nan, "val_loss": math.inf, "train_loss": math.inf}
#: Student's t at 97.5% for 1..30 degrees of freedom; beyond, the normal 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def trial_name(hidden: int, epochs: int, lr: float, seed: int) -> str:
    """A member's name in members.csv, e.g. ``h5_e400_lr0.01_s0``: its setting's name and its seed."""
    return f"{setting_name({'hidden_size': hidden, 'lr': lr}, epochs)}_s{seed}"


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


def members_of(study: optuna.Study) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float | None]:
    """From the storage: a row per member and epoch count of the finished settings, a row per pruned, failed or
    running setting that never finished, and the truth at the probe."""
    definition = study.user_attrs.get(DEFINITION_ATTR, {})
    seeds, truth = parse_seeds(definition.get("seeds", [])), definition.get("truth")
    rows, unfinished, done = [], {}, set()
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: (t.state != TrialState.COMPLETE, t.number)):
        if not {"hidden_size", "lr"} <= set(t.params):
            continue
        h, lr = t.params["hidden_size"], float(t.params["lr"])
        epochs = [t.params["epochs"]] if "epochs" in t.params else list(definition.get("epochs", []))
        if (h, lr, tuple(epochs)) in done:
            continue  # a copy, or a retried trial: the first finished one counts
        numbers = t.system_attrs.get(MEMBERS_ATTR, t.user_attrs.get("members"))
        if t.state == TrialState.COMPLETE and numbers is not None:
            done.add((h, lr, tuple(epochs)))
            for e, m in numbers.items():
                for i, seed in enumerate(seeds):
                    dead = bool(m["diverged"][i])
                    numbers = {k: no if dead or m[k][i] is None else float(m[k][i]) for k, no in MISSING.items()}
                    error = math.nan if truth is None else math.inf if dead else abs(numbers["prediction"] - truth)
                    rows.append({"name": trial_name(h, int(e), lr, seed), "hidden_size": h, "epochs": int(e), "lr": lr,
                                 "seed": seed, "diverged": int(dead), **numbers, "abs_error": error,
                                 "active_units": 0 if dead else int(m["active_units"][i])})  # fmt: skip
        elif t.state in (TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
            last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else math.inf
            for e in epochs:
                unfinished.setdefault((h, e, lr), {"hidden_size": h, "epochs": e, "lr": lr, "n_seeds": len(seeds),
                                                   "state": t.state.name, "val_loss_mean": last})  # fmt: skip
    left = [u for (h, e, lr), u in unfinished.items() if not any(d[:2] == (h, lr) for d in done)]
    return rows, left, truth


def summarize(results: list[dict[str, Any]], unfinished: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting, best first by the mean validation loss over its healthy seeds; the unfinished after them."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    by_seed: dict[int, tuple[float, tuple]] = {}  # per seed, the setting of lowest validation loss: how often it wins
    for r in results:
        key = (r["hidden_size"], r["epochs"], r["lr"])
        groups.setdefault(key, []).append(r)
        if r["seed"] not in by_seed or r["val_loss"] < by_seed[r["seed"]][0]:
            by_seed[r["seed"]] = (r["val_loss"], key)
    wins = Counter(key for _, key in by_seed.values())
    rows = []
    for (h, e, lr), group in groups.items():
        healthy = [r for r in group if not r["diverged"]]
        errs = [r["abs_error"] for r in healthy if not math.isnan(r["abs_error"])]  # none without a known line
        vl, er = mean_ci([r["val_loss"] for r in healthy]), mean_ci(errs) if errs else (math.nan,) * 4
        units, n = [int(r["active_units"]) for r in healthy], len(group)
        rows.append({
            "hidden_size": h, "epochs": e, "lr": lr, "n_seeds": n, "val_loss_mean": vl[0], "val_loss_std": vl[1],
            "err10_mean": er[0], "err10_std": er[1], "val_loss_ci_low": vl[2], "val_loss_ci_high": vl[3],
            "err10_ci_low": er[2], "err10_ci_high": er[3],
            "val_loss_median": statistics.median([r["val_loss"] for r in group]),
            "err10_median": statistics.median([r["abs_error"] for r in group]) if errs else math.nan,
            "train_loss_mean": statistics.fmean([r["train_loss"] for r in healthy]) if healthy else math.inf,
            "all_dead_share": sum(u == 0 for u in units) / n, "dead_unit_share": sum(u < h for u in units) / n,
            "diverged_share": (n - len(healthy)) / n, "best_share": wins[(h, e, lr)] / max(1, len(by_seed)),
            "state": "COMPLETE", "_group": group,
        })  # fmt: skip
    rows.sort(key=lambda r: (r["val_loss_mean"], r["err10_mean"]))
    for u in sorted(unfinished, key=lambda u: (u["state"], u["val_loss_mean"])):
        rows.append({**dict.fromkeys(CSV_COLUMNS, math.nan), "err10_mean": math.inf, "_group": [], **u})
    return rows


def table(rows: list[dict[str, Any]], truth: float | None, probe_x: float) -> str:
    """The ranked table, fixed-width for the terminal."""
    err = f"|pred({probe_x:g}) - {truth:g}|, mean [95% CI]" if truth is not None else None
    head = ["rank", "hidden", "epochs", "lr", "seeds", "val loss, mean [95% CI]", "median", err, "dead all/some",
            "diverged", "best"]  # fmt: skip
    widths = [4, 6, 6, 7, 5, -27, 8, -31, 13, 8, 5]
    lines = []
    for i, r in enumerate(rows, start=1):
        cells = [i, r["hidden_size"], r["epochs"], f"{r['lr']:g}", r["n_seeds"]]
        if r["state"] != "COMPLETE":
            last = r["val_loss_mean"]
            cells.append(r["state"].lower() + (f" (val loss {last:.3g} when stopped)" if math.isfinite(last) else ""))
        else:
            cells += [
                f"{r['val_loss_mean']:.3g} [{r['val_loss_ci_low']:.3g}, {r['val_loss_ci_high']:.3g}]",
                f"{r['val_loss_median']:.3g}",
                f"{r['err10_mean']:.4f} [{r['err10_ci_low']:.4f}, {r['err10_ci_high']:.4f}]",
                f"{r['all_dead_share']:.1%}/{r['dead_unit_share']:.1%}", f"{r['diverged_share']:.1%}",
                f"{r['best_share']:.0%}",
            ]  # fmt: skip
        lines.append(cells)
    keep = [j for j, h in enumerate(head) if h is not None]
    fmt = lambda cells: "  ".join(f"{c:<{-widths[j]}}" if widths[j] < 0 else f"{c:>{widths[j]}}"  # noqa: E731
                                  for j, c in ((j, cells[j]) for j in keep if j < len(cells))).rstrip()  # fmt: skip
    return "\n".join([fmt(head), *(fmt(c) for c in lines)])


def markdown(rows: list[dict[str, Any]], truth: float | None, probe_x: float) -> dict[str, str]:
    """Every column of results.csv as two Markdown tables, best first, by tag: two cards in TensorBoard's Text tab,
    each narrow enough that no cell breaks mid-word."""
    g = lambda v: f"{v:.4g}"  # noqa: E731
    ci = lambda r, k: f"{g(r[k + '_mean'])} [{g(r[k + '_ci_low'])}, {g(r[k + '_ci_high'])}]"  # noqa: E731
    err = f"err at {probe_x:g}" if truth is not None else "err"
    main = [[i, r["hidden_size"], r["epochs"], g(r["lr"]), r["n_seeds"], ci(r, "val_loss"), g(r["val_loss_median"]),
             ci(r, "err10"), g(r["err10_median"]), f"{r['all_dead_share']:.1%}", f"{r['dead_unit_share']:.1%}",
             f"{r['diverged_share']:.1%}", f"{r['best_share']:.0%}"] for i, r in enumerate(rows, start=1)]  # fmt: skip
    spread = [[i, r["hidden_size"], r["epochs"], g(r["lr"]), g(r["val_loss_std"]), g(r["err10_std"]),
               g(r["train_loss_mean"]), r["state"]] for i, r in enumerate(rows, start=1)]  # fmt: skip
    head = ["rank", "hidden", "epochs", "lr"]
    main_head = [*head, "seeds", "val loss mean [95% CI]", "val loss median", f"{err} mean [95% CI]", f"{err} median",
                 "all units dead", "a unit dead", "diverged", "best"]  # fmt: skip
    spread_head = [*head, "val loss std", f"{err} std", "train loss mean", "state"]

    def card(header: list[str], cells: list[list[Any]]) -> str:  # without a known line, no error columns
        keep = [j for j, h in enumerate(header) if truth is not None or not h.startswith(err)]
        return markdown_table([header[j] for j in keep], [[row[j] for j in keep] for row in cells])

    return {"sweep/results": card(main_head, main), "sweep/results_spread": card(spread_head, spread)}


def verdict(rows: list[dict[str, Any]], truth: float | None, probe_x: float) -> str:
    """One line naming the best setting and whether it is clearly ahead of the runner-up (paired, 95% CI > 0)."""
    b = rows[0]
    if b["state"] != "COMPLETE":
        return "best: none yet (no setting has finished)"
    err = f", |pred({probe_x:g}) - {truth:g}| {b['err10_mean']:.4f}" if truth is not None else ""
    line = (
        f"best: hidden_size={b['hidden_size']}, epochs={b['epochs']}, lr={b['lr']:g} (val loss "
        f"{b['val_loss_mean']:.3g} [{b['val_loss_ci_low']:.3g}, {b['val_loss_ci_high']:.3g}]{err}, best for "
        f"{b['best_share']:.0%} of {b['n_seeds']} seeds)"
    )
    if len(rows) < 2 or rows[1]["state"] != "COMPLETE":
        return line
    r = rows[1]
    theirs = {t["seed"]: t["val_loss"] for t in r["_group"] if not t["diverged"]}
    diffs = [theirs[t["seed"]] - t["val_loss"] for t in b["_group"] if not t["diverged"] and t["seed"] in theirs]
    mean, _, low, high = mean_ci(diffs)
    runner = f"hidden_size={r['hidden_size']}, epochs={r['epochs']}, lr={r['lr']:g}"
    paired = f"(paired difference {mean:.3g} [{low:.3g}, {high:.3g}] over {len(diffs)} seeds)"
    if len(diffs) > 1 and low > 0:
        return f"{line}; clearly ahead of {runner} {paired}"
    return f"{line}; within the noise of {runner} {paired}: more seeds would be needed to tell them apart"


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(rows: list, members: list, truth: float | None, probe_x: float, out: Path, writer: Any) -> None:
    """results.csv, members.csv and the error figures as PNG; the table, verdict and figures into TensorBoard."""
    write_csv(out / "results.csv", rows, CSV_COLUMNS)
    ordered = sorted(members, key=lambda r: (r["hidden_size"], r["epochs"], r["lr"], r["seed"]))
    write_csv(out / "members.csv", ordered, MEMBER_COLUMNS)
    if truth is not None:
        write_figure(error_figure(rows, truth, probe_x), writer, "sweep/error_vs_epochs", out / "error_vs_epochs.png")
        done = [r for r in rows if any(not m["diverged"] for m in r["_group"])]
        done.sort(key=lambda r: (r["epochs"], r["hidden_size"], r["lr"]))
        errors = [np.array([m["abs_error"] for m in r["_group"] if not m["diverged"]]) for r in done]
        names = [setting_name(r, r["epochs"]) for r in done]
        write_figure(box_figure(errors, names, probe_x, truth), writer, "sweep/abs_error_box", out / "error_box.png")
    write_text(writer, "sweep/verdict", verdict(rows, truth, probe_x))  # its own card: never below a scrolled table
    for tag, text in markdown(rows, truth, probe_x).items():
        write_text(writer, tag, text)


def optuna_outputs(study: optuna.Study, out: Path, writer: Any) -> None:
    """trials.csv (Optuna's dataframe, one row per trial) and Optuna's plots as PNGs and figures."""
    from matplotlib import pyplot as plt

    attrs = ("number", "value", "datetime_start", "datetime_complete", "duration", "params", "user_attrs", "state")
    frame = study.trials_dataframe(attrs=attrs)  # not the system attributes: the members' numbers
    with atomic_write(out / "trials.csv", "w", newline="") as fh:
        frame.drop(columns="user_attrs_members", errors="ignore").to_csv(fh, index=False)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = ["optimization_history"] + (["slice"] if len(complete) > 1 else [])
    if len(complete) > 1 and sum(len({t.params.get(k) for t in complete}) > 1 for k in complete[0].params) > 1:
        plots.append("param_importances")
    for name in plots:
        with warnings.catch_warnings(), plt.rc_context():  # Optuna sets pyplot's style for the whole process
            # Optuna's matplotlib plots are experimental, a one-value parameter gives a singular axis: still right.
            warnings.simplefilter("ignore")
            try:
                axes = getattr(optuna.visualization.matplotlib, f"plot_{name}")(study)
            except (ValueError, RuntimeError) as err:  # too few trials for this plot
                print(f"note: no {name} plot ({err})", file=sys.stderr)
                continue
            fig = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            try:
                fig.set_size_inches(7, 4.5)
                write_figure(fig, writer, f"optuna/{name}", out / f"optuna_{name}.png")
            finally:
                plt.close(fig)  # Optuna draws with pyplot, which keeps each figure until it is closed


def report(study: optuna.Study, out: Path | None) -> list[dict[str, Any]]:
    """Print the ranked table and verdict of a study (and return its rows); with ``out``, write its files there too."""
    from regression_lab.study import PROBE_X  # the model's default: for a study that did not record its probe

    members, unfinished, truth = members_of(study)
    if not members and not unfinished:
        raise UsageError("the study has no finished trial yet")
    rows, probe_x = summarize(members, unfinished), study.user_attrs.get(DEFINITION_ATTR, {}).get("probe_x", PROBE_X)
    if out is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(out / "summary")) as writer:
            write_outputs(rows, members, truth, probe_x, out, writer)
            optuna_outputs(study, out, writer)
    print(table(rows, truth, probe_x), verdict(rows, truth, probe_x), sep="\n")
    if out is not None:
        print(f"results: {out / 'results.csv'}  (tensorboard --logdir {out})")
    return rows
