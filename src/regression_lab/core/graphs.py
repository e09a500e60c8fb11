"""Model graphs for TensorBoard's Graphs tab, traced without the tracer's deprecation notice.

``SummaryWriter.add_graph`` traces the model with ``torch.jit.trace``, which current torch marks
deprecated on every call. The graph is still worth having, so the one place that traces wraps
the call in :func:`quiet_tracing`, and the warning is silenced there alone, not globally::

    with quiet_tracing():
        writer.add_graph(model, example_input)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

#: torch's words for it: "`torch.jit.trace` is deprecated" and "`torch.jit.trace_method` is deprecated".
TRACE_DEPRECATION = r"`torch\.jit\.trace\w*` is deprecated"


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence torch.jit.trace's deprecation warning inside the block only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TRACE_DEPRECATION)
        yield
