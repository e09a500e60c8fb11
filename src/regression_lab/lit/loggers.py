"""Lightning's TensorBoardLogger, with the model graph traced quietly.

TensorBoard's graph view needs a traced graph, and ``SummaryWriter.add_graph`` traces with
``torch.jit.trace``, which current torch marks deprecated on every call. The graph is still
worth having (the Graphs tab), so this logger keeps it and silences that one warning, only
while the graph is traced. Models without ``example_input_array`` (the ensembles) are skipped
quietly. ``regression-lab fit`` uses it by default::

    regression-lab fit --trainer.logger.init_args.log_graph false     # no graph at all
    L.Trainer(logger=TensorBoardLogger(".", name="lightning_logs", log_graph=True))
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import loggers

from regression_lab.core.graphs import quiet_tracing


class TensorBoardLogger(loggers.TensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` whose graph tracing does not warn."""

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        if input_array is None and getattr(model, "example_input_array", None) is None:
            # A model that offers no example input has no graph to draw (an ensemble: torch.jit
            # cannot trace vmap's functional_call); Lightning would warn about it on every fit.
            return
        with quiet_tracing():
            super().log_graph(model, input_array)
