"""Many ``MyNN`` members in one fit (seeds x settings, one ``Trainer``), and the lab's model factory. Each optimizer
setting is a :class:`MyNNStack` of every hidden size and seed (batched matrix products) and its own SGD parameter group;
the loss sums the members' MSE, so member ``(h, lr, s)`` trains as ``fit --seed_everything s --model.hidden_size h
--model.lr lr`` would. A member whose loss goes non-finite is marked diverged and zeroed; the others train on::

    regression-lab fit --model.num_seeds 100 --model.hidden_size [4,8] --seed_everything 7
"""

# No `from __future__ import annotations`: LightningCLI reads regression_model's return annotation as a class.
import itertools
import os
from collections.abc import Collection
from typing import Any

import lightning as L
import torch

from regression_lab.errors import FLOAT32_MAX, UsageError, check_float, check_int
from regression_lab.models import MAX_MEMBERS, MAX_SEED, MyNN, MyNNStack, check_seeds
from regression_lab.module import RegressionModule, batch_parts


def check_memory(members: int, hidden_size: int, samples: int) -> None:
    """Refuse an ensemble that would need over half of this machine's memory: weights, gradients, momentum and
    initial weights (4 x (3h + 1) floats a member) and the activations kept for the backward pass (~4 x samples x h)."""
    if members > MAX_MEMBERS:
        raise UsageError(f"the ensemble has {members:,} members, more than the {MAX_MEMBERS:,} allowed")
    need = 4 * members * (4 * (3 * hidden_size + 1) + 4 * samples * hidden_size + 2 * samples)
    budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    if need > budget:
        raise UsageError(
            f"the ensemble of {members:,} members on {samples:,} samples at once needs about "
            f"{need / 2**30:.1f} GiB, more than half of this machine's memory: use fewer seeds or fewer samples"
        )


