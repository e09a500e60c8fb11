"""regression-lab: the first-neural-network lab as a PyTorch Lightning project.

Importing the package is light (no torch, no Lightning); import the submodules you need::

    from regression_lab.models import MyNN
    from regression_lab.module import RegressionModule     # imports Lightning
"""

__version__ = "0.1.0"
