"""Helpers for the tests: run the CLI as a user would (subprocess, slow tier) or in-process
(fast tier: no new interpreter importing torch and Lightning).

Imported by the test modules: ``from helpers import run_cli, run_main, fit_in_process``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_command() -> list[str]:
    """The installed console script, or the module if the script is not on this interpreter's path."""
    script = Path(sys.executable).with_name("regression-lab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "regression_lab"]


def run_cli(
    *args: str, cwd: Path, stdin: str | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``regression-lab ARGS`` in a subprocess, capturing text output."""
    return subprocess.run(
        [*cli_command(), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


def run_main(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``regression-lab ARGS`` in this process through ``cli.main``, inside ``cwd``.

    Returns what a subprocess would (exit status, stdout, stderr), from the entry point's own
    status and output, so the bad-input tables run in-process in the fast tier.
    """
    from regression_lab.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_argv, old_stdin = Path.cwd(), sys.argv, sys.stdin
    os.chdir(cwd)
    sys.argv = ["regression-lab"]  # LightningCLI warns when it sees both args and sys.argv
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # --help and --print_config print, then exit
                code = exit_.code if isinstance(exit_.code, int) else 0
    finally:
        os.chdir(old_cwd)
        sys.argv, sys.stdin = old_argv, old_stdin
    return subprocess.CompletedProcess(["regression-lab", *args], code, out.getvalue(), err.getvalue())


def fingerprint(root: Path) -> dict[str, str]:
    """Content hashes of every file under ``root``, to prove a command changed nothing."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def free_port() -> int:
    """A TCP port nothing listens on now (for a DDP rendezvous on localhost)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")


def cli_in_process(workdir: Path, command: str, *args: str) -> object:
    """Run ``regression-lab COMMAND ARGS`` (fit, validate, test) in this process inside ``workdir``.

    Much faster than a subprocess (no new interpreter importing Lightning); returns the CLI object.
    """
    from regression_lab.lit.cli import cli_main

    old_cwd, old_argv = Path.cwd(), sys.argv
    os.chdir(workdir)
    sys.argv = ["regression-lab"]  # LightningCLI warns when it sees both args and sys.argv
    try:
        return cli_main([command, *QUIET, *args])
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv


def fit_in_process(workdir: Path, *args: str) -> object:
    """``regression-lab fit ARGS`` in this process, inside ``workdir``."""
    return cli_in_process(workdir, "fit", *args)
