"""Benchmarks against plain PyTorch, each a ratio to a baseline measured in the same run.

The machine is shared and noisy, so every row times its own baseline right beside it and
reports the median of several repeats. Run it::

    python scripts/benchmark.py                 # full sizes, a few minutes on 2 CPU cores
    python scripts/benchmark.py --quick         # tiny sizes: checks that every row runs
    python scripts/benchmark.py --json bench.json --rows landscape predict_start

Timings of ``fit`` cover its training loop, every epoch's work included (validation,
scheduled checkpoints); the one-off setup before it and teardown after it (the final
``last.ckpt``, closing the logger) are left out, and ``scale`` reports the teardown apart.

Rows (``target`` reads the way ``ratio`` is defined):

- ``lab_epochs``: per-epoch time of ``fit`` on the lab setting with the default logging,
  validation, checkpointing and progress bar, over a plain loop; at most 7x. Beside it,
  Lightning's floor on the same data (:mod:`benchmarks.floor`: a minimal module logging its
  loss every step, and without the log), the least any Lightning fit costs.
- ``scale``: training samples/s of ``fit`` at 1M samples, batch 8192, shuffled, over a plain
  loop gathering the same shuffled index batches (the median of 21 back-to-back pairs, 11 on
  a GPU); at least 0.45x. Lightning's bare loop (the project's module, no logger, checkpoint
  or progress bar) and Lightning's floor are timed beside them for context.
- ``data_path``: samples/s of ``fit`` with the tensor-indexed batches over the same ``fit`` fed
  by ``DataLoader(TensorDataset(x, y), batch_size=8192, shuffle=True)``; at least 40x.
- ``landscape``: a 201 x 201 grid of the trained lab model, one by one over vectorized; at
  least 100x.
- ``predict_start``: ``regression-lab predict --x 10`` as a whole process over
  ``python -c "import torch"``; at most 1.15x.
- ``ensemble``: member-fits/s of ``fit --model.hidden_size [4,5,8] --model.num_seeds 1000``
  (3,000 members, 400 epochs, the default logging, validation and checkpoints; the whole
  in-process fit: parsing, building the members, training, teardown) over one plain loop per
  member (timed for 9 members); at least 200x. Beside it: the training loop alone, Lightning's
  bare loop, the same stacked members trained by a plain loop (the design's own speed, with
  and without building them), the ceiling of any Lightning fit of them (that plain run plus
  Lightning's floor for as many epochs), and 10,000 seeds per hidden size.
- ``sweep``: the wall time of the default ``regression-lab sweep`` (9,000 trials) as a
  process, in seconds (the one row whose target is a time); at most 15 s. Beside it, the
  time 9,000 plain loops would take, from the per-member time measured for ``ensemble``.
- ``serve``: requests/s of ``regression-lab serve`` (its defaults: batches of up to 64, 5 ms)
  over a bare FastAPI + uvicorn handler running ``MyNN`` per request, both on loopback with
  32 keep-alive clients in 4 processes (on 2 cores the clients share the CPU with the server:
  a floor, not a ceiling); p50 and p99 latency of each, and ``serve`` without batching.
- ``export``: onnxruntime predictions/s on a 100,000-x batch over the PyTorch module on the CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.floor import floor_seconds
from benchmarks.timer import TrainTimer

ROWS = ("lab_epochs", "scale", "data_path", "landscape", "predict_start", "ensemble", "sweep", "serve", "export")


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_loop(
    x: torch.Tensor,
    y: torch.Tensor,
    hidden: int,
    epochs: int,
    batch_size: int | None,
    lr: float = 0.01,
    shuffle: bool = False,
) -> float:
    """The loop a user would write (forward, MSE, zero_grad, backward, SGD step); returns seconds.

    With ``shuffle`` each epoch draws a permutation and gathers its index batches, as ``fit``
    does with ``--data.shuffle true``.
    """
    from regression_lab.core.models import MyNN

    torch.manual_seed(0)
    model = MyNN(hidden).to(x.device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    n = x.shape[0]
    bs = batch_size or n
    gc.collect()  # as the fit's timer does: start from the same garbage-collector state
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n).to(x.device) if shuffle else None
        for s in range(0, n, bs):
            if order is None:
                xb, yb = x[s : s + bs], y[s : s + bs]
            else:
                idx = order[s : s + bs]
                xb, yb = x[idx], y[idx]
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _fit_timing(args: list[str], workdir: Path, datamodule_class: type | None = None) -> tuple[float, float]:
    """Build ``regression-lab fit ARGS`` in-process, logging under ``workdir``, and fit it.

    Returns the seconds of the training loop and of the teardown after it (the final metrics,
    hyperparameters and checkpoints, closing the logger), in that order.
    """
    from regression_lab.lit.cli import cli_main, lightning_notices_ignored

    extra = {"datamodule_class": datamodule_class} if datamodule_class else {}
    # Logs and checkpoints under workdir (the bare loop has no logger, and writes nothing).
    where = [] if "--trainer.logger" in args else ["--trainer.logger.init_args.save_dir", str(workdir)]
    # Without a logger, config.yaml goes to the Trainer's root directory: keep it there too.
    where += ["--trainer.default_root_dir", str(workdir)]
    args = [
        *args, *where,
        f"--trainer.callbacks+={TrainTimer.__module__}.TrainTimer",
        # The model summary prints before training, outside the timed part: leave it out.
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    # LightningCLI warns when it is given arguments and sys.argv holds some too (this script's).
    old_argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = cli_main(args, run=False, **extra)
        with lightning_notices_ignored():  # as `regression-lab fit` does (cli_main, run=True)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        done = time.perf_counter()
    finally:
        sys.argv = old_argv
    (timer,) = (c for c in cli.trainer.callbacks if isinstance(c, TrainTimer))
    return timer.seconds, done - timer.end


def _fit_seconds(args: list[str], workdir: Path, datamodule_class: type | None = None) -> float:
    """The training loop's seconds of ``regression-lab fit ARGS`` (see :func:`_fit_timing`)."""
    return _fit_timing(args, workdir, datamodule_class)[0]


