"""The light commands' parser: jsonargparse without Lightning, raising instead of exiting.

Every command module builds its parser with :func:`new_parser`; the dispatcher
(``regression_lab.cli``) turns a parse error into one ``error:`` line and exit status 2::

    from regression_lab.commands.options import new_parser
    parser = new_parser("predict", "print predictions from a checkpoint as CSV")
"""

from __future__ import annotations

from jsonargparse import ArgumentParser


def new_parser(command: str, description: str) -> ArgumentParser:
    """A parser for ``regression-lab COMMAND`` whose errors are raised as ``ArgumentError``."""
    return ArgumentParser(prog=f"regression-lab {command}", description=description, exit_on_error=False)
