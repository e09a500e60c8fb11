"""Predictions from a checkpoint, for ``predict``, ``serve`` and ``export``: torch only.

A single-model checkpoint predicts with its ``MyNN``; an ensemble checkpoint (``fit
--model.num_seeds N``) with the mean of its healthy members, and their standard deviation as
the spread. Try it::

    python -c "from regression_lab.core.predictor import Predictor; \\
        print(Predictor.load('lightning_logs/version_0/checkpoints/last.ckpt')([10.0]))"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from regression_lab.core.checkpoints import load_model
from regression_lab.core.ensemble import MyNNStack
from regression_lab.core.errors import UsageError
from regression_lab.core.models import MyNN


class EnsembleMean(nn.Module):
    """An ensemble's healthy members as one model: x (N, 1) gives their mean and std, (N, 2)."""

    def __init__(self, stack: MyNNStack) -> None:
        """Args: stack: the members (one setting) of an ensemble checkpoint."""
        super().__init__()
        healthy = ~stack.diverged
        if not bool(healthy.any()):
            raise UsageError("every member of the ensemble diverged: nothing to predict with")
        self.stack = stack
        self.register_buffer("healthy", healthy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preds = self.stack(x)[self.healthy, :, 0]  # (healthy members, N)
        std = preds.std(dim=0) if preds.shape[0] > 1 else torch.zeros_like(preds[0])
        return torch.stack([preds.mean(dim=0), std], dim=1)


class Predictor:
    """A checkpoint's model, ready to predict on the CPU (or ``device``), no gradients."""

    def __init__(self, model: nn.Module, ensemble: bool, source: str) -> None:
        """Args: model: a MyNN or an :class:`EnsembleMean`. ensemble: which. source: its file."""
        self.model, self.ensemble, self.source = model.eval(), ensemble, source

    @classmethod
    def load(cls, path: Path | str, device: str | torch.device = "cpu") -> Predictor:
        """The model of a checkpoint, refused with :class:`UsageError` if it cannot predict."""
        model, _ = load_model(path)
        if isinstance(model, MyNN):
            return cls(model.to(device), False, str(path))
        settings = sum(len(set(stack.hidden_sizes.tolist())) for stack in model)
        if len(model) > 1 or settings > 1:
            raise UsageError(
                f"{path} holds an ensemble of {max(settings, len(model))} settings (a sweep's); predictions need "
                "one setting (regression-lab fit --model.num_seeds N)"
            )
        return cls(EnsembleMean(model[0]).to(device), True, str(path))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predictions for x of shape (N, 1): (N,) values and, for an ensemble, their (N,) spread."""
        out = self.model(x)
        if self.ensemble:
            return out[:, 0], out[:, 1]
        return out[:, 0], None

    def __call__(self, xs: Sequence[float]) -> tuple[list[float], list[float] | None]:
        """Predictions (and spreads) for a list of x, as floats."""
        device = next(self.model.buffers(), next(self.model.parameters())).device
        pred, std = self.predict(torch.tensor(list(xs), dtype=torch.float32, device=device).unsqueeze(1))
        return pred.tolist(), (std.tolist() if std is not None else None)