def bench_lab_epochs(epochs: int, repeats: int) -> dict[str, Any]:
    """Per-epoch time of the default ``fit`` over a plain loop, the lab's setting, on the CPU."""
    from regression_lab.core.samples import line_split

    x, y = line_split({}, "train")
    plains, fits, floors, floors_nolog = [], [], [], []
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits all alike
        plains.append(plain_loop(x, y, 5, epochs, None) / epochs)
        with tempfile.TemporaryDirectory() as tmp:
            # The default logging, validation, checkpointing and progress bar: only the length changes.
            fits.append(
                _fit_seconds(["--trainer.max_epochs", str(epochs), "--trainer.accelerator", "cpu"], Path(tmp)) / epochs
            )
        floors.append(floor_seconds({}, epochs, "cpu") / epochs)
        floors_nolog.append(floor_seconds({}, epochs, "cpu", log=False) / epochs)
    plain, fit = statistics.median(plains), statistics.median(fits)
    return {
        "ratio": fit / plain,
        "target": "<= 7",
        "ok": fit / plain <= 7,
        "fit_epoch_us": fit * 1e6,
        "plain_epoch_us": plain * 1e6,
        # Lightning's floor on the same data (benchmarks.floor): a minimal module logging its
        # loss every step, and the same without the log; nothing of the project's defaults.
        "floor_ratio": statistics.median(floors) / plain,
        "floor_nolog_ratio": statistics.median(floors_nolog) / plain,
        "epochs": epochs,
    }


def _scale_args(n: int, batch: int, accelerator: str) -> list[str]:
    return [
        "--trainer.max_epochs", "1", "--trainer.accelerator", accelerator,
        "--data.num_samples", str(n), "--data.x_min", "0", "--data.x_max", "1",
        "--data.batch_size", str(batch), "--data.shuffle", "true",
        "--data.val_samples", "1000", "--trainer.num_sanity_val_steps", "0",
    ]  # fmt: skip


