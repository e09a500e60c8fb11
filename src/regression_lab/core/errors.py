"""Error types that the command line turns into one clear line and an exit status.

Nothing here imports torch or Lightning. Used by every module::

    from regression_lab.core.errors import UsageError
    raise UsageError("hidden_size must be >= 1")   # the CLI prints it and exits 2
"""

from __future__ import annotations

import math

#: The largest finite float32: an input beyond it overflows the model's arithmetic to inf.
FLOAT32_MAX = 3.4028234663852886e38


#: How much of a bad value an error message quotes: a megabyte-long line must not come back
#: as a megabyte-long error.
QUOTE_CHARS = 40


def quote(text: str) -> str:
    """``text`` as an error message quotes it: stripped, at most :data:`QUOTE_CHARS` characters."""
    # Cut after repr: control characters and astral symbols grow fourfold or more in it.
    shown = repr(text.strip())
    return shown if len(shown) <= QUOTE_CHARS + 2 else shown[: QUOTE_CHARS + 1] + "..." + shown[0]


def brief(value: object) -> str:
    """``repr(value)``, cut to :data:`QUOTE_CHARS` characters (a 400-digit number, a long list)."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "..."


class UsageError(ValueError):
    """Something the user typed or gave is wrong: the CLI prints the message and exits 2."""


class TrainingFailed(RuntimeError):
    """A run failed for a reason other than bad input (e.g. diverged): the CLI exits 1."""


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise :class:`UsageError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_float(name: str, value: object, *, positive: bool = False, non_negative: bool = False) -> float:
    """Return ``value`` as a finite float (optionally > 0 or >= 0), else raise :class:`UsageError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise UsageError(f"{name} must be > 0, got {value!r}")
    if non_negative and not value >= 0:
        raise UsageError(f"{name} must be >= 0, got {value!r}")
    return float(value)
