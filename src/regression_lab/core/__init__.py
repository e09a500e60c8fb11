"""The torch-only layer: models, samples, checkpoint reading, landscapes, safe writes, errors.

Nothing here imports Lightning, ``regression_lab.lit`` or ``regression_lab.commands``, so the
light commands start as fast as ``import torch`` allows::

    python -c "from regression_lab.core.models import MyNN; print(MyNN(5))"
"""
