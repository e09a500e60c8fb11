"""SIGINT and SIGTERM as a request to stop, with a true exit status (128 + the signal's number).

The dispatcher (:mod:`regression_lab.cli`) runs every command inside :func:`interruptible`: a
signal raises ``KeyboardInterrupt`` where the command is, and leaves as :class:`Interrupted`.
During a ``fit`` that is not safe: an exception raised at an arbitrary bytecode can land between
a lock's acquire and its ``with`` block (in TensorBoard's event writer, say), and the shutdown
then waits on that lock forever (a signalled fit hung once so in the test suite under load). So while a fit
runs, :func:`defer` makes the first signal only a request: the ``StopOnSignal`` callback
stops the Trainer at its next batch end (and Lightning stops on SIGTERM by itself), the fit
ends through its normal path, and :class:`Interrupted` is raised after it. A second signal
still interrupts at once. No torch, no Lightning. Used as::

    with interruptible():
        run_the_command()          # Interrupted(signum) if SIGINT or SIGTERM came
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_state: dict[str, int | bool | None] = {"signum": None, "defer": False}


class Interrupted(Exception):
    """A command stopped by SIGINT or SIGTERM: exit 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def requested() -> int | None:
    """The signal that asked this command to stop, if one did."""
    return _state["signum"]  # type: ignore[return-value]


def _handler(signum: int, frame: object) -> None:
    first = _state["signum"] is None
    _state["signum"] = signum
    if _state["defer"] and first:
        return  # a fit stops at its next batch end (StopOnSignal), not in the middle of a write
    raise KeyboardInterrupt


def defer(on: bool) -> None:
    """While on, the first signal is only recorded (see the module docstring); a fit turns it
    on when it starts and off when it ends."""
    _state["defer"] = on


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM end the block with :class:`Interrupted` (Lightning's own ending of an
    interrupted fit, ``exit(1)``, is not the truth), restoring the previous handlers after."""
    if threading.current_thread() is not threading.main_thread():  # in-process callers' threads
        yield
        return
    _state.update(signum=None, defer=False)
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        if _state["signum"] is not None:
            raise Interrupted(_state["signum"]) from None  # type: ignore[arg-type]
        raise
    else:
        if _state["signum"] is not None:  # a deferred signal: the command ended on its own
            raise Interrupted(_state["signum"])  # type: ignore[arg-type]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state.update(signum=None, defer=False)
