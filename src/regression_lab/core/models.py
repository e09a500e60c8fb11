"""Plain PyTorch models of the lab: ``MyNN`` (the regressor) and ``TinyModel`` (the classifier demo).

No Lightning here, so light commands (``predict``, ``demo``) can build these models with
nothing but torch imported. Try it::

    python -c "from regression_lab.core.models import MyNN; print(MyNN(5))"
"""

from __future__ import annotations

import torch
from torch import nn

from regression_lab.core.errors import UsageError, check_int

#: The widest hidden layer accepted (from options, configs and checkpoints alike): far beyond
#: what the lab needs, and small enough that a crafted checkpoint cannot make a model of GBs.
MAX_HIDDEN_SIZE = 10_000


class MyNN(nn.Module):
    """The lab's regressor: Linear(1, h) -> ReLU -> Linear(h, 1), no output activation."""

    def __init__(self, hidden_size: int = 5) -> None:
        """Build the network.

        Args:
            hidden_size: number of ReLU units in the single hidden layer (at least 1).
        """
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size, 1)
        if hidden_size > MAX_HIDDEN_SIZE:
            raise UsageError(f"hidden_size must be <= {MAX_HIDDEN_SIZE:,}, got {hidden_size:,}")
        self.linear1 = nn.Linear(1, hidden_size)
        self.activation = nn.ReLU()
        # Regression outputs any real number, so the output layer has no activation.
        self.linear2 = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs of shape (N, 1) to predictions of shape (N, 1)."""
        return self.linear2(self.activation(self.linear1(x)))


class TinyModel(nn.Module):
    """The lab's classifier demo: Linear(100, 200) -> ReLU -> Linear(200, 10) -> Softmax."""

    def __init__(self, in_features: int = 100, hidden_size: int = 200, num_classes: int = 10) -> None:
        """Build the network.

        Args:
            in_features: size of each input sample.
            hidden_size: width of the hidden layer.
            num_classes: number of output probabilities.
        """
        super().__init__()
        self.linear1 = nn.Linear(in_features, hidden_size)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(hidden_size, num_classes)
        # The lab's nn.Softmax() had no dim; the class scores are the last dimension.
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs of shape (..., in_features) to class probabilities of shape (..., num_classes)."""
        return self.softmax(self.linear2(self.activation(self.linear1(x))))