class EnsembleRegressionModule(L.LightningModule):
    """Seeds x settings of ``MyNN`` trained together; ``forward`` gives every member's prediction."""

    def __init__(
        self,
        hidden_size: list[int],
        lr: list[float],
        momentum: list[float],
        weight_decay: list[float],
        probe_x: float,
        num_seeds: int,
        first_seed: int,
        seeds: list[int] | None = None,
    ) -> None:
        """One stack of members per optimizer setting (built by :func:`regression_model`, which checks the values).

        Args:
            hidden_size: hidden sizes, each trained with every seed and optimizer setting.
            lr: SGD learning rates.
            momentum: SGD momenta.
            weight_decay: SGD L2 penalties.
            probe_x: the input whose prediction (mean and spread over the seeds) is reported.
            num_seeds: members per setting, seeded ``first_seed``, ``first_seed + 1``, ...
            first_seed: the first member's seed (saved resolved, so a resumed run has the same).
            seeds: explicit seeds instead (each member initialised as ``seed_everything(seed)`` would).
        """
        super().__init__()
        self.save_hyperparameters()
        self.seeds = list(seeds) if seeds is not None else list(range(first_seed, first_seed + num_seeds))
        groups = itertools.product(lr, momentum, weight_decay)  # one SGD parameter group per stack
        self._groups = [dict(zip(("lr", "momentum", "weight_decay"), g, strict=True)) for g in groups]
        #: One dict per setting, in the members' order; each setting's members are its seeds.
        self.settings = [{"hidden_size": h, **g} for g in self._groups for h in hidden_size]
        # The hidden sizes share a stack, padded to the largest, so one batched product evaluates them.
        sizes, stack_seeds = [h for h in hidden_size for _ in self.seeds], self.seeds * len(hidden_size)
        self.stacks = torch.nn.ModuleList(MyNNStack(sizes, stack_seeds) for _ in self._groups)

    def setting_sizes(self) -> list[int]:
        """Members per setting, in the order of :attr:`settings` (to split per-member tensors)."""
        return [len(self.seeds)] * len(self.settings)

    def member_index(self) -> list[dict[str, Any]]:
        """One dict per member, in the order of :meth:`forward`: its setting and its seed."""
        return [{**s, "seed": seed} for s in self.settings for seed in self.seeds]

    def member(self, i: int) -> MyNN:
        """Member ``i`` (in the order of :meth:`member_index`) as a lone ``MyNN``."""
        per_stack = len(self.stacks[0])
        return self.stacks[i // per_stack].member(i % per_stack)

    def monitored(self) -> list[str]:
        """The metrics a callback can monitor: the members' mean losses."""
        return ["train/loss", "val/loss"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's prediction, settings one after another: x (N, 1) gives (M, N, 1)."""
        return torch.cat([stack(x) for stack in self.stacks])

    predict_members = forward

    def diverged(self) -> torch.Tensor:
        """Which members diverged, shape (M,)."""
        return torch.cat([stack.diverged for stack in self.stacks])

    def active_units(self, x: torch.Tensor) -> torch.Tensor:
        """Per member, the hidden units on for at least one input of ``x``, shape (M,)."""
        return torch.cat([stack.active_units(x) for stack in self.stacks])

    def _losses(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's MSE (M,), weighted by the batch's share (see :class:`~regression_lab.data.TensorBatches`),
        and the mean over the healthy ones (inf if none is: never a flattering 0)."""
        x, y, share = batch_parts(batch)
        pred = self(x)
        losses = ((pred - y) ** 2).mean(dim=(1, 2)) * share if len(x) else pred.sum(dim=(1, 2))
        healthy = torch.isfinite(losses) & ~self.diverged()
        mean = torch.where(healthy, losses, 0.0).sum() / healthy.sum().clamp(min=1)
        return losses, torch.where(healthy.any(), mean, torch.inf)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> dict[str, torch.Tensor]:
        losses, mean = self._losses(batch)
        # A member whose loss is not finite is out: marked here (no host sync), zeroed in optimizer_step.
        bad = ~torch.isfinite(losses)
        for stack, flags in zip(self.stacks, bad.split([len(s) for s in self.stacks]), strict=True):
            stack.diverged |= flags
        # Summed in float64: thousands of large finite losses cannot overflow to inf and stop the fit.
        loss = torch.where(self.diverged(), 0.0, losses).double().sum()
        self.log("train/loss", mean, prog_bar=True, batch_size=len(batch[0]), sync_dist=self.trainer.world_size > 1)
        return {"loss": loss, "member_losses": losses.detach()}  # their percentiles: metrics.FinalMetrics

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Right after the step, before any callback or checkpoint sees the weights: overflowed members are zeroed.
        for stack in self.stacks:
            stack.retire()

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.log(f"{'test' if self.trainer.testing else 'val'}/loss", self._losses(batch)[1], batch_size=len(batch[0]))

    test_step = validation_step

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [{"params": stack.parameters(), **g} for stack, g in zip(self.stacks, self._groups, strict=True)]
        return torch.optim.SGD(groups, lr=self._groups[0]["lr"])

    def check_memory(self, datamodule: Any) -> None:
        """Refuse data too large for this ensemble's activations: the final metrics see whole splits at once."""
        samples = max(split[0] for split in datamodule.splits.values())
        check_memory(sum(len(s) for s in self.stacks), max(self.hparams.hidden_size), samples)

    def setup(self, stage: str) -> None:
        if self.trainer.datamodule is not None:
            self.check_memory(self.trainer.datamodule)


#: Why ``seeds`` beside ``num_seeds`` or ``first_seed`` is refused.
SEEDS_NAME_EVERY = "model.seeds names every seed: give it without model.num_seeds or model.first_seed"


def refuse_counts_beside_seeds(given: Collection[str], seeds: object) -> None:
    """Refuse ``num_seeds`` or ``first_seed`` among ``given`` (names) beside ``seeds``, even at their defaults."""
    if seeds is not None and {"num_seeds", "first_seed"} & set(given):
        raise UsageError(SEEDS_NAME_EVERY)


def _values(name: str, value: Any, check: Any, *limits: Any, **kwargs: Any) -> list:
    """A setting's values as a list, each passed through ``check(f"model.{name}", v, *limits, **kwargs)``."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise UsageError(f"model.{name} is empty: give at least one value")
    if len(set(values)) < len(values):
        raise UsageError(f"model.{name} repeats a value: {values}")
    return [check(f"model.{name}", v, *limits, **kwargs) for v in values]


def regression_model(
    hidden_size: int | list[int] = 5,
    lr: float | list[float] = 0.01,
    momentum: float | list[float] = 0.0,
    weight_decay: float | list[float] = 0.0,
    probe_x: float = 10.0,
    num_seeds: int = 1,
    first_seed: int | None = None,
    seeds: list[int] | None = None,
) -> L.LightningModule:
    """The lab's model for ``regression-lab fit``: one ``MyNN`` (a :class:`RegressionModule`, seeded by
    ``seed_everything``), or with more seeds or lists of settings an :class:`EnsembleRegressionModule` of them all.

    Args:
        hidden_size: ReLU units of MyNN's hidden layer (the lab's best: 5); a list for an ensemble.
        lr: SGD learning rate (the lab's 0.01); a list for an ensemble.
        momentum: SGD momentum (0 as in the lab); a list for an ensemble.
        weight_decay: SGD L2 penalty (0 as in the lab); a list for an ensemble.
        probe_x: the input whose prediction is reported after training (the lab asks for 10).
        num_seeds: members per setting; above 1 trains an ensemble seeded ``seed_everything``,
            ``seed_everything + 1``, ... (at most 1,000,000 members in all).
        first_seed: an ensemble's first seed (default: ``seed_everything``).
        seeds: an ensemble's explicit seeds.
    """
    settings = {
        "hidden_size": _values("hidden_size", hidden_size, check_int, 1),
        "lr": _values("lr", lr, check_float, 0.0, strict=True),
        "momentum": _values("momentum", momentum, check_float, 0.0),
        "weight_decay": _values("weight_decay", weight_decay, check_float, 0.0),
    }
    probe_x = check_float("model.probe_x", probe_x, -FLOAT32_MAX, high=FLOAT32_MAX)
    lists = any(isinstance(v, (list, tuple)) for v in (hidden_size, lr, momentum, weight_decay))
    if not lists and seeds is None and num_seeds == 1 and first_seed is None:
        return RegressionModule(**{k: v[0] for k, v in settings.items()}, probe_x=probe_x)
    if seeds is None:
        check_int("model.num_seeds", num_seeds, 1, MAX_MEMBERS)
        first_seed = torch.initial_seed() if first_seed is None else first_seed  # None: the seed seed_everything set
        check_int("model.first_seed", first_seed, 0, MAX_SEED - num_seeds + 1)
    elif first_seed is not None or num_seeds not in (1, len(check_seeds(seeds, "model.seeds"))):  # which counts?
        raise UsageError(SEEDS_NAME_EVERY)
    else:
        num_seeds, first_seed = len(seeds), 0
    members = num_seeds * len(list(itertools.product(*settings.values())))
    check_memory(members, max(settings["hidden_size"]), 1)
    kwargs = dict(probe_x=probe_x, num_seeds=num_seeds, first_seed=first_seed, seeds=seeds)
    return EnsembleRegressionModule(**settings, **kwargs)
