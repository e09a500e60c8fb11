"""Run the command as a process (the slow tier) or in-process through ``cli.main`` (the fast tier); compare trees."""

import contextlib
import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
RUN = "lightning_logs/version_0"  # a fit's first run directory, and its last checkpoint
LAST = f"{RUN}/checkpoints/last.ckpt"


def cli_command() -> list[str]:
    """The installed console script, or the module if it is not beside this interpreter."""
    script = Path(sys.executable).with_name("regression-lab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "regression_lab"]


def start(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    """``regression-lab ARGS`` started as a process, its output captured as text."""
    return subprocess.Popen([*cli_command(), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)  # fmt: skip


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``regression-lab ARGS`` as a process, to its end."""
    return subprocess.run([*cli_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def run_main(*args: str, cwd: Path, stdin: object = "") -> subprocess.CompletedProcess:
    """``regression-lab ARGS`` run in this process by ``cli.main``, in ``cwd``; ``stdin``: text, a stream or None."""
    from regression_lab.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_stdin = Path.cwd(), sys.stdin
    os.chdir(cwd)
    sys.stdin = io.StringIO(stdin) if isinstance(stdin, str) else stdin
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # --help and --print_config print, then exit
                code = exit_.code if isinstance(exit_.code, int) else 0
    finally:
        os.chdir(old_cwd)
        sys.stdin = old_stdin
    return subprocess.CompletedProcess(["regression-lab", *args], code, out.getvalue(), err.getvalue())


def fit_in_process(workdir: Path, *args: str, command: str = "fit"):
    """``regression-lab fit ARGS`` (or ``command``) in this process inside ``workdir`` (made if missing): the CLI."""
    from regression_lab.train import cli_main

    old_cwd = Path.cwd()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    try:
        return cli_main([command, *QUIET, *args])
    finally:
        os.chdir(old_cwd)


def events(path: Path, **guidance: int):
    """TensorBoard's reader of a run directory or event file, loaded (``scalars=0``: keep every scalar)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance=guidance or None)
    acc.Reload()
    return acc


def one_error_line(proc: subprocess.CompletedProcess, phrase: str, code: int = 2) -> str:
    """Assert exit ``code`` and a last line ``error: ...`` holding ``phrase``, the only line at exit 2; return it."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and phrase in lines[-1], proc.stderr[-2000:]
    assert (len(lines) == 1 or code != 2) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[-1]


def fingerprint(root: Path) -> dict[str, str | bool]:
    """Every file's hash under ``root`` (True for a directory), to show that a command changed nothing."""
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else p.is_dir()  # noqa: E731
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*"))}


def edited(src: Path, dst: Path, edit) -> Path:
    """The checkpoint ``src`` saved at ``dst`` once ``edit(ckpt)`` has changed it."""
    import torch

    ckpt = torch.load(src, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)
    return dst


def put(key: object, value: object):
    """An edit setting one entry of a checkpoint's state_dict."""
    return lambda ckpt: ckpt["state_dict"].__setitem__(key, value)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def signal_when(condition, signum: int) -> threading.Event:
    """Signal this process (``signum``) from a thread once ``condition()`` holds or at 120 s, unless ``done`` is set."""
    done = threading.Event()

    def wait_and_send() -> None:
        deadline = time.monotonic() + 120
        while not condition() and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not done.is_set():
            os.kill(os.getpid(), signum)

    threading.Thread(target=wait_and_send, daemon=True).start()
    return done


def wait_for(condition, proc: subprocess.Popen | None, what: str, timeout: float = 120) -> None:
    """Poll ``condition()`` until it holds, failing if ``proc`` (if any) ends first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)