#: Lightning's loop alone: no logger, checkpoint or progress bar (context for the scale row).
BARE = [
    "--trainer.logger",
    "false",
    "--trainer.enable_checkpointing",
    "false",
    "--trainer.enable_progress_bar",
    "false",
]


def bench_scale(n: int, batch: int, repeats: int, accelerator: str) -> dict[str, Any]:
    """Training samples/s of the default ``fit`` at scale over a plain loop on the same batches.

    Lightning's bare loop is timed beside them (``bare_ratio``), so a reader can tell what the
    Trainer itself costs from what the defaults add (``default_over_bare``).
    """
    from regression_lab.core.samples import line_split

    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    x, y = (t.to(device) for t in line_split({"num_samples": n, "x_min": 0.0, "x_max": 1.0}, "train"))
    plains, fits, bares, floors, floors_nolog, teardowns = [], [], [], [], [], []
    floor_data = {"num_samples": n, "x_min": 0.0, "x_max": 1.0, "batch_size": batch, "shuffle": True}

    def fit(extra: list[str]) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, teardown = _fit_timing([*_scale_args(n, batch, accelerator), *extra], Path(tmp))
        if not extra:
            teardowns.append(teardown)
        return seconds

    for i in range(repeats):  # interleaved, so drift on a shared machine hits all three alike
        # The order flips every repeat (plain, default, bare; then bare, default, plain), so
        # whatever running first or last does to a timing falls on each side equally.
        if i % 2 == 0:
            plains.append(plain_loop(x, y, 5, 1, batch, shuffle=True))
            fits.append(fit([]))
            bares.append(fit(BARE))
        else:
            bares.append(fit(BARE))
            fits.append(fit([]))
            plains.append(plain_loop(x, y, 5, 1, batch, shuffle=True))
        floors.append(floor_seconds(floor_data, 1, accelerator))
        floors_nolog.append(floor_seconds(floor_data, 1, accelerator, log=False))
    plain, fit = statistics.median(plains), statistics.median(fits)
    # Throughput ratio (fit's samples/s over the plain loop's), the median over the pairs: each
    # pair ran back to back, so a slow spell of the shared machine slows both of a pair.
    pairs = [p / f for p, f in zip(plains, fits, strict=True)]
    ratio = statistics.median(pairs)
    return {
        "ratio": ratio,
        "target": ">= 0.45",
        "ok": ratio >= 0.45,
        "fit_samples_per_s": n / fit,
        "plain_samples_per_s": n / plain,
        "pair_ratio_min": min(pairs),
        "pair_ratio_max": max(pairs),
        "pair_ratios": [round(r, 4) for r in pairs],
        "bare_ratio": statistics.median(p / b for p, b in zip(plains, bares, strict=True)),
        "default_over_bare": statistics.median(b / f for b, f in zip(bares, fits, strict=True)),
        # Lightning's floor (benchmarks.floor): a minimal module logging its loss every step,
        # and the same without the log, on the same DataModule.
        "floor_ratio": statistics.median(p / f for p, f in zip(plains, floors, strict=True)),
        "floor_nolog_ratio": statistics.median(p / f for p, f in zip(plains, floors_nolog, strict=True)),
        # One-off, after the loop, so not in samples/s: the final last.ckpt, final metrics,
        # hyperparameters and closing the logger.
        "fit_teardown_ms": statistics.median(teardowns) * 1e3,
        "repeats": repeats,
        "samples": n,
        "batch_size": batch,
    }


