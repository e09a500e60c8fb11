"""The LightningDataModule that generates ``y = slope * x + intercept`` samples.

Defaults reproduce the lab: training x = 1, 2, 3, 4, 5 (float32, shape (N, 1)), y = 3x + 2,
no noise, one full batch per epoch; validation on unseen x = 6..10, where the lab asks its
prediction question; a test set over x = 0..10 in steps of 0.5. Try it::

    python -c "from regression_lab.data import RegressionDataModule as D; d = D(); d.setup('fit'); print(d.train_x.T)"

Batches are served by tensor indexing (:class:`TensorBatches`), not a per-sample
``Dataset.__getitem__`` plus collate, which is about 50x slower at a million samples. Under a
distributed strategy each rank keeps only its own shard, and the data sits on the training
device once instead of being copied there every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import torch

from regression_lab.errors import UsageError, check_float, check_int


class TensorBatches:
    """An iterable of ``(x, y)`` batches cut from two tensors by indexing.

    Lightning accepts any iterable with a ``len`` as a dataloader. Shuffling draws a new
    permutation each epoch from ``generator``, so a seeded generator gives a repeatable order.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int | None = None,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        """Wrap the tensors.

        Args:
            x: inputs, shape (N, 1).
            y: targets, shape (N, 1).
            batch_size: samples per batch; ``None`` serves the whole tensor as one batch.
            shuffle: draw a new order every epoch (slices in order otherwise).
            generator: CPU generator for the shuffle order.
        """
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y differ in length: {x.shape[0]} != {y.shape[0]}")
        self.x, self.y = x, y
        self.batch_size = batch_size or max(1, x.shape[0])
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = self.x.shape[0], self.batch_size
        if self.shuffle and n > 1:
            # randperm on the CPU generator keeps the order independent of the device.
            order = torch.randperm(n, generator=self.generator).to(self.x.device)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                yield self.x[idx], self.y[idx]
        else:
            # Contiguous slices are views: no copy at all.
            for start in range(0, n, bs):
                yield self.x[start : start + bs], self.y[start : start + bs]


def line_samples(
    num: int, x_min: float, x_max: float, slope: float, intercept: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evenly spaced x in [x_min, x_max] and the exact targets, both float32 of shape (num, 1)."""
    x = torch.linspace(x_min, x_max, num, dtype=torch.float32).unsqueeze(1)
    return x, slope * x + intercept


def shard_indices(n: int, rank: int, world_size: int) -> torch.Tensor:
    """Indices of rank ``rank``'s shard: every ``world_size``-th sample, padded by wrapping
    around so every rank gets the same number of samples (as ``DistributedSampler`` does), which
    keeps the ranks' batch counts equal and DDP in step."""
    per_rank = math.ceil(n / world_size)
    return torch.arange(rank, per_rank * world_size, world_size) % n


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
        check_float("data.slope", slope)
        check_float("data.intercept", intercept)
        check_float("data.noise_std", noise_std, non_negative=True)
        for split, num, lo, hi in (
            ("", num_samples, x_min, x_max),
            ("val_", val_samples, val_x_min, val_x_max),
            ("test_", test_samples, test_x_min, test_x_max),
        ):
            name = f"data.{split}samples" if split else "data.num_samples"
            check_int(name, num, 1)
            check_float(f"data.{split}x_min", lo)
            check_float(f"data.{split}x_max", hi)
            if num > 1 and not lo < hi:
                raise UsageError(f"data.{split}x_min must be < data.{split}x_max, got [{lo}, {hi}]")
        if batch_size is not None:
            check_int("data.batch_size", batch_size, 1)
        check_int("data.seed", seed, 0)
        self.save_hyperparameters()
        self.train_x = self.train_y = None
        self.val_x = self.val_y = self.test_x = self.test_y = None

    def setup(self, stage: str | None = None) -> None:
        """Generate the samples, keep this rank's shard, and put it on the training device."""
        hp = self.hparams
        rank, world = 0, 1
        device = torch.device("cpu")
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            device = self.trainer.strategy.root_device
        self._generator = torch.Generator().manual_seed(hp.seed)

        def make(num: int, lo: float, hi: float, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
            idx = shard_indices(num, rank, world)
            # Build only this shard's x from the index: no rank holds the whole set.
            step = (hi - lo) / (num - 1) if num > 1 else 0.0
            x = (lo + idx.to(torch.float64) * step).to(torch.float32).unsqueeze(1)
            y = hp.slope * x + hp.intercept
            if noise > 0:
                # Noise is drawn for the whole set, so a sample's noise does not depend on the
                # number of ranks; only this shard's part is kept.
                gen = torch.Generator().manual_seed(hp.seed + 1)
                y = y + noise * torch.randn(num, 1, generator=gen)[idx]
            return x.to(device), y.to(device)

        if stage in (None, "fit"):
            self.train_x, self.train_y = make(hp.num_samples, hp.x_min, hp.x_max, hp.noise_std)
        if stage in (None, "fit", "validate"):
            self.val_x, self.val_y = make(hp.val_samples, hp.val_x_min, hp.val_x_max, 0.0)
        if stage in (None, "test"):
            self.test_x, self.test_y = make(hp.test_samples, hp.test_x_min, hp.test_x_max, 0.0)

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
