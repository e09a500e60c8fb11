"""Benchmarks of regression-lab: each row a ratio to a plain baseline and, where there is one, to a yardstick (what
Lightning or the design cannot go below, e.g. Lightning's floor, :func:`fit_floor`). From the repository root::

    python scripts/benchmark.py --quick --markdown   # tiny sizes; without --quick, the full sizes
    python scripts/benchmark.py --rows lab_epochs scale --json bench.json"""

import argparse
import contextlib
import dataclasses
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.serving import load, start_server
from regression_lab.data import RegressionDataModule
from regression_lab.export import export_bytes
from regression_lab.landscape import filter_normalized_direction, grid_losses
from regression_lab.models import MyNN, MyNNStack
from regression_lab.notices import quiet_notices
from regression_lab.train import CHECKPOINT_DEFAULTS, LAST_CHECKPOINT_DEFAULTS, TRAINER_DEFAULTS, cli_main

NOISE = 0.3  # the widest spread (max - min) of a row's per-repeat ratios, over their median, that holds still
HIDDEN = [4, 5, 8]  # the sweep's default hidden sizes, also the ensemble row's
#: Per row: what it measures, its baseline (and yardstick), its ratios {name: (numerator, denominator, target)}.
ROWS = {
    "lab_epochs": ("per-epoch time (µs) of `fit` on the lab setting, all its defaults, CPU",
                   "a plain loop; yardstick: Lightning's floor",
                   {"ratio": ("fit_us", "plain_us", "<= 7"), "yardstick_ratio": ("fit_us", "floor_us", "<= 1.3"),
                    "cadence_ratio": ("fit_us", "cadence_floor_us", "report"),
                    "cadence_floor_ratio": ("cadence_floor_us", "floor_us", "report")}),
    "scale": ("training samples/s of `fit`, one shuffled epoch", "a plain loop of shuffled index batches; yardstick: "
              "Lightning's floor", {"ratio": ("fit_per_s", "plain_per_s", ">= 0.45"),
                                    "yardstick_ratio": ("fit_per_s", "floor_per_s", ">= 0.9")}),
    "data_path": ("samples/s of that `fit`, tensor-indexed batches", "the same fit fed by `DataLoader(TensorDataset(x, "
                  "y), shuffle=True)`", {"ratio": ("indexed_per_s", "loader_per_s", ">= 40")}),
    "landscape": ("a random plane of the trained lab model's loss, vectorized", "the same points one by one",
                  {"ratio": ("one_by_one_s", "vectorized_s", ">= 100")}),
    "predict_start": ("`regression-lab predict --x 10` as a whole process", '`python -c "import torch"`',
                      {"ratio": ("command_s", "base_s", "<= 1.15")}),
    "fit_process": ("`regression-lab fit` on the lab defaults as a whole process", '`python -c "import lightning"`',
                    {"ratio": ("command_s", "base_s", "report"), "extra_s": ("extra_s", None, "<= 1.0")}),
    "ensemble": ("member-fits/s of `fit --model.hidden_size [4,5,8]`, the whole in-process fit", "one plain loop per "
                 "member; yardstick: the same members as one MyNNStack in a plain loop",
                 {"ratio": ("fit_per_s", "plain_per_s", ">= 200"), "yardstick_ratio": ("fit_per_s", "stacked_per_s",
                  ">= 0.6"), "large_yardstick_ratio": ("large_fit_per_s", "large_stacked_per_s", ">= 0.8"),
                  "floor_yardstick_ratio": ("floor_per_s", "stacked_per_s", "report"),
                  "large_floor_yardstick_ratio": ("large_floor_per_s", "large_stacked_per_s", "report")}),
    "sweep": ("seconds of the default `regression-lab sweep` as a process", "a time; yardstick: `import lightning, "
              "optuna` in a new process plus the same members and epochs as stacked plain loops",
              {"ratio": ("sweep_s", None, "<= 15 s"), "yardstick_ratio": ("sweep_s", "yardstick_s", "<= 1.3"),
               "floor_yardstick_ratio": ("floor_yardstick_s", "yardstick_s", "report")}),
    "sweep_peer": ("speedup per member-trial of the default sweep", "a Lightning fit per seed and setting in an Optuna "
                   "study, pruning callback (sampled)", {"ratio": ("peer_s_per_trial", "sweep_s_per_trial", "report")}),
    "serve": ("requests/s of `regression-lab serve` (batches of up to 64, 5 ms), 32 keep-alive clients",
              "a bare FastAPI handler running MyNN per request", {"ratio": ("serve_per_s", "bare_per_s", "report")}),
    "export": ("onnxruntime predictions/s on a batch", "the PyTorch module, CPU",
               {"ratio": ("onnx_per_s", "torch_per_s", "report")}),
}  # fmt: skip


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def alternate(repeats: int, **measure: Callable[[], float]) -> dict[str, list[float]]:
    """Each measurement once a repeat, in turn, the order flipped each repeat (so drift falls on all alike)."""
    runs: dict[str, list[float]] = {name: [] for name in measure}
    for i in range(repeats):
        for name in list(measure)[:: -1 if i % 2 else 1]:
            runs[name].append(measure[name]())
    return runs


