"""regression-lab: the first-neural-network lab as a PyTorch Lightning project. Importing the package is light (no
torch, no Lightning); each module imports what it needs::

    from regression_lab.models import MyNN                 # torch only
"""

__version__ = "0.1.0"