def bench_data_path(n: int, batch: int, repeats: int, accelerator: str) -> dict[str, Any]:
    """``fit`` with tensor-indexed batches over the same ``fit`` fed by a DataLoader(TensorDataset)."""
    from torch.utils.data import DataLoader, TensorDataset

    from regression_lab.lit.data import RegressionDataModule

    class LoaderDataModule(RegressionDataModule):
        """The same data, served the usual per-sample way."""

        def train_dataloader(self) -> DataLoader:  # type: ignore[override]
            data = TensorDataset(self.train_x.cpu(), self.train_y.cpu())
            return DataLoader(data, batch_size=self.hparams.batch_size, shuffle=True)

    indexed, loader = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            indexed.append(_fit_seconds(_scale_args(n, batch, accelerator), Path(tmp)))
        with tempfile.TemporaryDirectory() as tmp:
            loader.append(_fit_seconds(_scale_args(n, batch, accelerator), Path(tmp), LoaderDataModule))
    ratio = statistics.median(loader) / statistics.median(indexed)
    return {
        "ratio": ratio,
        "target": ">= 40",
        "ok": ratio >= 40,
        "indexed_samples_per_s": n / statistics.median(indexed),
        "dataloader_samples_per_s": n / statistics.median(loader),
        "samples": n,
    }


