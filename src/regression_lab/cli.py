"""The ``regression-lab`` command: dispatches to the training CLI or to the light commands.

Training subcommands (``fit``, ``validate``, ``test``) go through LightningCLI
(:mod:`regression_lab.lit.cli`). The others are modules of :mod:`regression_lab.commands`, each
parsed with jsonargparse; the light ones (``predict``, ``demo``, ``landscape``) never import
Lightning, so they start about as fast as ``import torch``. Errors in what the user gave end
with one line on stderr and exit status 2; a run that fails for another reason (e.g. diverged
training) exits 1. Run it::

    regression-lab --help
    regression-lab fit
    regression-lab predict --x 10
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from regression_lab import config_guard
from regression_lab.core.errors import TrainingFailed, UsageError
from regression_lab.core.interrupts import Interrupted, interruptible

TRAINING_COMMANDS = ("fit", "validate", "test")

USAGE = """\
usage: regression-lab <command> [options]

Train a tiny MLP to learn y = 3x + 2 (the first-neural-network lab) with PyTorch Lightning.

training commands (LightningCLI: --help, --config FILE, --print_config, dotted overrides):
  fit         train; prints the prediction for x = 10 and the checkpoint path
  sweep       hidden sizes x epochs x learning rates over 1,000 seeds in one ensemble fit, ranked
  validate    evaluate a checkpoint on the validation set (--ckpt_path, default the newest)
  test        evaluate a checkpoint on the test set (--ckpt_path, default the newest)

light commands (no Lightning import):
  predict     print CSV x,prediction from a checkpoint (--x 10 [--x 11 ...] | --input FILE|-)
  landscape   loss landscapes to TensorBoard (and --out DIR): the lab's sweep, (w, b), the trained net
  demo        the lab's forward passes and model walk-throughs [forward|tinymodel|linear|mynn|all]
  export      a checkpoint's model as ONNX, torch.export or TorchScript (--format, --out)

serving (LitServe, no Lightning Trainer):
  serve       predictions over HTTP: POST /predict {"x": 10} (--ckpt_path, --port, --api_key)

Run 'regression-lab <command> --help' for a command's options.
"""


def _one_line(message: object) -> str:
    """Collapse an error message to one line, so every failure reads the same way."""
    return " ".join(str(message).split())


#: Commands of regression_lab.commands, each a module with ``build_parser()`` and ``run(cfg)``;
#: only the one asked for is imported.
COMMANDS = ("predict", "demo", "landscape", "sweep", "serve", "export")


def _run_command(name: str, argv: Sequence[str]) -> int:
    from jsonargparse import ArgumentError

    module = importlib.import_module(f"regression_lab.commands.{name}")
    parser = module.build_parser()
    try:
        cfg = parser.parse_args(list(argv))
    except ArgumentError as err:
        raise UsageError(f"regression-lab {name}: {_one_line(err)}") from None
    return module.run(cfg)


#: Commands that stop on signals in their own way: the sweep marks its running trials failed
#: (sweep_study.stop_on_signals), serve drains the requests in flight (LitServe).
STOPS_ITSELF = ("sweep", "serve")

#: What the line after "interrupted by SIGTERM" says: what is on disk, and how to go on.
AFTER_INTERRUPT = {
    "fit": "the newest last.ckpt holds the weights as of its last save: resume with --ckpt_path last",
    "validate": "nothing of the checkpoint changed: run it again",
    "test": "nothing of the checkpoint changed: run it again",
    "predict": "no file is written by predict: run it again",
    "landscape": "each --out file is either whole or the previous one (written by rename): run it again",
    "export": "the --out file is either whole or the previous one (written by rename): run it again",
    "demo": "demo writes no files",
}


def _run_training(argv: Sequence[str], from_sys_argv: bool) -> int:
    # Lightning and its argument parser load only here, for the training commands.
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from regression_lab.lit.cli import cli_main

    try:
        # LightningCLI reads sys.argv itself when run as the console script (and warns if given both).
        with interruptible():
            cli_main(None if from_sys_argv else list(argv), stop_on_signals=True)
    except ArgumentError as err:
        message = _one_line(err)
        if message.startswith("Unexpected config:"):
            # jsonargparse's words for a --config file that is empty or not a mapping.
            message = "a --config file must be a YAML mapping of settings (as configs/default.yaml is); " + message
        raise UsageError(f"regression-lab {argv[0]}: {message}") from None
    except MisconfigurationException as err:
        # Lightning's word for settings that contradict each other: still the user's input.
        raise UsageError(f"regression-lab {argv[0]}: {_one_line(err)}") from None
    except ModuleNotFoundError as err:
        # A setting that needs a package this machine lacks (e.g. --trainer.accelerator tpu).
        raise UsageError(f"regression-lab {argv[0]}: a setting needs a missing package: {_one_line(err)}") from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``regression-lab`` console script; returns the exit status."""
    from_sys_argv = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    command = argv[0]
    try:
        config_guard.install()
        bounded = config_guard.bounded_config_args(argv)
        if bounded != argv and from_sys_argv:
            sys.argv[1:] = bounded  # LightningCLI reads sys.argv itself (see _run_training)
        argv = bounded
        if command in TRAINING_COMMANDS:
            return _run_training(argv, from_sys_argv)
        if command in STOPS_ITSELF:
            return _run_command(command, argv[1:])
        if command in COMMANDS:
            with interruptible():
                return _run_command(command, argv[1:])
        raise UsageError(f"unknown command {command!r}: choose from {', '.join((*TRAINING_COMMANDS, *COMMANDS))}")
    except UsageError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except TrainingFailed as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"interrupted by {err} ({AFTER_INTERRUPT[command]})", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`regression-lab demo | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def entry() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