def result(row: str, runs: dict[str, list[float]], ok: bool = True, **info: Any) -> dict[str, Any]:
    """The row's figures: each ratio (two of its timings divided repeat by repeat, the way the target reads; without
    a denominator, the timing itself) as median, spread and target; each timing's median; every repeat."""
    what, baseline, ratios = ROWS[row]
    sizes = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in info.items() if type(v) is int)  # a quick run's too
    out = {"row": row, "what": f"{what} ({sizes})" if sizes else what, "baseline": baseline, "noisy": False}
    for name, (num, den, target) in ratios.items():
        per = [n / (runs[den][i] if den else 1.0) for i, n in enumerate(runs[num])]
        out.update({name: (mid := statistics.median(per)), f"{name}_min": min(per), f"{name}_max": max(per)})
        out["noisy"] |= den is not None and max(per) - min(per) > NOISE * mid
        op, bound = (target.split() + [""])[:2]  # "<= 7", ">= 0.9", "<= 15 s"; "report" is always met
        ok &= mid <= float(bound) if op == "<=" else mid >= float(bound) if op == ">=" else True
    out.update({k: statistics.median(v) for k, v in runs.items()}, **info, repeats=runs, target=ratios["ratio"][2])
    return {**out, "ok": ok and not out["noisy"], "ratios": ratios}


