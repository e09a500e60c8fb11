"""regression-lab: the first-neural-network lab as a PyTorch Lightning project.

Three layers, each a subpackage, with one hard rule between them (checked by import-linter,
see ``[tool.importlinter]`` in pyproject.toml)::

    regression_lab.core      torch only: models, samples, checkpoints, landscapes, safe writes, errors
    regression_lab.lit       Lightning: the LightningModule, DataModule, callbacks, training CLI
    regression_lab.commands  one module per command; predict, demo and landscape import core only

Importing the package itself is light (no torch, no Lightning)::

    from regression_lab.core.models import MyNN
    from regression_lab.lit.module import RegressionModule     # imports Lightning
"""

__version__ = "0.1.0"
