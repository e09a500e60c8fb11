"""How a command ends when it does not succeed: bad input (exit 2), a failed run (exit 1), or SIGINT/SIGTERM
(exit 128 + the signal's number); :func:`regression_lab.cli.main` turns each into one line on stderr. No torch::

    from regression_lab.errors import UsageError
    raise UsageError("hidden_size must be >= 1")       # error: hidden_size must be >= 1, exit 2
"""

from __future__ import annotations

import contextlib
import errno
import math
import numbers
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonargparse

#: The largest finite float32: an input beyond it overflows the model's arithmetic to inf.
FLOAT32_MAX = 3.4028234663852886e38
#: How much of a bad value an error message quotes: a megabyte-long line must not come back as a long error.
QUOTE_CHARS = 40


class UsageError(ValueError):
    """Something the user typed or gave is wrong: one ``error:`` line, exit 2."""


class TrainingFailed(RuntimeError):
    """A run failed for another reason than bad input (it diverged): one ``error:`` line, exit 1."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command: one line saying what is on disk, exit 128 + n."""

    def __init__(self, signum: int) -> None:
        """Args: signum: the signal's number (``signal.SIGINT``, ``signal.SIGTERM``)."""
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def command_parser(command: str, doc: str | None) -> jsonargparse.ArgumentParser:
    """The parser of ``regression-lab COMMAND``: its ``--help`` the module docstring's first sentence (no example or
    Sphinx roles), its errors raised (one line, exit 2), abbreviated options (``--conf``) not taken for others."""
    import jsonargparse  # here, not above: the modules that import errors but parse nothing stay light

    text = re.sub(r":\w+:`([^`]*)`", r"\1", " ".join((doc or "").replace("``", "").split()))
    description = text.split(". ")[0].split("::")[0].rstrip(":.") + "."
    return jsonargparse.ArgumentParser(
        prog=f"regression-lab {command}", description=description, exit_on_error=False, allow_abbrev=False
    )


def quote(text: str) -> str:
    """``text`` as an error message quotes it: stripped, at most :data:`QUOTE_CHARS` characters."""
    # Cut after repr: control characters and astral symbols grow fourfold or more in it.
    shown = repr(text.strip())
    return shown if len(shown) <= QUOTE_CHARS + 2 else shown[: QUOTE_CHARS + 1] + "..." + shown[0]


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an int in ``[minimum, maximum]``, else :class:`UsageError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{name} must be <= {maximum:,}, got {value:,}")
    return value


def check_float(
    name: str, value: object, low: float = -math.inf, *, strict: bool = False, high: float = math.inf
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``low`` excluded with ``strict``), else :class:`UsageError`."""
    shown = repr(value) if len(repr(value)) <= QUOTE_CHARS else repr(value)[:QUOTE_CHARS] + "..."
    try:
        finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an int past float's range (a Python caller's 10**400)
        finite = False
    if not finite:
        raise UsageError(f"{name} must be a finite number, got {shown}")
    if value < low or (strict and value == low):
        raise UsageError(f"{name} must be {'>' if strict else '>='} {low:g}, got {shown}")
    if value > high:
        raise UsageError(f"{name} must be <= {high:.4g}, got {shown}")
    return float(value)


#: OSErrors that :func:`regression_lab.cli.main` answers itself: a full or failing disk (a failed run, exit 1, saying
#: what is on disk) and a path too long (bad input, however deep it was found).
PASSED_ON = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.ENAMETOOLONG)


@contextlib.contextmanager
def refused_os_errors(message: str) -> Iterator[None]:
    """An OSError in the block is bad input, ``message: why`` (a directory where a file goes, no permission, a port
    in use); the :data:`PASSED_ON` ones go on as they are."""
    try:
        yield
    except OSError as err:
        if err.errno in PASSED_ON:
            raise
        where = f" ({err.filename})" if err.filename and str(err.filename) not in message else ""
        raise UsageError(f"{message}: {err.strerror or err}{where}") from None


_signal: dict[str, int | bool | None] = {"signum": None, "deferred": False, "pid": None, "forced": False}


def _handler(signum: int, frame: object) -> None:
    if os.getpid() != _signal["pid"]:  # a forked process (LitServe's server): its parent reports
        sys.exit(0)
    first = _signal["signum"] is None
    _signal["signum"] = signum
    # While a fit runs, the first signal is a request (the fit stops at its next batch end, see callbacks.Guard):
    # an exception raised at an arbitrary bytecode can land between a lock's acquire and release in a writer
    # thread's code, and the shutdown then waits on that lock forever. A second signal interrupts at once.
    if not (first and _signal["deferred"]):
        _signal["forced"] = True
        raise Interrupted(signum)


def handle_signals() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` here (main thread); returns the handlers they had."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _signal.update(signum=None, deferred=False, pid=os.getpid(), forced=False)
    return {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}


def restore_signals(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`handle_signals` replaced, and forget any signal it recorded."""
    for s, handler in previous.items():
        signal.signal(s, handler)
    _signal.update(signum=None, deferred=False, forced=False)


def requested() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _signal["signum"]  # type: ignore[return-value]


def forced() -> bool:
    """Whether a signal interrupted at once (not deferred to a safe point): whatever ran was cut anywhere."""
    return bool(_signal["forced"])


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block the first signal is only recorded; it is raised as :class:`Interrupted` when the block ends,
    whatever it ended with (Lightning's own SIGTERMException, say). Blocks nest."""
    previous, _signal["deferred"] = _signal["deferred"], True
    try:
        yield
    except BaseException:
        if requested() is None:
            raise
    finally:
        _signal["deferred"] = previous
    if requested() is not None:
        raise Interrupted(requested())  # type: ignore[arg-type]