def plain_seconds(x: torch.Tensor, y: torch.Tensor, hidden: int | list[int], epochs: int,
                  seeds: list[int] | None = None, batch: int = 0, shuffle: bool = False) -> float:  # fmt: skip
    """Seconds to build ``MyNN(hidden)`` seeded 0 (``seeds``: the members as one ``MyNNStack``) and train it by the
    loop a user writes: forward, MSE (a stack sums its members'), zero_grad, backward, SGD step."""
    torch.manual_seed(0)
    gc.collect()  # as before fit's loop: the same garbage-collector state
    start = time.perf_counter()
    model, batch = (MyNN(hidden) if seeds is None else MyNNStack(hidden, seeds)).to(x.device), batch or len(x)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(epochs):
        order = torch.randperm(len(x)).to(x.device) if shuffle else None
        for s in range(0, len(x), batch):
            idx = slice(s, s + batch) if order is None else order[s : s + batch]
            out = model(x[idx])
            loss = F.mse_loss(out, y[idx]) if out.dim() == 2 else ((out - y[idx]) ** 2).mean(dim=(1, 2)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


class FloorModule(L.LightningModule):
    """The least a LightningModule does to train ``MyNN`` (or a stack): ``self(x)``, MSE, SGD, a ``self.log`` a step."""

    def __init__(self, hidden: int | list = 5, lr: float = 0.01, seeds: list | None = None) -> None:
        """``MyNN`` with ``hidden`` ReLU units (or, with ``seeds``, a ``MyNNStack`` of them, one size per seed) trained
        by SGD at learning rate ``lr``."""
        super().__init__()
        self.net, self.lr = MyNN(hidden) if seeds is None else MyNNStack(hidden, seeds), lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out, y = self(batch[0]), batch[1]  # one MyNN's MSE, as fit's, or the members' sum, as the stacked loop's
        loss = F.mse_loss(out, y) if out.dim() == 2 else ((out - y) ** 2).mean(dim=(1, 2)).sum()
        split = "train" if self.training else "val"  # validation_step is this step, in eval mode
        self.log(f"{split}/loss", loss, prog_bar=True, logger=self.logger is not None, batch_size=len(y))  # no warning
        return loss

    validation_step = training_step

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def fit_floor(data: dict[str, Any], epochs: int, accelerator: str, cadences: bool = False, **module: Any) -> tuple:
    """Lightning's floor: :class:`FloorModule` (``module``) on the project's data, a bare Trainer (``cadences``: fit's
    validation, logging and checkpoint settings, Lightning's logger, no progress bar): loop seconds, trained module."""
    timer = Timer()  # from training's start to its end, every epoch's work included
    checkpoints = [ModelCheckpoint(**CHECKPOINT_DEFAULTS), ModelCheckpoint(**LAST_CHECKPOINT_DEFAULTS)]
    same = {**TRAINER_DEFAULTS, "logger": True, "callbacks": [timer, *checkpoints], "num_sanity_val_steps": 0,
            "enable_progress_bar": False}  # fmt: skip
    bare = {"logger": False, "callbacks": [timer], "enable_checkpointing": False, "enable_progress_bar": False,
            "limit_val_batches": 0}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, quiet_notices(), contextlib.redirect_stdout(sys.stderr):
        trainer = L.Trainer(**{**(same if cadences else bare), "max_epochs": epochs, "accelerator": accelerator,
                               "devices": 1, "enable_model_summary": False, "default_root_dir": tmp})  # fmt: skip
        torch.manual_seed(0)
        module = FloorModule(**module)
        gc.collect()  # as before fit's loop: the same garbage-collector state
        trainer.fit(module, datamodule=RegressionDataModule(**data))
    return timer.time_elapsed("train"), module


def peer_sweep_seconds(hidden_sizes: list[int], seeds: list[int], epochs: int) -> float:
    """Seconds of an Optuna grid, a Lightning fit per trial as in Optuna's Lightning example (logger, pruning)."""
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    def objective(trial: optuna.Trial) -> float:
        hidden, seed = trial.suggest_categorical("hidden_size", hidden_sizes), trial.suggest_categorical("seed", seeds)
        L.seed_everything(seed, verbose=False)
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", default_root_dir=root, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[PyTorchLightningPruningCallback(trial, monitor="val/loss")])  # fmt: skip
        trainer.fit(FloorModule(hidden), datamodule=RegressionDataModule())
        return float(trainer.callback_metrics["val/loss"])

    with tempfile.TemporaryDirectory() as root, quiet_notices():
        # No pruning, as in the project's default sweep: every trial trains all its epochs.
        grid = optuna.samplers.GridSampler({"hidden_size": hidden_sizes, "seed": seeds})
        study = optuna.create_study(sampler=grid, pruner=optuna.pruners.NopPruner())
        return timed(study.optimize, objective, n_trials=len(hidden_sizes) * len(seeds))


class LoaderDataModule(RegressionDataModule):
    """The same data, served the usual way: ``DataLoader(TensorDataset(x, y), shuffle=True)``."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.train_x.cpu(), self.train_y.cpu()), self.hparams.batch_size, shuffle=True)


def fit_cli(args: str, loader: bool = False) -> tuple[float, float]:
    """``regression-lab fit ARGS`` in-process (``loader``: fed by :class:`LoaderDataModule`): loop and whole seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()  # the model summary prints before the loop: left out of the whole too
        args += " --trainer.callbacks+=Timer --trainer.callbacks.interval step --trainer.enable_model_summary false"
        cli = cli_main([*args.split(), "--trainer.logger.init_args.save_dir", tmp, "--trainer.default_root_dir", tmp],
                       run=False)  # fmt: skip
        settings = {k: v for k, v in cli.datamodule.hparams.items() if not k.startswith("_")}  # not _instantiator
        gc.collect()  # the CLI's setup leaves much garbage: collected now, not inside the timed loop
        with quiet_notices(), contextlib.redirect_stdout(sys.stderr):  # the progress bar is not the benchmark's output
            cli.trainer.fit(cli.model, datamodule=LoaderDataModule(**settings) if loader else cli.datamodule)
        total = time.perf_counter() - start
    return next(c for c in cli.trainer.callbacks if isinstance(c, Timer)).time_elapsed("train"), total


def process_seconds(*args: str, cwd: str = ".") -> float:
    return timed(subprocess.run, [sys.executable, *args], cwd=cwd, check=True, capture_output=True)


def train_checkpoint(workdir: str, epochs: int) -> str:
    """``regression-lab fit`` in-process into ``workdir``: its final last.ckpt."""
    with contextlib.redirect_stdout(sys.stderr):  # its closing report is not the benchmark's output
        cli_main(["fit", "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", workdir])
    return str(next(Path(workdir).glob("lightning_logs/version_*/checkpoints/last.ckpt")))


@dataclasses.dataclass
class Benchmark:
    """The rows, one method each, at tiny sizes (``quick``: to check that every row runs) or at the sizes of
    ``accelerator`` (``cpu`` or ``gpu``: where the rows that scale train)."""

    quick: bool
    accelerator: str
    device = property(lambda self: torch.device("cuda" if self.accelerator == "gpu" else "cpu"))

    def size(self, quick: Any, cpu: Any, gpu: Any = None) -> Any:  # gpu: the CPU's unless given
        return quick if self.quick else gpu if gpu is not None and self.accelerator == "gpu" else cpu

    def lab_epochs(self) -> dict:
        (x, y), e = RegressionDataModule().samples("train"), self.size(20, 400)
        runs = alternate(self.size(1, 5), plain_us=lambda: plain_seconds(x, y, 5, e) / e * 1e6,
                         fit_us=lambda: fit_cli(f"--trainer.max_epochs {e} --trainer.accelerator cpu")[0] / e * 1e6,
                         floor_us=lambda: fit_floor({}, e, "cpu")[0] / e * 1e6,
                         cadence_floor_us=lambda: fit_floor({}, e, "cpu", cadences=True)[0] / e * 1e6)  # fmt: skip
        return result("lab_epochs", runs, epochs=e)

    def at_scale(self, n: int) -> tuple[dict[str, Any], str]:
        """The DataModule's settings for ``n`` shuffled samples, and ``fit``'s options for one epoch of them."""
        data = {"num_samples": n, "x_min": 0, "x_max": 1, "batch_size": self.size(2048, 8192, 65_536), "shuffle": True}
        options = " ".join(f"--data.{k} {str(v).lower()}" for k, v in {**data, "val_samples": 1000}.items())
        trainer = f"--trainer.max_epochs 1 --trainer.accelerator {self.accelerator} --trainer.num_sanity_val_steps 0"
        return data, f"{options} {trainer}"

    def scale(self) -> dict:
        data, args = self.at_scale(n := self.size(20_000, 1_000_000, 10_000_000))
        x, y = (t.to(self.device) for t in RegressionDataModule(**data).samples("train"))
        plain = lambda: n / plain_seconds(x, y, 5, 1, batch=data["batch_size"], shuffle=True)  # noqa: E731
        # A CPU epoch at scale is short and the machine noisy: more repeats there.
        runs = alternate(self.size(1, 21, 11), plain_per_s=plain, fit_per_s=lambda: n / fit_cli(args)[0],
                         floor_per_s=lambda: n / fit_floor(data, 1, self.accelerator)[0])  # fmt: skip
        return result("scale", runs, samples=n, batch=data["batch_size"])

    def data_path(self) -> dict:
        data, args = self.at_scale(n := self.size(20_000, 1_000_000))  # the DataLoader is too slow for more
        runs = alternate(self.size(1, 3), loader_per_s=lambda: n / fit_cli(args, loader=True)[0],
                         indexed_per_s=lambda: n / fit_cli(args)[0])  # fmt: skip
        return result("data_path", runs, samples=n, batch=data["batch_size"])

    def landscape(self) -> dict:
        x, y = (t.to(self.device) for t in RegressionDataModule().samples("train"))
        net = fit_floor({}, 400, "cpu")[1].net.to(self.device).requires_grad_(False)  # the lab's model
        centre, gen, res = dict(net.named_parameters()), torch.Generator().manual_seed(0), self.size(11, 201)
        d1, d2 = (filter_normalized_direction(centre, gen) for _ in range(2))
        axis = torch.linspace(-1.0, 1.0, res, device=self.device)

        def looped() -> None:  # one by one
            for a in axis.tolist():
                for b in axis.tolist():
                    params = {n: centre[n] + a * d1[n] + b * d2[n] for n in centre}
                    float(torch.mean((functional_call(net, params, x) - y) ** 2))

        vectorized = lambda: grid_losses(net, x, y, centre, [d1, d2], [axis, axis]).cpu()  # noqa: E731 (.cpu(): synced)
        runs = alternate(self.size(1, 5), one_by_one_s=lambda: timed(looped), vectorized_s=lambda: timed(vectorized))
        return result("landscape", runs, resolution=res, points=res**2)

    def processes(self, row: str, base: str, command: str, checkpoint: bool = False, **info: Any) -> dict:
        """``python -m regression_lab COMMAND`` against ``python -c BASE``, processes in a temporary directory."""
        with tempfile.TemporaryDirectory() as tmp:
            if checkpoint:
                train_checkpoint(tmp, 1)
            command_s = lambda: process_seconds("-m", "regression_lab", *command.split(), cwd=tmp)  # noqa: E731
            measure = {"base_s": lambda: process_seconds("-c", base, cwd=tmp), "command_s": command_s}
            alternate(0 if self.quick else 1, **measure)  # untimed, so the file cache holds both
            runs = alternate(self.size(1, 7 if checkpoint else 5), **measure)
        runs["extra_s"] = [c - b for c, b in zip(runs["command_s"], runs["base_s"], strict=True)]
        return result(row, runs, **info)

    def predict_start(self) -> dict:
        return self.processes("predict_start", "import torch", "predict --x 10", checkpoint=True)

    def fit_process(self) -> dict:
        fit = f"fit --trainer.accelerator {self.accelerator}" + (" --trainer.max_epochs 20" if self.quick else "")
        return self.processes("fit_process", "import lightning", fit, epochs=self.size(20, 400))

    def ensemble(self) -> dict:
        (x, y), (seeds, large, e) = RegressionDataModule().samples("train"), self.size((10, 20, 20), (1000, 10**4, 400))
        options = f"--model.hidden_size [4,5,8] --trainer.max_epochs {e} --trainer.accelerator {self.accelerator}"
        options += " --trainer.enable_progress_bar false --model.num_seeds"
        # The whole in-process fit (parsing, building, training, teardown), as a user waits for it.
        fit = lambda s: 3 * s / fit_cli(f"{options} {s}")[1]  # noqa: E731
        members = lambda s: {"hidden": [h for h in HIDDEN for _ in range(s)], "seeds": [*range(s)] * 3}  # noqa: E731
        stacked = lambda s: 3 * s / plain_seconds(x.to(self.device), y.to(self.device), epochs=e, **members(s))  # noqa: E731
        plain = lambda: 1 / statistics.median(plain_seconds(x, y, h, e) for h in HIDDEN)  # noqa: E731 (a member's)
        floor = lambda s: 3 * s / timed(fit_floor, {}, e, self.accelerator, cadences=True, **members(s))  # noqa: E731
        runs = alternate(self.size(1, 3), plain_per_s=plain, fit_per_s=lambda: fit(seeds),
                         stacked_per_s=lambda: stacked(seeds), large_fit_per_s=lambda: fit(large),
                         large_stacked_per_s=lambda: stacked(large), floor_per_s=lambda: floor(seeds),
                         large_floor_per_s=lambda: floor(large))  # fmt: skip
        return result("ensemble", runs, members=3 * seeds, large_members=3 * large, epochs=e)

    @functools.cached_property
    def sweep_runs(self) -> tuple[dict[str, list[float]], dict[str, Any]]:
        """The default sweep, its yardstick and the peer's sample, alternated: shared by two rows (a sweep is slow)."""
        (seeds, epochs), hidden = self.size((10, [10, 20]), (1000, [100, 200, 400])), self.size([5], HIDDEN)
        x, y = RegressionDataModule().samples("train")
        peer = {"hidden_sizes": hidden, "seeds": [0, 1], "epochs": self.size(10, 100)}
        args = f"--seeds 0-{seeds - 1} --hidden_sizes 5 --epochs {epochs[0]} {epochs[1]}".split() if self.quick else []

        def sweep() -> float:
            with tempfile.TemporaryDirectory() as tmp:  # a new study each time: a finished one has nothing to do
                return process_seconds("-m", "regression_lab", "sweep", "--quiet", "--out", "sweep", *args, cwd=tmp)

        def yardstick(train: Callable[..., float]) -> float:  # one stack per setting, as the sweep trains per trial
            stacks = sum(train(hidden=[h] * seeds, seeds=[*range(seeds)]) for h in hidden)
            return process_seconds("-c", "import lightning, optuna") + stacks

        plain = functools.partial(plain_seconds, x, y, epochs=max(epochs))  # the physical limit; then Lightning's
        floor = lambda **stack: timed(fit_floor, {}, max(epochs), "cpu", **stack)  # noqa: E731
        runs = alternate(self.size(1, 3), sweep_s=sweep, yardstick_s=lambda: yardstick(plain),
                         floor_yardstick_s=lambda: yardstick(floor),
                         peer_s=lambda: peer_sweep_seconds(**peer))  # fmt: skip
        info = {"member_trials": len(hidden) * seeds * len(epochs), "peer": {**peer, "trials": len(hidden) * 2}}
        runs["sweep_s_per_trial"] = [s / info["member_trials"] for s in runs["sweep_s"]]
        # The peer trains each member-trial from scratch: its seconds per trial-epoch times the grid's mean epochs.
        per_trial = statistics.mean(epochs) / info["peer"]["trials"] / peer["epochs"]
        return {**runs, "peer_s_per_trial": [p * per_trial for p in runs["peer_s"]]}, info

    def sweep_row(self, row: str) -> dict:
        return result(row, self.sweep_runs[0], **self.sweep_runs[1])

    sweep, sweep_peer = functools.partialmethod(sweep_row, "sweep"), functools.partialmethod(sweep_row, "sweep_peer")

    def serve(self) -> dict:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            ckpt, errors, clients, seconds = train_checkpoint(tmp, 5), [], self.size(1, 4), self.size(0.5, 5.0)
            # Both up together (an idle server costs nothing), so the loads alternate without restarts.
            bare = start_server(stack, [str(Path(__file__).with_name("serving.py")), ckpt, "{port}"])
            serve = start_server(stack, ["-m", "regression_lab", "serve", "--ckpt_path", ckpt, "--port", "{port}"])
            measure = lambda port: load(port, errors, processes=clients, seconds=seconds)  # noqa: E731
            runs = alternate(self.size(1, 3), bare_per_s=lambda: measure(bare), serve_per_s=lambda: measure(serve))
        return result("serve", runs, ok=not any(errors), errors=errors)  # each load's answers other than 200

    def export(self) -> dict:
        import onnxruntime as ort

        model, n = MyNN(5).eval(), self.size(1000, 100_000)
        session = ort.InferenceSession(export_bytes(model, "onnx"), providers=["CPUExecutionProvider"])
        x = np.linspace(-10, 10, n, dtype=np.float32).reshape(-1, 1)
        with torch.no_grad():
            runs = alternate(self.size(3, 21), torch_per_s=lambda: n / timed(model, torch.from_numpy(x)),
                             onnx_per_s=lambda: n / timed(session.run, None, {"x": x}))  # fmt: skip
            diff = float(np.abs(session.run(None, {"x": x})[0] - model(torch.from_numpy(x)).numpy()).max())
        return result("export", runs, ok=diff <= 1e-5, max_abs_difference=diff, batch=n)


def cells(r: dict[str, Any]) -> list[str]:
    """A row's target and measured cells: each ratio with its spread (min to max), and a flag."""
    if "error" in r:
        return ["-", f"**failed**: {r['error']}"]
    label = {k: "" if k == "ratio" else f"{k} " for k in r["ratios"]}  # named as in the JSON
    measured = [f"{label[k]}{r[k]:.3g} ({r[k + '_min']:.3g} to {r[k + '_max']:.3g})" for k in r["ratios"]]
    measured += ["**noisy**"] if r["noisy"] else [] if r["ok"] else ["**missed**"]
    return ["; ".join(label[k] + v[2] for k, v in r["ratios"].items()), "; ".join(measured)]


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """The README's Performance table, after a line saying when and where it was measured."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    lines = [f"{time.strftime('%Y-%m-%d')}: torch {torch.__version__}, Lightning {L.__version__}, {os.cpu_count()} "
             f"CPU cores, {gpu}", "", "| row | what | baseline | target | measured |", "|---" * 5 + "|"]  # fmt: skip
    cols = lambda row, r: [f"`{row}`", r.get("what", "-"), r.get("baseline", "-"), *cells(r)]  # noqa: E731
    return "\n".join(lines + [f"| {' | '.join(cols(row, r))} |" for row, r in results.items()])


def main(argv: list[str] | None = None) -> int:
    """``scripts/benchmark.py``: exit 1 if a row broke (a missed target is a finding, not a failure)."""
    parser = argparse.ArgumentParser(prog="benchmark.py", description="regression-lab against plain baselines")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks that every row runs)")
    parser.add_argument("--json", metavar="PATH", help="also write every row's figures as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print the README's Performance table")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="which rows to run")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    if (args := parser.parse_args(argv)).accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu, but torch sees no CUDA device")
    accelerator = args.accelerator if args.accelerator != "auto" else "gpu" if torch.cuda.is_available() else "cpu"
    bench, results = Benchmark(args.quick, accelerator), {}
    for row in args.rows:
        print(f"running {row} ...", file=sys.stderr, flush=True)
        try:
            results[row] = getattr(bench, row)()
        except Exception as exc:  # one broken row must not lose the others' figures
            traceback.print_exc()
            results[row] = {"row": row, "ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    table = [f"{row:<14} {'ok' if r['ok'] else 'NO':<3} {'  '.join(cells(r))}" for row, r in results.items()]
    print(markdown(results) if args.markdown else "\n".join(table))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any("error" in r for r in results.values()) else 0