def bench_landscape(resolution: int, repeats: int, accelerator: str = "cpu") -> dict[str, Any]:
    """A resolution x resolution random plane of the trained lab model: one by one over vectorized."""
    from torch.func import functional_call

    from regression_lab.core import landscape as ls
    from regression_lab.core.models import MyNN
    from regression_lab.core.samples import line_split

    x, y = line_split({}, "train")
    torch.manual_seed(0)
    net = MyNN(5)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(400):  # the lab's training, so the landscape is the trained model's
        loss = nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    net, x, y = net.to(device), x.to(device), y.to(device)
    gen = torch.Generator().manual_seed(0)
    centre = {n: p.detach() for n, p in net.named_parameters()}
    d1 = ls.filter_normalized_direction(centre, gen)
    d2 = ls.filter_normalized_direction(centre, gen)

    def vectorized_plane() -> None:
        ls.random_plane(net, x, y, d1, d2, (-1.0, 1.0), resolution)  # returns on the CPU: synchronised

    vectorized = _median_time(vectorized_plane, repeats)
    axis = torch.linspace(-1.0, 1.0, resolution)

    def one_by_one() -> torch.Tensor:
        out = torch.empty(resolution, resolution)
        with torch.no_grad():
            for i, a in enumerate(axis.tolist()):
                for j, b in enumerate(axis.tolist()):
                    params = {n: centre[n] + a * d1[n] + b * d2[n] for n in centre}
                    out[i, j] = torch.mean((functional_call(net, params, (x,)) - y) ** 2)
        return out

    looped = _median_time(one_by_one, max(1, repeats // 3))
    ratio = looped / vectorized
    return {
        "ratio": ratio,
        "target": ">= 100",
        "ok": ratio >= 100,
        "vectorized_s": vectorized,
        "one_by_one_s": looped,
        "points": resolution**2,
    }


def bench_predict_start(repeats: int, warm_up: bool = True) -> dict[str, Any]:
    """``regression-lab predict --x 10`` as a process over ``python -c "import torch"``; ``warm_up``
    runs each once first, untimed, so the file cache holds both."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # A real checkpoint to predict from: a short training run.
        _fit_seconds(
            [
                "--trainer.max_epochs",
                "1",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
            ],
            workdir,
        )
        torch_cmd = [sys.executable, "-c", "import torch"]
        predict_cmd = [sys.executable, "-m", "regression_lab", "predict", "--x", "10"]

        def run(cmd: list[str]) -> None:
            subprocess.run(cmd, cwd=workdir, check=True, capture_output=True)

        if warm_up:
            run(torch_cmd)
            run(predict_cmd)
        base, pred = [], []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            base.append(_median_time(lambda: run(torch_cmd), 1))
            pred.append(_median_time(lambda: run(predict_cmd), 1))
    ratio = statistics.median(pred) / statistics.median(base)
    return {
        "ratio": ratio,
        "target": "<= 1.15",
        "ok": ratio <= 1.15,
        "predict_s": statistics.median(pred),
        "import_torch_s": statistics.median(base),
    }


#: The ensemble row's settings: the sweep's default hidden sizes.
ENSEMBLE_HIDDEN = (4, 5, 8)


def _plain_member_seconds(epochs: int, repeats: int) -> float:
    """One plain-PyTorch loop per member of the lab's data (median over the hidden sizes x repeats)."""
    from regression_lab.core.samples import line_split

    x, y = line_split({}, "train")
    return statistics.median(plain_loop(x, y, h, epochs, None) for h in ENSEMBLE_HIDDEN for _ in range(repeats))


def _stacked_plain_seconds(seeds: int, epochs: int) -> tuple[float, float]:
    """The same stacked members trained by a plain loop (no Lightning): the seconds with building
    them, and of the training loop alone."""
    from regression_lab.core.ensemble import MyNNStack
    from regression_lab.core.samples import line_split

    x, y = line_split({}, "train")
    gc.collect()
    start = time.perf_counter()
    stack = MyNNStack([h for h in ENSEMBLE_HIDDEN for _ in range(seeds)], list(range(seeds)) * len(ENSEMBLE_HIDDEN))
    opt = torch.optim.SGD(stack.parameters(), lr=0.01)
    built = time.perf_counter()
    for _ in range(epochs):
        loss = ((stack(x) - y) ** 2).mean(dim=(1, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = time.perf_counter()
    return end - start, end - built


def bench_ensemble(seeds: int, epochs: int, repeats: int, accelerator: str, large_seeds: int) -> dict[str, Any]:
    """Member-fits/s of an ensemble ``fit`` over one plain loop per member."""
    members = len(ENSEMBLE_HIDDEN) * seeds
    args = [
        "--model.hidden_size", json.dumps(list(ENSEMBLE_HIDDEN)), "--model.num_seeds", str(seeds),
        "--trainer.max_epochs", str(epochs), "--trainer.accelerator", accelerator,
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    plains, totals, loops, bares = [], [], [], []
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits all alike
        plains.append(_plain_member_seconds(epochs, 1))
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            loop, _ = _fit_timing(args, Path(tmp))
            totals.append(time.perf_counter() - start)
            loops.append(loop)
        with tempfile.TemporaryDirectory() as tmp:
            bares.append(_fit_timing([*args, *BARE], Path(tmp))[0])
    plain = statistics.median(plains)
    total, loop, bare = statistics.median(totals), statistics.median(loops), statistics.median(bares)
    stacked_runs = [_stacked_plain_seconds(seeds, epochs) for _ in range(repeats)]
    stacked = statistics.median(t for t, _ in stacked_runs)
    stacked_loop = statistics.median(t for _, t in stacked_runs)
    # Lightning's floor for as many epochs on the same data (benchmarks.floor), less the one
    # plain member it trains: the least Lightning itself adds to a fit of this length.
    floor = statistics.median(floor_seconds({}, epochs, accelerator) for _ in range(repeats))
    overhead = max(floor - plain, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        large_args = [*args[:3], str(large_seeds), *args[4:]]
        start = time.perf_counter()
        _fit_timing(large_args, Path(tmp))
        large = time.perf_counter() - start
    ratio = plain * members / total
    return {
        "ratio": ratio,
        "target": ">= 200",
        "ok": ratio >= 200,
        "members": members,
        "epochs": epochs,
        "plain_member_ms": plain * 1e3,
        "fit_s": total,
        "fit_member_fits_per_s": members / total,
        "plain_member_fits_per_s": 1 / plain,
        # The same members: the training loop only; Lightning's bare loop (no logger, checkpoint
        # or bar); the stacked members in a plain loop, no Lightning (building them included,
        # and its training loop alone, as the prototype was timed).
        "loop_ratio": plain * members / loop,
        "bare_loop_ratio": plain * members / bare,
        "stacked_plain_ratio": plain * members / stacked,
        "stacked_plain_loop_ratio": plain * members / stacked_loop,
        # What a fit of these members through Lightning could reach if nothing cost anything
        # but building and training them (the stacked plain run) and Lightning's own floor (its
        # loop and one self.log a step): no validation, checkpoints, parsing or teardown.
        "lightning_floor_s": overhead,
        "ceiling_ratio": plain * members / (stacked + overhead),
        "large_members": len(ENSEMBLE_HIDDEN) * large_seeds,
        "large_ratio": plain * len(ENSEMBLE_HIDDEN) * large_seeds / large,
    }


def bench_sweep(quick: bool, plain_member_s: float | None) -> dict[str, Any]:
    """The default ``regression-lab sweep`` as a process, in seconds."""
    args = ["--seeds", "0-9", "--epochs", "10", "20"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "regression_lab", "sweep", "--quiet", "--out", "sweep", *args]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        trials = sum(1 for _ in (Path(tmp) / "sweep" / "members.csv").open()) - 1  # member x epoch count
    out: dict[str, Any] = {"ratio": seconds, "target": "<= 15 s", "ok": seconds <= 15, "trials": trials}
    if plain_member_s is not None and not quick:
        # 9,000 lone plain loops: 1,000 seeds x 3 hidden sizes x (100 + 200 + 400) epochs.
        out["plain_loops_s"] = plain_member_s * 3000 * (100 + 200 + 400) / 400
        out["speedup"] = out["plain_loops_s"] / seconds
    return out


def _serve_process(cmd: list[str], port: int, api_key: str | None = None) -> subprocess.Popen:
    from benchmarks.serving import wait_healthy

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(port, proc, api_key)
    except BaseException:
        proc.kill()
        raise
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_serve(seconds: float, unbatched: bool = True, client_processes: int = 4) -> dict[str, Any]:
    """``serve`` (batched, and not) against a bare FastAPI handler, same load, same run.

    ``client_processes`` load processes (each a new interpreter: --quick takes one and no
    warm-up, checking that the row runs rather than measuring it)."""
    import socket

    from benchmarks.serving import load

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        _fit_seconds(["--trainer.max_epochs", "5", "--trainer.enable_progress_bar", "false"], workdir)
        (ckpt,) = workdir.glob("lightning_logs/version_*/checkpoints/last.ckpt")
        results = {}
        servers = {
            "bare": [sys.executable, str(Path(__file__).with_name("serving.py")), str(ckpt)],
            "serve": [sys.executable, "-m", "regression_lab", "serve", "--ckpt_path", str(ckpt)],
            "serve_unbatched": [sys.executable, "-m", "regression_lab", "serve", "--ckpt_path", str(ckpt),
                                "--max_batch_size", "1"],
        }  # fmt: skip
        if not unbatched:
            del servers["serve_unbatched"]
        for name, cmd in servers.items():
            port = free_port()
            cmd = [*cmd, str(port)] if name == "bare" else [*cmd, "--port", str(port)]
            proc = _serve_process(cmd, port)
            try:
                if client_processes > 1:
                    load(port, processes=client_processes, seconds=min(1.0, seconds))  # warm-up
                results[name] = load(port, processes=client_processes, seconds=seconds)
            finally:
                _stop(proc)
    ratio = results["serve"]["requests_per_s"] / results["bare"]["requests_per_s"]
    flat = {f"{name}_{k}": v for name, r in results.items() for k, v in r.items()}
    return {"ratio": ratio, "target": "report", "ok": all(r["errors"] == 0 for r in results.values()), **flat}


def bench_export(n: int, repeats: int) -> dict[str, Any]:
    """onnxruntime on an n-x batch over the PyTorch module, CPU."""
    import numpy as np
    import onnxruntime as ort

    from regression_lab.commands.export import export_bytes
    from regression_lab.core.models import MyNN

    torch.manual_seed(0)
    model = MyNN(5).eval()
    session = ort.InferenceSession(export_bytes(model, "onnx"), providers=["CPUExecutionProvider"])
    x = np.linspace(-10, 10, n, dtype=np.float32).reshape(-1, 1)
    xt = torch.from_numpy(x)

    def run_torch() -> None:
        with torch.no_grad():
            model(xt)

    def run_onnx() -> None:
        session.run(None, {"x": x})

    torch_s = _median_time(run_torch, repeats)
    onnx_s = _median_time(run_onnx, repeats)
    diff = float(np.abs(session.run(None, {"x": x})[0] - model(xt).detach().numpy()).max())
    return {
        "ratio": torch_s / onnx_s,
        "target": "report",
        "ok": diff <= 1e-5,
        "onnx_predictions_per_s": n / onnx_s,
        "torch_predictions_per_s": n / torch_s,
        "max_abs_difference": diff,
        "batch": n,
    }


def run_benchmarks(rows: list[str], quick: bool = False, accelerator: str = "auto") -> dict[str, dict[str, Any]]:
    """Run the named rows; ``quick`` shrinks every size so the whole run takes seconds."""
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    gpu = accelerator == "gpu"
    n = 20_000 if quick else (10_000_000 if gpu else 1_000_000)
    batch = 2048 if quick else (65_536 if gpu else 8192)
    repeats = 1 if quick else 5
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "lab_epochs": lambda: bench_lab_epochs(20 if quick else 400, repeats),
        # A CPU epoch is short (~0.17 s here) and this machine is noisy: more pairs there.
        "scale": lambda: bench_scale(n, batch, 1 if quick else (11 if gpu else 21), accelerator),
        "data_path": lambda: bench_data_path(
            n if quick else min(n, 1_000_000), batch if quick else 8192, max(1, repeats // 2), accelerator
        ),
        "landscape": lambda: bench_landscape(11 if quick else 201, repeats, accelerator),
        "predict_start": lambda: bench_predict_start(1 if quick else 7, warm_up=not quick),
        "ensemble": lambda: bench_ensemble(
            10 if quick else 1000, 20 if quick else 400, 1 if quick else 3, accelerator, 20 if quick else 10_000
        ),
        "sweep": lambda: bench_sweep(quick, _plain_member_seconds(400, 3) if not quick else None),
        "serve": lambda: bench_serve(0.5 if quick else 5.0, unbatched=not quick, client_processes=1 if quick else 4),
        "export": lambda: bench_export(1000 if quick else 100_000, 3 if quick else 21),
    }
    results = {}
    for row in rows:
        print(f"running {row} ...", file=sys.stderr, flush=True)
        try:
            # lab_epochs trains on the CPU (the lab's five samples) and predict runs there.
            device = "cpu" if row in ("lab_epochs", "predict_start", "sweep", "serve", "export") else accelerator
            results[row] = {"row": row, **runners[row](), "device": device}
        except Exception as exc:  # one broken row must not lose the others' figures
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            results[row] = {"row": row, "ratio": None, "target": "-", "ok": False, "error": error}
    return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """The results as a fixed-width table."""
    lines = [f"{'row':<14} {'ratio':>9} {'target':>8}  {'ok':<3} measured", "-" * 90]
    for row, r in results.items():
        if "error" in r:
            lines.append(f"{row:<14} {'-':>9} {'-':>8}  {'NO':<3} failed: {r['error']}")
            continue
        detail = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k not in ("row", "ratio", "target", "ok") and not isinstance(v, list)  # lists: JSON only
        )
        lines.append(f"{row:<14} {r['ratio']:>9.3g} {r['target']:>8}  {'yes' if r['ok'] else 'NO':<3} {detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The benchmark's command line (``scripts/benchmark.py``)."""
    parser = argparse.ArgumentParser(prog="benchmark.py", description="regression-lab against plain PyTorch")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks that every row runs)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="which rows to run")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    args = parser.parse_args(argv)
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("benchmark.py: error: --accelerator gpu, but torch sees no CUDA device", file=sys.stderr)
        return 2
    results = run_benchmarks(args.rows, args.quick, args.accelerator)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    # A row that missed its target is a finding, not a failure; a row that broke is.
    return 1 if any("error" in r for r in results.values()) else 0
