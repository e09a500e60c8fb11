"""The library notices a run hides, each where it is raised (no global filter: every other warning shows). Use it::

from regression_lab.notices import quiet_notices
with quiet_notices():
    trainer.fit(model, datamodule=dm)
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

#: Notices that say nothing about this project's settings, hidden where a fit raises them: one-batch epochs are fewer
#: than log_every_n_steps (which counts steps across epochs); Lightning 2.6 calls a pytree API torch deprecates; the
#: graph is traced with the deprecated torch.jit.trace, and an ensemble has none (no example input of its own); a
#: resumed run's checkpoint directory is not empty; an evaluation logs elsewhere than its checkpoint's run; the
#: console script passes its arguments on; Optuna's heartbeats, retries and metric names are experimental.
NOTICES = (
    r".*smaller than the logging interval.*", r".*isinstance\(treespec, LeafSpec\).*",
    r"`torch\.jit\.trace\w*` is deprecated", r"Could not log computational graph",
    r"Checkpoint directory .* exists and is not empty", r"The dirpath has changed from",
    r"LightningCLI's args parameter is intended to run from within Python",
    r".* is (an )?experimental (feature|\(supported from)",
)  # fmt: skip
#: Lightning's info lines that the command's own output says better: the seed (it is in the run's config.yaml, and
#: would come before a bad setting's one error line), and a SIGTERM (the command's "interrupted by" line says it).
QUIET_LOGGERS = ("lightning.fabric.utilities.seed", "lightning.pytorch.trainer.connectors.signal_connector")


@contextlib.contextmanager
def quiet_notices() -> Iterator[None]:
    """Hide :data:`NOTICES` and :data:`QUIET_LOGGERS`' info lines (every other warning shows) within the block."""
    levels = {logger: logger.level for logger in map(logging.getLogger, QUIET_LOGGERS)}
    with warnings.catch_warnings():
        for pattern in NOTICES:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in levels:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in levels.items():
                logger.setLevel(level)
