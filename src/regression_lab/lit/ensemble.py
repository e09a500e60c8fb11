"""The LightningModule that trains many ``MyNN`` members at once: seeds x settings, one ``Trainer``.

Each setting (a hidden size with its SGD learning rate, momentum and weight decay) is a
:class:`~regression_lab.core.ensemble.MyNNStack` of one member per seed, evaluated with
``torch.func.vmap``; every setting is its own SGD parameter group, so different learning rates
are exact. The loss is the sum of the members' MSE losses, so each member gets exactly its own
gradient: member ``(h, lr, s)`` trains as ``regression-lab fit --seed_everything s
--model.hidden_size h --model.lr lr`` would, on the same batches. A member whose loss goes
non-finite is marked diverged and zeroed; the others train on.

Through the CLI, ``--model.num_seeds N`` (or several hidden sizes or learning rates) picks this
class (see :func:`regression_model`)::

    regression-lab fit --model.num_seeds 1000            # seeds 0..999 of the lab's model
    regression-lab fit --model.num_seeds 100 --model.hidden_size [4,8] --seed_everything 7
"""

# No `from __future__ import annotations`: LightningCLI reads regression_model's return
# annotation as a class, and postponed annotations would make it a string.
import itertools
from typing import Any

import lightning as L
import torch

from regression_lab.core.ensemble import MAX_MEMBERS, MAX_SEED, MyNNStack, check_memory, check_seeds
from regression_lab.core.errors import UsageError, check_float, check_int
from regression_lab.core.models import MyNN
from regression_lab.lit.module import RegressionModule


def _as_list(name: str, value: Any) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise UsageError(f"{name} is empty: give at least one value")
    return values


