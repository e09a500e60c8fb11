"""The ``regression-lab`` command: one entry point, one signal handler, one way to fail. ``fit``, ``validate`` and
``test`` go through LightningCLI (:mod:`regression_lab.train`); the other commands are modules with ``build_parser()``
and ``run(args)``. Bad input ends with one ``error:`` line and exit 2, a failed run exit 1, a signal 130/143::

    regression-lab --help
    regression-lab predict --x 10
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from regression_lab import errors
from regression_lab.errors import Interrupted, TrainingFailed, UsageError, handle_signals, quote, restore_signals

USAGE = """\
usage: regression-lab <command> [options]

Train a tiny MLP to learn y = 3x + 2 (the first-neural-network lab) with PyTorch Lightning.

training (LightningCLI: --help, --config FILE, --print_config, dotted overrides):
  fit         train; prints the prediction for x = 10 and the checkpoint path
  validate    evaluate a checkpoint on the validation set (--ckpt_path, default the newest)
  test        evaluate a checkpoint on the test set (--ckpt_path, default the newest)
  sweep       an Optuna study of hidden sizes x epochs x learning rates over 1,000 seeds, ranked
  landscape   loss landscapes to TensorBoard (and --out DIR): the lab's sweep, (w, b), the trained net

light (no Lightning import):
  predict     print CSV x,prediction from a checkpoint (--x 10 [--x 11 ...] | --input FILE|-)
  demo        the lab's forward passes and model walk-throughs [forward|tinymodel|linear|mynn|all]
  export      a checkpoint's model as ONNX, torch.export or TorchScript (--format, --out)
  serve       predictions over HTTP (LitServe): POST /predict {"x": 10}

Run 'regression-lab <command> --help' for a command's options.
"""

TRAINING = ("fit", "validate", "test")
COMMANDS = ("predict", "demo", "landscape", "sweep", "serve", "export")
#: What the line after "interrupted by SIGTERM" says: what is on disk, and how to go on.
AFTER_INTERRUPT = {
    "fit": "the run's last.ckpt holds the weights as they were when it stopped (after a second signal: as of its "
    "last save): resume with --ckpt_path last",
    "sweep": "the running trials are marked failed: run the same command again to continue the study",
    "serve": "the requests in flight were answered",
    "landscape": "each --out file is whole or the previous one: run it again",
    "export": "the --out file is whole or the previous one: run it again",
}
#: A config file's size: a million seeds written out take about 8 MB.
MAX_CONFIG_BYTES = 16 * 2**20


def on_disk(command: str) -> str:
    """What a stopped command leaves on disk, and how to go on."""
    return AFTER_INTERRUPT.get(command, f"{command} wrote nothing that a rerun does not write again")


def one_line(message: object) -> str:
    """An error message collapsed to one line of at most 1,000 characters (a library may quote a whole value)."""
    text = " ".join(str(message).split())
    return text if len(text) <= 1000 else text[:1000] + "..."


def no_aliases(loader: Any) -> Any:
    """jsonargparse's YAML loader, refusing aliases: a 1 kB "billion laughs" file expands to billions of values."""
    import yaml

    def load(text: str) -> Any:
        if "*" in text and any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
            raise UsageError("YAML aliases (*name) are not accepted in settings: write the values out")
        return loader(text)

    load.no_aliases = True  # type: ignore[attr-defined]
    return load


def bound_configs(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config``/``-c`` file read here (at most :data:`MAX_CONFIG_BYTES`: ``/dev/zero`` ends)
    and passed on as its YAML text, so a pipe is read once; every YAML value goes through :func:`no_aliases`."""
    import yaml
    from jsonargparse import get_loader, set_loader

    if not getattr(get_loader("yaml"), "no_aliases", False):
        set_loader("yaml", no_aliases(get_loader("yaml")), exceptions=(yaml.YAMLError,))
    out = list(argv)
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag not in ("--config", "-c") or not (eq or i + 1 < len(argv)):
            continue
        j, path = (i, value) if eq else (i + 1, argv[i + 1])
        if os.path.exists(path) and not os.path.isdir(path):  # else jsonargparse says what it is (or reads it as YAML)
            text = read_config(path)
            out[j] = f"{flag}={text}" if eq else text
    return out


def read_config(path: str) -> str:
    """A ``--config`` file's text, as every command reads it: at most :data:`MAX_CONFIG_BYTES`, valid YAML."""
    import yaml

    with errors.refused_os_errors(f"cannot read --config {path}"), open(path, "rb") as fh:  # noqa: PTH123
        text = fh.read(MAX_CONFIG_BYTES + 1).decode("utf-8", errors="replace")
    if len(text) > MAX_CONFIG_BYTES:
        raise UsageError(f"--config {path} is larger than {MAX_CONFIG_BYTES:,} bytes: not a config file")
    try:  # named here: passed on as text, jsonargparse could not say which file it was
        yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path} is not valid YAML: {one_line(err)}") from None
    return text


