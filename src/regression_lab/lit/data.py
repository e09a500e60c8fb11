"""The LightningDataModule that generates ``y = slope * x + intercept`` samples.

Defaults reproduce the lab: training x = 1, 2, 3, 4, 5 (float32, shape (N, 1)), y = 3x + 2,
no noise, one full batch per epoch; validation on unseen x = 6..10, where the lab asks its
prediction question; a test set over x = 0..10 in steps of 0.5. Try it::

    python -c "from regression_lab.lit.data import RegressionDataModule as D; d = D(); d.setup(); print(d.train_x.T)"

Batches are served by tensor indexing (:class:`~regression_lab.core.samples.TensorBatches`), not a
per-sample ``Dataset.__getitem__`` plus collate, which is about 50x slower at a million samples.
Under a distributed strategy each rank keeps only its own shard, and the data sits on the
training device once instead of being copied there every step.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from regression_lab.core.errors import check_int
from regression_lab.core.samples import TensorBatches, check_data_settings, line_split


class RegressionDataModule(L.LightningDataModule):
    """Samples of the line ``y = slope * x + intercept`` for training, validation and test."""

    def __init__(
        self,
        slope: float = 3.0,
        intercept: float = 2.0,
        num_samples: int = 5,
        x_min: float = 1.0,
        x_max: float = 5.0,
        noise_std: float = 0.0,
        val_samples: int = 5,
        val_x_min: float = 6.0,
        val_x_max: float = 10.0,
        test_samples: int = 21,
        test_x_min: float = 0.0,
        test_x_max: float = 10.0,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        """Describe the data; nothing is generated until :meth:`setup`.

        Args:
            slope: slope of the true line (the lab's 3).
            intercept: intercept of the true line (the lab's 2).
            num_samples: number of training points, evenly spaced over [x_min, x_max].
            x_min: smallest training x.
            x_max: largest training x.
            noise_std: standard deviation of Gaussian noise added to the training targets only;
                validation and test targets stay exact, so they measure the line itself.
            val_samples: number of validation points over [val_x_min, val_x_max].
            val_x_min: smallest validation x (the lab's unseen 6).
            val_x_max: largest validation x (the lab's question, 10).
            test_samples: number of test points over [test_x_min, test_x_max].
            test_x_min: smallest test x.
            test_x_max: largest test x.
            batch_size: training samples per batch; ``None`` means one full batch (the lab).
            shuffle: reshuffle the training samples every epoch.
            seed: seed of the generator for the noise and the shuffle order.
        """
        super().__init__()
        check_data_settings(
            dict(
                slope=slope, intercept=intercept, noise_std=noise_std, seed=seed,
                num_samples=num_samples, x_min=x_min, x_max=x_max,
                val_samples=val_samples, val_x_min=val_x_min, val_x_max=val_x_max,
                test_samples=test_samples, test_x_min=test_x_min, test_x_max=test_x_max,
            )
        )  # fmt: skip
        if batch_size is not None:
            check_int("data.batch_size", batch_size, 1)
        self.save_hyperparameters()
        self.train_x = self.train_y = None
        self.val_x = self.val_y = self.test_x = self.test_y = None

    def line_at(self, x: float) -> float:
        """The true line's value at ``x`` (what a perfect model predicts)."""
        return self.hparams.slope * x + self.hparams.intercept

    def setup(self, stage: str | None = None) -> None:
        """Generate the samples, keep this rank's shard, and put it on the training device."""
        hp = self.hparams
        rank, world = 0, 1
        device = torch.device("cpu")
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            device = self.trainer.strategy.root_device
        self._generator = torch.Generator().manual_seed(hp.seed)

        def make(split: str) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = line_split(hp, split, rank, world)
            return x.to(device), y.to(device)

        if stage in (None, "fit"):
            self.train_x, self.train_y = make("train")
        if stage in (None, "fit", "validate"):
            self.val_x, self.val_y = make("val")
        if stage in (None, "test"):
            self.test_x, self.test_y = make("test")

    def state_dict(self) -> dict[str, Any]:
        """The shuffle generator's state, saved in checkpoints so a resumed run draws the same
        batch orders as an uninterrupted one (a ByteTensor: fine for ``weights_only`` loads)."""
        gen = getattr(self, "_generator", None)
        return {"shuffle_generator": gen.get_state()} if gen is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the shuffle generator (called after :meth:`setup` when resuming)."""
        if "shuffle_generator" in state_dict and getattr(self, "_generator", None) is not None:
            self._generator.set_state(state_dict["shuffle_generator"])

    def train_dataloader(self) -> TensorBatches:
        """Training batches; reshuffled each epoch when ``shuffle`` is on."""
        per_rank = self._per_rank_batch()
        return TensorBatches(self.train_x, self.train_y, per_rank, self.hparams.shuffle, self._generator)

    def val_dataloader(self) -> TensorBatches:
        """The validation set as one batch per rank (it is small)."""
        return TensorBatches(self.val_x, self.val_y)

    def test_dataloader(self) -> TensorBatches:
        """The test set as one batch per rank."""
        return TensorBatches(self.test_x, self.test_y)

    def _per_rank_batch(self) -> int | None:
        # batch_size is the global batch: each of the ranks takes its part, so a DDP run steps
        # through the data exactly as a single process with the same batch_size does.
        bs = self.hparams.batch_size
        if bs is None or self.trainer is None:
            return bs
        return max(1, bs // self.trainer.world_size)
