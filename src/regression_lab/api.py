"""The Python API: what the commands do, as functions of Python objects, for a notebook or a script (each command is
a thin layer over the same function). Bad settings raise :class:`~regression_lab.errors.UsageError` with the line the
command would print. Try::

    from regression_lab import api
    run = api.train()                              # the lab: prints "Model prediction for 10 is 31.9979"
    api.predict(run.checkpoint, [10.0])            # ([31.99...], None): the torch-only path of `predict`
    rows = api.sweep(seeds="0-99")                 # the ranked table as dicts; api.frame(rows) as a DataFrame
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regression_lab.errors import UsageError


@dataclass
class Trained:
    """A finished ``fit``: the trained LightningModule, its DataModule and Trainer, the final numbers (``prediction``
    at ``probe_x``, ``train_loss``, ``val_loss``, ``abs_error``; an ensemble's means and spread), its ``last.ckpt``."""

    model: Any
    datamodule: Any
    trainer: Any
    metrics: dict[str, float]
    checkpoint: Path | None


def demo(name: str = "all", seed: int = 0) -> list[str]:
    """``regression-lab demo``: the lab's forward passes (``forward``), ``tinymodel``, ``linear`` and ``mynn``, each
    section as the text the command prints."""
    from regression_lab.demo import format_section, run_demo

    return [format_section(section) for section in run_demo(name, seed)]


def train(model: dict | None = None, data: dict | None = None, trainer: dict | None = None,
          seed_everything: int | None = None, **options: Any) -> Trained:  # fmt: skip
    """``regression-lab fit``: the lab's model (or an ensemble, with ``model={"num_seeds": 1000}``) on the lab's
    data, with every default of the command.

    Args:
        model: ``--model.*`` settings (``regression_model``'s arguments), e.g. ``{"hidden_size": 8}``.
        data: ``--data.*`` settings (``RegressionDataModule``'s arguments).
        trainer: ``--trainer.*`` settings, e.g. ``{"max_epochs": 200}``.
        seed_everything: the seed (the command's ``--seed_everything``; its default if None).
        options: the command's other options as keywords: ``checkpoint``, ``last_checkpoint``, ``ckpt_path``,
            ``trajectory_every``.
    """
    from regression_lab.cli import usage_errors
    from regression_lab.train import cli_main

    if "config" in options:  # jsonargparse reads --config from a command line only (from a dict: an assertion)
        raise UsageError("train takes no config file: pass its settings as model=, data= and trainer= dicts, or run "
                         "regression-lab fit --config FILE")  # fmt: skip
    config = {"model": model or {}, "data": data or {}, "trainer": trainer or {}}
    if wrong := next((k for k, v in config.items() if not isinstance(v, dict)), None):  # as the command's --model 5
        raise UsageError(f"{wrong} takes a dict of --{wrong}.* settings, got {config[wrong]!r}")
    config |= {} if seed_everything is None else {"seed_everything": seed_everything}
    with usage_errors("fit"):
        cli = cli_main({"fit": {**config, **options}})
    last = Path(cli.last_path) if cli.last_path else None
    return Trained(cli.model, cli.datamodule, cli.trainer, cli.final_metrics, last)


def load(checkpoint: str | Path | None = None) -> Any:
    """A checkpoint's network (None: the newest under ./lightning_logs) for predictions, without Lightning
    (:class:`~regression_lab.predict.Predictor`: call it with a list of x for ``(means, stds)``, the stds None for a
    single model). ``RegressionModule.load_from_checkpoint(path, weights_only=True)`` loads it the Lightning way."""
    from regression_lab.files import chosen_checkpoint
    from regression_lab.predict import Predictor

    return Predictor(chosen_checkpoint(checkpoint))


def predict(checkpoint: str | Path | None, xs: float | list[float]) -> tuple[list[float], list[float] | None]:
    """``regression-lab predict``: the predictions at ``xs`` (one x or a list; and an ensemble's spread) from a
    checkpoint (None: the newest, as the command takes), checked as the command does."""
    many = isinstance(xs, Iterable) and not isinstance(xs, (str, bytes))  # "10" is one (refused) x, not two
    values = list(xs) if many else [xs]  # NumPy scalars too
    if not values:
        raise UsageError("no x values to predict")
    return load(checkpoint)(values)


def landscape(checkpoint: str | Path | None = None, data_csv: str | Path | None = None, **settings: Any) -> Any:
    """``regression-lab landscape``'s numbers (:class:`~regression_lab.landscape.Results`: each landscape, least
    squares, the Hessian, the trajectory), without writing files, on the checkpoint's training data or every row of
    ``data_csv``; ``settings`` are its options, e.g. ``resolution=101`` or ``trajectory=True``. Draw one with
    :func:`figure`. ``checkpoint=None`` takes none (the line families alone), where the command takes the newest run."""
    from regression_lab.files import chosen_checkpoint
    from regression_lab.landscape import Settings, compute

    try:
        chosen = Settings(**settings)
    except TypeError as err:  # an option the command does not have
        raise UsageError(f"landscape: {err}") from None
    ckpt = None if checkpoint is None else chosen_checkpoint(checkpoint)  # "" is refused, as the command's
    return compute(chosen, ckpt, None if data_csv is None else str(data_csv))


def figure(results: Any, name: str) -> Any:
    """The matplotlib figure of one landscape of :func:`landscape`'s results (``lab_1d``, ``linear_2d``,
    ``random_2d``, ``random_1d``, ``interpolation``, ``trajectory``), as the command draws it."""
    from regression_lab.landscape_plots import figure as draw

    if name not in results.landscapes:  # trajectory: only from a run that kept one, with trajectory=True
        raise UsageError(f"no landscape {name!r} in these results: choose from {', '.join(results.landscapes)}")
    return draw(results.landscapes[name], results)


def sweep(**options: Any) -> list[dict[str, Any]]:
    """``regression-lab sweep``: trains its study (or, with ``report=True``, reads it) and returns the ranked table,
    a dict per setting and epoch count with the columns of ``results.csv``. ``options`` are the command's, e.g.
    ``seeds="0-99"`` (or a list of them), ``hidden_sizes=[4, 8], out="my_sweep"``."""
    import yaml

    from regression_lab.cli import no_aliases, read_config, usage_errors
    from regression_lab.sweep import GRID_KEYS, build_parser, run

    if isinstance(options.get("seeds"), str):  # "0-99 200" as the command line takes it
        options["seeds"] = options["seeds"].split()
    with usage_errors("sweep"):
        if (path := options.pop("config", None)) is not None:  # as the command reads it: bounded, no aliases
            settings = no_aliases(yaml.safe_load)(read_config(str(path)))
            if not isinstance(settings, dict):
                raise UsageError(f"--config {path} must be a YAML mapping of the sweep's options")
            options = {**settings, **options}
        listed = (*GRID_KEYS, "seeds")  # one value where a list goes: the list of it
        options |= {k: [v] for k in listed if isinstance(v := options.get(k), numbers.Real)}
        rows = run(build_parser().parse_object(options))
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]


def frame(rows: list[dict[str, Any]]) -> Any:
    """The rows of :func:`sweep` as a pandas DataFrame (``pip install pandas``)."""
    import pandas

    return pandas.DataFrame(rows)
