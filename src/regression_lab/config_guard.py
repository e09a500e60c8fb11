"""Bounds on ``--config`` files: no YAML alias bombs, no endless or giant files.

jsonargparse reads a config file whole and expands YAML aliases into full copies, so a
"billion laughs" file of 1 kB, or ``--config /dev/zero``, grows until the memory runs out.
The dispatcher (:mod:`regression_lab.cli`) calls :func:`install` once, for every command:
jsonargparse's YAML loader is wrapped (through its public ``set_loader``) to refuse a document
that expands past :data:`MAX_CONFIG_VALUES` values or refers to itself, and
:func:`bounded_config_args` refuses a ``--config`` file over :data:`MAX_CONFIG_BYTES`. Try it::

    regression-lab fit --config bomb.yaml     # error: --config: the YAML expands to more than ...
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from typing import Any

from regression_lab.core.errors import UsageError

#: A config's values once its aliases are expanded. The largest real config is a list of
#: seeds: ``core.ensemble.MAX_MEMBERS`` (1,000,000) of them, plus the settings around it.
MAX_CONFIG_VALUES = 2_000_000
#: A config file's size: 1,000,000 seeds written out take about 8 MB.
MAX_CONFIG_BYTES = 16 * 2**20


def expanded_size(value: Any, limit: int = MAX_CONFIG_VALUES) -> int:
    """How many values ``value`` holds once shared sub-documents (YAML aliases) are copied out.

    Raises :class:`UsageError` past ``limit`` or on a document that contains itself. Shared
    parts are counted once per use but walked once, so a bomb is measured without expanding it.
    """
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(v: Any) -> int:
        if not isinstance(v, (list, dict)):
            return 1
        key = id(v)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise UsageError("--config: the YAML refers to itself (a recursive alias)")
        open_ids.add(key)
        children = v.values() if isinstance(v, dict) else v
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                raise UsageError(
                    f"--config: the YAML expands to more than {limit:,} values (aliases copied out); "
                    "write the settings out plainly"
                )
        open_ids.discard(key)
        sizes[key] = total
        return total

    return size(value)


def bounded(loader: Callable[[str], Any]) -> Callable[[str], Any]:
    """``loader``, refusing documents whose expansion is too large (see :func:`expanded_size`)."""

    def load(stream: str) -> Any:
        value = loader(stream)
        expanded_size(value)
        return value

    load.bounded = True  # type: ignore[attr-defined]
    return load


def install() -> None:
    """Wrap jsonargparse's YAML loader once (idempotent)."""
    import yaml
    from jsonargparse import get_loader, set_loader

    current = get_loader("yaml")
    if not getattr(current, "bounded", False):
        set_loader("yaml", bounded(current), exceptions=(yaml.YAMLError,))


def _config_values(argv: Sequence[str]) -> list[tuple[int, str]]:
    """(index in argv, value) of each ``--config X`` or ``--config=X``."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            found.append((i + 1, argv[i + 1]))
        elif arg.startswith("--config="):
            found.append((i, arg))
    return found


def bounded_config_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``--config`` file checked against :data:`MAX_CONFIG_BYTES`.

    A pipe, ``/dev/stdin`` or ``<(...)`` is read here, at most the limit, and passed on as the
    YAML text itself (jsonargparse takes either), so an endless one ends at the limit.
    """
    out = list(argv)
    for i, value in _config_values(argv):
        path = value.split("=", 1)[1] if value.startswith("--config=") else value
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            continue  # not a file: jsonargparse says what it is (or takes it as YAML text)
        if stat.S_ISREG(st.st_mode):
            if st.st_size > MAX_CONFIG_BYTES:
                raise UsageError(f"--config {path} is {st.st_size:,} bytes: at most {MAX_CONFIG_BYTES:,}")
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as err:
            raise UsageError(f"cannot read --config {path}: {err.strerror or err}") from None
        if len(data) > MAX_CONFIG_BYTES:
            raise UsageError(f"--config {path} goes on past {MAX_CONFIG_BYTES:,} bytes: not a config file")
        text = data.decode("utf-8", errors="replace")
        out[i] = f"--config={text}" if value.startswith("--config=") else text
    return out