def run_command(command: str, argv: Sequence[str]) -> None:
    """Parse ``argv`` with the command's parser and run it; the training commands through LightningCLI."""
    with usage_errors(command):
        if command in TRAINING:
            from regression_lab.train import cli_main

            cli_main([command, *argv])
            return
        try:
            module = importlib.import_module(f"regression_lab.{command}")
        except ImportError as err:  # an extra not installed (serve: LitServe)
            raise UsageError(f"{command} needs {err.name}: pip install 'regression-lab[serve]'") from None
        module.run(module.build_parser().parse_args(list(argv)))


@contextlib.contextmanager
def usage_errors(command: str) -> Iterator[None]:
    """Within the block, the libraries' words for bad settings become one :class:`UsageError` line each: jsonargparse's,
    a class it builds refusing its arguments, Lightning's contradicting settings, a package a setting needs."""
    from jsonargparse import ArgumentError

    try:
        yield
    except UsageError:
        raise
    except ArgumentError as err:
        message = one_line(err)
        if message.startswith("Unexpected config:"):  # jsonargparse's words for a non-mapping file
            message = "a --config file must be a YAML mapping of settings (as configs/default.yaml is); " + message
        elif message.endswith(("object is not iterable", "does not support item assignment")):  # one value, a list's
            message = f"a list option was given one value (in --config, write it as a YAML list, e.g. [50]): {message}"
        raise UsageError(f"regression-lab {command}: {message}") from None
    except ModuleNotFoundError as err:  # --trainer.accelerator tpu, say
        if command not in TRAINING:  # the light commands' packages are the install's, not a setting's
            raise
        raise UsageError(f"a setting needs a missing package: {one_line(err)}") from None
    except ValueError as err:  # jsonargparse could not build a class given in the settings
        if found := re.search(r"Requirement '([^']+)' not met", str(err)):  # its package is missing (MLFlowLogger)
            raise UsageError(f"a setting needs a missing package: pip install '{found.group(1)}'") from None
        cause = err.__cause__
        if not (isinstance(cause, ValueError) or _misconfigured(cause)) or "class_path=" not in str(err):
            raise  # not a class of the settings refusing its arguments: a bug
        # The class refused its arguments: its own words, after its name when the setting names one class.
        names = set(re.findall(r"class_path='(?:[\w.]*\.)?(\w+)'", str(err)))
        raise UsageError(f"{names.pop() + ': ' if len(names) == 1 else ''}{one_line(err.__cause__)}") from None
    except Exception as err:
        if not _misconfigured(err):
            raise
        raise UsageError(one_line(err)) from None


def _misconfigured(err: BaseException | None) -> bool:
    """Whether ``err`` is Lightning's MisconfigurationException, its word for contradicting settings."""
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")  # imported by then if it is the cause
    return lightning is not None and isinstance(err, lightning.MisconfigurationException)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``regression-lab`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        (sys.stdout if argv else sys.stderr).write(USAGE)  # asked for, or the answer to a missing command
        return 0 if argv else 2
    command, previous = argv[0], handle_signals()
    try:
        if sys.stdout is None:  # started with standard output closed (>&-): refused as a closed file is
            sys.stdout = open(1, "w")  # noqa: SIM115, PTH123 (raises EBADF)
        if command not in (*TRAINING, *COMMANDS):
            raise UsageError(f"unknown command {command!r}: choose from {', '.join((*TRAINING, *COMMANDS))}")
        if bad := [a for a in argv if re.search("[\ud800-\udfff]", a)]:  # bytes that are not UTF-8 arrive so
            raise UsageError(f"an argument is not valid UTF-8 (the files written hold text): {quote(bad[0])}")
        run_command(command, bound_configs(argv[1:]))
        sys.stdout.flush()  # a full disk fails here, in this handler, not as Python exits
        return 0
    except (UsageError, TrainingFailed) as err:  # bad input exits 2, a failed run 1
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except Interrupted as err:
        print(f"interrupted by {err} ({on_disk(command)})", file=sys.stderr)
        return 128 + err.signum
    except BrokenPipeError:
        # The reader went away (`regression-lab demo | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # a full disk, a closed output (the files that were written are whole: atomic writes)
        where = f" {quote(str(err.filename))}" if err.filename else ""
        if err.errno == errno.ENAMETOOLONG:  # bad input, however deep it was found
            print(f"error: a path is too long for this system:{where}", file=sys.stderr)
            return 2
        print(f"error: cannot write{where}: {err.strerror or err} ({on_disk(command)})", file=sys.stderr)
        return 1
    finally:
        restore_signals(previous)


def entry() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
