"""The LightningDataModule of the lab: samples of ``y = slope * x + intercept``, or (x, y) rows from a CSV file,
as tensor-indexed batches on the training device (each rank its own shard). The defaults are the lab's data:
training x = 1..5, y = 3x + 2, one full batch per epoch; validation on the unseen x = 6..10, where the lab asks its
question; a test set over x = 0..10::

    python -c "from regression_lab.data import RegressionDataModule as D; d = D(); d.setup(); print(d.train_x.T)"
    regression-lab fit --data.csv examples/spring.csv --data.val_fraction 0.25
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch

from regression_lab.csvfile import check_unchanged, read_xy
from regression_lab.errors import FLOAT32_MAX, UsageError, check_float, check_int

#: The most samples a split may have: 100 million x and y take 800 MB as float32.
MAX_SAMPLES = 100_000_000
#: Noise draws counted as possible, in standard deviations (100 million normal draws stay within 6).
NOISE_SIGMAS = 8.0
#: Data beyond this size (the lab's reach 17) are named beside the lr after a divergence: a step grows with x^2.
LARGE_DATA = 100.0
#: The settings of the generated line, which data from a file replaces.
LINE_SETTINGS = ("slope", "intercept", "num_samples", "x_min", "x_max", "noise_std", "val_samples", "val_x_min",
                 "val_x_max", "test_samples", "test_x_min", "test_x_max")  # fmt: skip


def refuse_ignored(given: Collection[str], csv: object, val_csv: object) -> None:
    """Refuse the settings among ``given`` (names) that the data would ignore: the generated line's beside a file,
    ``val_fraction`` beside ``val_csv``, either split setting without a file."""
    if csv and (line := [k for k in LINE_SETTINGS if k in given]):
        raise UsageError(f"--data.{line[0]} describes the generated line: it does not apply to --data.csv")
    if csv and val_csv and "val_fraction" in given:
        raise UsageError("--data.val_fraction splits --data.csv; with --data.val_csv every row of it trains")
    if not csv and (split := " and ".join(f"--data.{k}" for k in ("val_csv", "val_fraction") if k in given)):
        raise UsageError(f"{split} split{'' if ' and ' in split else 's'} a --data.csv file: give --data.csv too")


class TensorBatches:
    """``(x, y, share)`` batches cut from two tensors by indexing, not gathered sample by sample as a DataLoader does.

    On one of several ranks the tensors are its shard of a split (every ``world_size``-th sample from ``rank``): each
    batch is its part of the global batch one process would take, and ``share`` that part's weight in the batch's
    loss (1.0 in one process), so that DDP's mean over the ranks is the global batch's loss whatever the sizes."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        shard: tuple[int, int, int] | None = None,
    ) -> None:
        """Wrap the tensors.

        Args:
            x: inputs, shape (N, 1): the whole split, or a rank's shard of it.
            y: targets, shape (N, 1).
            batch_size: samples per global batch; ``None`` serves the whole split as one batch.
            generator: a CPU generator to shuffle with each epoch; ``None`` keeps the order.
            shard: ``(rank, world_size, split size)`` when ``x`` is a rank's shard; ``None``: the whole split.
        """
        self.x, self.y, self.generator = x, y, generator
        self.rank, self.world, self.total = shard or (0, 1, len(x))
        self.batch_size = batch_size or max(1, self.total)

    def __len__(self) -> int:
        return math.ceil(self.total / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        n, bs, rank, world = len(self.x), self.batch_size, self.rank, self.world
        order = None
        if self.generator is not None and n >= 2:
            # On the CPU generator: the same order on any device (int32 draws the same permutation as int64).
            dtype = torch.int32 if n <= torch.iinfo(torch.int32).max else torch.int64
            order = torch.randperm(n, generator=self.generator, dtype=dtype).to(self.x.device)
        for start in range(0, self.total, bs):
            stop = min(start + bs, self.total)
            # The shard's samples among the global batch's [start, stop): its positions ceil((i - rank) / world).
            lo, hi = (min(n, max(0, -((rank - i) // world))) for i in (start, stop))
            share = (hi - lo) * world / (stop - start)
            part = slice(lo, hi) if order is None else order[lo:hi]  # a contiguous slice is a view: no copy at all
            yield self.x[part], self.y[part], share


class RegressionDataModule(L.LightningDataModule):
    """Samples of the line ``y = slope * x + intercept`` for training, validation and test, or rows of a CSV file."""

    def __init__(
        self, slope: float = 3.0, intercept: float = 2.0, num_samples: int = 5, x_min: float = 1.0, x_max: float = 5.0,
        noise_std: float = 0.0, val_samples: int = 5, val_x_min: float = 6.0, val_x_max: float = 10.0,
        test_samples: int = 21, test_x_min: float = 0.0, test_x_max: float = 10.0, batch_size: int | None = None,
        shuffle: bool = False, seed: int = 0, csv: str | None = None, val_fraction: float = 0.2,
        val_csv: str | None = None,
    ) -> None:  # fmt: skip
        """Describe the data; nothing is generated until :meth:`setup`.

        Args:
            slope: slope of the true line (the lab's 3).
            intercept: intercept of the true line (the lab's 2).
            num_samples: number of training points, evenly spaced over [x_min, x_max].
            x_min: smallest training x.
            x_max: largest training x.
            noise_std: standard deviation of Gaussian noise on the training targets only (validation and test stay
                exact: they measure the line itself).
            val_samples: number of validation points over [val_x_min, val_x_max] (2 at least, for R²).
            val_x_min: smallest validation x (the lab's unseen 6).
            val_x_max: largest validation x (the lab's question, 10).
            test_samples: number of test points over [test_x_min, test_x_max] (2 at least).
            test_x_min: smallest test x.
            test_x_max: largest test x.
            batch_size: training samples per step, across all ranks; ``None``: one full batch.
            shuffle: reshuffle the training samples every epoch.
            seed: seed of the noise, of the shuffle order and of the split of ``csv`` (the same for every seed of
                an ensemble or a sweep, so that their members see the same data).
            csv: a CSV file of (x, y) rows instead of the line: its columns ``x`` and ``y`` by a header, else its
                first two (the line's settings above do not apply to it).
            val_fraction: the share of ``csv``'s rows held out to validate and test on (2 rows at least).
            val_csv: a CSV file to validate and test on instead; then every row of ``csv`` trains.
        """
        csv, val_csv = (None if f is None else str(Path(f).absolute()) for f in (csv, val_csv))
        super().__init__()
        self.save_hyperparameters()
        if csv is not None:  # absolute, to be found from anywhere; LightningCLI has the arguments saved as given
            self.save_hyperparameters({**self.hparams, "csv": csv, "val_csv": val_csv})
        self.splits = {"train": (num_samples, x_min, x_max), "val": (val_samples, val_x_min, val_x_max),
                       "test": (test_samples, test_x_min, test_x_max)}  # fmt: skip
        self.source: dict[str, dict[str, Any]] = {}  # each file's path, size and SHA-256: what a checkpoint keeps
        self.rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.check()
        if csv is not None:
            self.read_files()
        self.generator = torch.Generator().manual_seed(seed)
        self.train_x = self.train_y = self.val_x = self.val_y = self.test_x = self.test_y = None

    def read_files(self) -> None:
        """Read ``csv`` (and ``val_csv``) into the splits, refusing the line's settings beside them."""
        hp = self.hparams
        if hp.val_csv is not None:
            x, y, self.source["csv"] = read_xy(hp.csv, "--data.csv")
            # R² of one point is undefined: two at least.
            vx, vy, self.source["val_csv"] = read_xy(hp.val_csv, "--data.val_csv", 2, " to validate on")
            self.rows = {"train": (x, y), "val": (vx, vy)}
        else:
            if not 0 < check_float("data.val_fraction", hp.val_fraction) < 1:
                raise UsageError(f"--data.val_fraction must lie in (0, 1), got {hp.val_fraction}")
            x, y, self.source["csv"] = read_xy(hp.csv, "--data.csv", 3, ", 1 to train on and 2 to validate on (or "
                                               "give --data.val_csv)")  # fmt: skip
            held = min(len(x) - 1, max(2, round(hp.val_fraction * len(x))))
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(hp.seed))
            val, train = order[:held].sort().values, order[held:].sort().values  # each in the file's order
            self.rows = {"train": (x[train], y[train]), "val": (x[val], y[val])}
        self.rows["test"] = self.rows["val"]
        self.splits = {k: (len(x), float(x.min()), float(x.max())) for k, (x, _) in self.rows.items()}

    def check(self) -> None:
        """Refuse (:class:`UsageError`) settings that give no data, or data beyond float32's range."""
        hp = self.hparams
        refuse_ignored([k for k, v in DATA_DEFAULTS.items() if hp[k] != v], hp.csv, hp.val_csv)  # not at defaults
        check_float("data.slope", hp.slope)
        check_float("data.intercept", hp.intercept)
        check_float("data.noise_std", hp.noise_std, 0.0)
        check_int("data.seed", hp.seed, 0)
        if hp.batch_size is not None:
            check_int("data.batch_size", hp.batch_size, 1)
        for split, (num, lo, hi) in self.splits.items():
            prefix = "" if split == "train" else f"{split}_"
            # R² of one validation or test point is undefined (torchmetrics refuses it): two at least.
            check_int(f"data.{split if prefix else 'num'}_samples", num, 2 if prefix else 1, MAX_SAMPLES)
            lo, hi = check_float(f"data.{prefix}x_min", lo), check_float(f"data.{prefix}x_max", hi)
            if num > 1 and not lo < hi:
                raise UsageError(f"data.{prefix}x_min must be < data.{prefix}x_max, got [{lo}, {hi}]")
        size = self.largest_magnitude(train_only=False)
        if size > FLOAT32_MAX:
            about = f" (about {size:.3g})" if math.isfinite(size) else ""
            raise UsageError(
                f"the data settings give samples beyond float32's range {FLOAT32_MAX:.3g}{about}: "
                "scale --data.x_*, --data.slope, --data.intercept or --data.noise_std down"
            )

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], where: str) -> RegressionDataModule:
        """The data a checkpoint was trained on, from its saved settings (the lab's without any); a changed file
        is refused."""
        data = ckpt.get("datamodule_hyper_parameters", {})
        if not isinstance(data, dict):
            raise UsageError(f"{where}: the saved data settings are a {type(data).__name__}, not a mapping")
        try:  # the settings come from a file: checked as the DataModule checks its arguments
            dm = cls(**{k: v for k, v in data.items() if not k.startswith("_")})
        except (UsageError, TypeError) as err:
            raise UsageError(f"{where} (saved data settings): {err}") from None
        dm.check_source(ckpt, where)
        return dm

    def check_source(self, ckpt: dict[str, Any], where: str) -> None:
        """Refuse a file read from the same path as a checkpoint's data whose contents have changed since."""
        saved = ckpt.get(type(self).__qualname__)
        saved = saved.get("source") if isinstance(saved, dict) else None
        for key, record in self.source.items():
            check_unchanged(saved.get(key) if isinstance(saved, dict) else None, record, f"{where} was trained on it")

    def line_at(self, x: float) -> float | None:
        """The true line's value at ``x`` (what a perfect model predicts); ``None`` for data from a file."""
        return None if self.hparams.csv else self.hparams.slope * x + self.hparams.intercept

    def largest_magnitude(self, train_only: bool = True) -> float:
        """The largest |x| or |y| the data can hold (noise counted to :data:`NOISE_SIGMAS`)."""
        hp, largest = self.hparams, 0.0
        if self.rows:
            splits = ("train",) if train_only else self.rows
            return max(float(t.abs().max()) for split in splits for t in self.rows[split])
        for split, (_, lo, hi) in self.splits.items():
            if split == "train" or not train_only:
                x, noise = max(abs(lo), abs(hi)), (NOISE_SIGMAS * hp.noise_std if split == "train" else 0.0)
                largest = max(largest, x, abs(hp.slope) * x + abs(hp.intercept) + noise)
        return largest

    def samples(self, split: str, rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank ``rank``'s shard of a split (every ``world_size``-th sample) as (n, 1) float32 CPU tensors."""
        num, lo, hi = self.splits[split]
        # Exact shards: each sample on one rank (training batches keep the ranks in step, see TensorBatches). An
        # evaluation split smaller than the ranks wraps around, as every rank needs a sample to evaluate.
        if split == "train" or num >= world_size:
            idx = torch.arange(rank, num, world_size)
        else:
            idx = torch.arange(rank, math.ceil(num / world_size) * world_size, world_size) % num
        if self.rows:
            x, y = self.rows[split]
            return x[idx], y[idx]
        step = (hi - lo) / (num - 1) if num > 1 else 0.0
        x = (lo + idx.to(torch.float64) * step).to(torch.float32).unsqueeze(1)
        y = self.hparams.slope * x + self.hparams.intercept
        if split == "train" and self.hparams.noise_std > 0:  # drawn for the whole set, whatever the ranks
            gen = torch.Generator().manual_seed(self.hparams.seed + 1)
            y = y + self.hparams.noise_std * torch.randn(num, 1, generator=gen)[idx]
        return x, y

    def setup(self, stage: str | None = None) -> None:
        """Generate this rank's shard of the splits the stage needs, on the training device."""
        rank, world, device = 0, 1, torch.device("cpu")
        if self.trainer is not None:
            rank, world, device = self.trainer.global_rank, self.trainer.world_size, self.trainer.strategy.root_device
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, tuple(self.splits))
        for split in wanted:
            x, y = self.samples(split, rank, world)
            setattr(self, f"{split}_x", x.to(device))
            setattr(self, f"{split}_y", y.to(device))

    def state_dict(self) -> dict[str, Any]:
        """The shuffle generator's state, so a resumed run draws the same orders; the files' records."""
        return {"shuffle_generator": self.generator.get_state(), "source": self.source}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the shuffle generator when resuming."""
        if isinstance(state_dict.get("shuffle_generator"), torch.Tensor):
            self.generator.set_state(state_dict["shuffle_generator"])

    def train_dataloader(self) -> TensorBatches:
        """Training batches, reshuffled each epoch with ``shuffle``."""
        # batch_size is the global batch: each rank takes its part, so DDP steps as one process does.
        shard = (self.trainer.global_rank, self.trainer.world_size, self.splits["train"][0]) if self.trainer else None
        generator = self.generator if self.hparams.shuffle else None
        return TensorBatches(self.train_x, self.train_y, self.hparams.batch_size, generator, shard)

    def val_dataloader(self) -> TensorBatches:
        """The validation set as one batch per rank (it is small)."""
        return TensorBatches(self.val_x, self.val_y)

    def test_dataloader(self) -> TensorBatches:
        """The test set as one batch per rank."""
        return TensorBatches(self.test_x, self.test_y)


#: Every data setting's default, from the signature (the one place they are written).
DATA_DEFAULTS = {k: p.default for k, p in inspect.signature(RegressionDataModule).parameters.items()}