class EnsembleRegressionModule(L.LightningModule):
    """Seeds x settings of ``MyNN`` trained together; ``forward`` gives every member's prediction."""

    def __init__(
        self,
        hidden_size: int | list[int] = 5,
        lr: float | list[float] = 0.01,
        momentum: float | list[float] = 0.0,
        weight_decay: float | list[float] = 0.0,
        probe_x: float = 10.0,
        num_seeds: int = 1,
        first_seed: int | None = None,
        seeds: list[int] | None = None,
    ) -> None:
        """Build one stack of members per setting.

        Args:
            hidden_size: ReLU units of MyNN's hidden layer; a list trains each size.
            lr: SGD learning rate; a list trains each.
            momentum: SGD momentum; a list trains each.
            weight_decay: SGD L2 penalty; a list trains each.
            probe_x: the input whose prediction (mean and spread over the seeds) is reported.
            num_seeds: members per setting, seeded ``first_seed``, ``first_seed + 1``, ...
            first_seed: the first member's seed; ``None`` takes the seed ``seed_everything`` set
                (``torch.initial_seed()``), so ``fit --seed_everything 7`` seeds 7, 8, ...
            seeds: explicit seeds instead of ``num_seeds`` and ``first_seed``.
        """
        super().__init__()
        hidden_sizes = [check_int("model.hidden_size", h, 1) for h in _as_list("model.hidden_size", hidden_size)]
        lrs = [check_float("model.lr", v, positive=True) for v in _as_list("model.lr", lr)]
        momenta = [check_float("model.momentum", v, non_negative=True) for v in _as_list("model.momentum", momentum)]
        decays = [
            check_float("model.weight_decay", v, non_negative=True)
            for v in _as_list("model.weight_decay", weight_decay)
        ]
        check_float("model.probe_x", probe_x)
        self.save_hyperparameters()
        if seeds is None:
            check_int("model.num_seeds", num_seeds, 1)
            if first_seed is None:
                first_seed = torch.initial_seed()
                if first_seed > MAX_SEED:
                    raise UsageError("no seed was set for the ensemble: pass --seed_everything or --model.first_seed")
            check_int("model.first_seed", first_seed, 0)
            if first_seed + num_seeds - 1 > MAX_SEED:
                raise UsageError(f"model.first_seed + model.num_seeds - 1 must be <= {MAX_SEED}")
            # Saved resolved, so a resumed or reloaded ensemble rebuilds the same members.
            self.hparams.first_seed = first_seed
            seeds = list(range(first_seed, first_seed + num_seeds))
        seeds = check_seeds(seeds, "model.seeds")
        groups = list(itertools.product(lrs, momenta, decays))
        if len(set(groups)) < len(groups) or len(set(hidden_sizes)) < len(hidden_sizes) or len(set(seeds)) < len(seeds):
            raise UsageError("the ensemble's settings and seeds must not repeat")
        check_memory(len(groups) * len(hidden_sizes) * len(seeds), max(hidden_sizes), 1, "the ensemble")
        keys = ("hidden_size", "lr", "momentum", "weight_decay")
        #: One dict per setting (hidden_size, lr, momentum, weight_decay), in the members' order;
        #: each setting's members are its seeds, one after another.
        self.settings = [dict(zip(keys, (h, *g), strict=True)) for g in groups for h in hidden_sizes]
        self.seeds = seeds
        # One stack per optimizer setting (lr, momentum, weight decay): its own SGD parameter
        # group. The hidden sizes share a stack, padded to the largest, so one vmap call
        # evaluates them all.
        self.stacks = torch.nn.ModuleList(
            MyNNStack([h for h in hidden_sizes for _ in seeds], seeds * len(hidden_sizes)) for _ in groups
        )
        self._groups = [dict(zip(("lr", "momentum", "weight_decay"), g, strict=True)) for g in groups]
        # No example_input_array: torch.jit cannot trace vmap, so there is no graph to log.

    def setting_sizes(self) -> list[int]:
        """Members per setting, in the order of :attr:`settings` (to split per-member tensors)."""
        return [len(self.seeds)] * len(self.settings)

    @property
    def num_members(self) -> int:
        """Members in all settings together."""
        return sum(len(s) for s in self.stacks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's prediction, settings one after another: x (N, 1) gives (M, N, 1)."""
        return torch.cat([stack(x) for stack in self.stacks])

    def diverged(self) -> torch.Tensor:
        """Which members diverged, shape (M,)."""
        return torch.cat([stack.diverged for stack in self.stacks])

    @staticmethod
    def member_losses(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's MSE: predictions (M, N, 1) against targets (N, 1) give (M,)."""
        return ((pred - y) ** 2).mean(dim=(1, 2))

    def _healthy_mean(self, losses: torch.Tensor) -> torch.Tensor:
        # The mean over the members still training; inf when none is (never a flattering 0).
        healthy = torch.isfinite(losses) & ~self.diverged()
        mean = torch.where(healthy, losses, 0.0).sum() / healthy.sum().clamp(min=1)
        return torch.where(healthy.any(), mean, torch.inf)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        losses = self.member_losses(self(x), y)
        # A member whose loss is not finite is out: marked here (no host sync), zeroed after
        # the step (optimizer_step); the sum, and so every other member's gradient, skips it.
        bad = ~torch.isfinite(losses)
        for stack, flags in zip(self.stacks, bad.split([len(s) for s in self.stacks]), strict=True):
            stack.diverged |= flags
        healthy = ~self.diverged()
        # Summed in float64: thousands of large but finite losses cannot overflow to inf and
        # stop the fit; the gradient each member gets back is still exactly its own (times 1).
        loss = torch.where(healthy, losses, 0.0).double().sum()
        self.log("train/loss", self._healthy_mean(losses), prog_bar=True, batch_size=len(x))
        return {"loss": loss, "member_losses": losses.detach()}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Right after the step, before any callback or checkpoint sees the weights: a member
        # whose step overflowed is retired (zeroed) before it can be saved or used.
        for stack in self.stacks:
            stack.retire()

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> None:
        x, y = batch
        self.log(f"{prefix}/loss", self._healthy_mean(self.member_losses(self(x), y)), batch_size=len(x))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Every member's predictions for a batch of x, or of (x, y) pairs: (M, N, 1)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # One parameter group per stack: torch's own SGD, each group with its own step size.
        groups = [{"params": stack.parameters(), **g} for stack, g in zip(self.stacks, self._groups, strict=True)]
        return torch.optim.SGD(groups, lr=self._groups[0]["lr"])

    def check_memory(self, datamodule: Any) -> None:
        """Refuse (:class:`UsageError`) data on which this ensemble's activations cannot fit.

        Every member sees whole splits at once when its final metrics are computed, so the
        largest split counts, whatever the batch size.
        """
        hp = getattr(datamodule, "hparams", None) or {}
        samples = max([int(hp.get(k) or 1) for k in ("num_samples", "val_samples", "test_samples", "batch_size")])
        check_memory(self.num_members, max(s["hidden_size"] for s in self.settings), samples, "the ensemble")

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.datamodule is not None:
            self.check_memory(self.trainer.datamodule)

    @torch.no_grad()
    def member_metrics(self, dm: Any, strategy: Any | None = None) -> dict[str, torch.Tensor]:
        """Per member, shape (M,): ``train_loss``, ``val_loss``, ``prediction`` at ``probe_x``,
        ``active_units`` on the training inputs, ``diverged``; the losses are summed over the
        ranks' shards when a ``strategy`` is given."""
        probe = torch.tensor([[float(self.hparams.probe_x)]], device=self.device)
        out = {"prediction": self(probe)[:, 0, 0]}
        for split in ("train", "val"):
            x, y = getattr(dm, f"{split}_x", None), getattr(dm, f"{split}_y", None)
            if x is None or y is None:
                continue
            sse = ((self(x) - y) ** 2).sum(dim=(1, 2))
            count = torch.tensor(float(len(x)), device=x.device)
            if strategy is not None:
                sse, count = strategy.reduce(sse, reduce_op="sum"), strategy.reduce(count, reduce_op="sum")
            out[f"{split}_loss"] = sse / count
        if getattr(dm, "train_x", None) is not None:
            out["active_units"] = torch.cat([s.active_units(dm.train_x) for s in self.stacks])
        diverged = self.diverged()
        for key in ("prediction", "train_loss", "val_loss"):
            if key in out:
                out[key] = torch.where(diverged, torch.nan, out[key])
        out["diverged"] = diverged
        return out

    def member_index(self) -> list[dict[str, Any]]:
        """One dict per member, in the order of :meth:`forward`: its setting and its seed."""
        return [{**s, "seed": seed} for s in self.settings for seed in self.seeds]

    def member(self, i: int) -> MyNN:
        """Member ``i`` (in the order of :meth:`member_index`) as a lone ``MyNN``."""
        per_stack = len(self.stacks[0])
        return self.stacks[i // per_stack].member(i % per_stack)


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
    """The lab's model for ``regression-lab fit``: one ``MyNN``, or an ensemble of them.

    One setting and ``num_seeds`` 1 (the defaults) give today's :class:`RegressionModule`
    (seeded by ``seed_everything``); more seeds, explicit ``seeds`` or lists of settings give an
    :class:`EnsembleRegressionModule`.

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
    lists = any(isinstance(v, (list, tuple)) for v in (hidden_size, lr, momentum, weight_decay))
    if not lists and seeds is None and num_seeds == 1 and first_seed is None:
        return RegressionModule(hidden_size, lr, momentum, weight_decay, probe_x)
    if isinstance(num_seeds, int) and not isinstance(num_seeds, bool) and num_seeds > MAX_MEMBERS:
        raise UsageError(f"model.num_seeds must be <= {MAX_MEMBERS:,}, got {num_seeds:,}")
    return EnsembleRegressionModule(hidden_size, lr, momentum, weight_decay, probe_x, num_seeds, first_seed, seeds)
