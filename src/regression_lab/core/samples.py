"""The samples of the line, without Lightning: generation, shards and tensor-indexed batches.

The DataModule serves these to the Trainer; ``landscape`` regenerates a checkpoint's training
data from its saved data hyperparameters with the same code. Try it::

    python -c "from regression_lab.core.samples import line_split; print(line_split({}, 'train')[0].T)"
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from regression_lab.core.errors import FLOAT32_MAX, UsageError, check_float, check_int

#: The DataModule's defaults: the lab's data (also what a checkpoint without data settings used).
#: The most samples a split may have: 100 million x and y take 800 MB as float32, and the
#: project's largest benchmark uses 10 million.
MAX_SAMPLES = 100_000_000

DATA_DEFAULTS: dict[str, Any] = {
    "slope": 3.0,
    "intercept": 2.0,
    "num_samples": 5,
    "x_min": 1.0,
    "x_max": 5.0,
    "noise_std": 0.0,
    "val_samples": 5,
    "val_x_min": 6.0,
    "val_x_max": 10.0,
    "test_samples": 21,
    "test_x_min": 0.0,
    "test_x_max": 10.0,
    "seed": 0,
}

#: Samples beyond this overflow float32 when squared, as the MSE does: sqrt(FLOAT32_MAX).
SQUARE_SAFE = math.sqrt(FLOAT32_MAX)
#: Noise draws counted as possible, in standard deviations (100 million normal draws stay
#: within about 6).
NOISE_SIGMAS = 8.0

#: The splits: (name of their sample count, prefix of their x range).
SPLITS = (("num_samples", ""), ("val_samples", "val_"), ("test_samples", "test_"))


def check_data_settings(settings: Mapping[str, Any], source: str = "") -> dict[str, Any]:
    """The data settings (missing keys take :data:`DATA_DEFAULTS`), each checked.

    The DataModule checks its arguments here, and ``landscape`` the settings a checkpoint
    carries (untrusted: ``source`` names the file in the message). Raises :class:`UsageError`
    for a non-finite or non-numeric value, a count below 1 or above :data:`MAX_SAMPLES`, a
    negative noise or an empty range.
    """
    hp = {**DATA_DEFAULTS, **{k: v for k, v in settings.items() if k in DATA_DEFAULTS}}
    where = f"{source}: " if source else ""
    try:
        for key in ("slope", "intercept"):
            check_float(f"data.{key}", hp[key])
        check_float("data.noise_std", hp["noise_std"], non_negative=True)
        for count, prefix in SPLITS:
            num = check_int(f"data.{count}", hp[count], 1)
            if num > MAX_SAMPLES:
                raise UsageError(
                    f"data.{count} must be <= {MAX_SAMPLES:,} (about {MAX_SAMPLES * 8 // 2**20} MiB of x and y), "
                    f"got {num:,}"
                )
            lo = check_float(f"data.{prefix}x_min", hp[f"{prefix}x_min"])
            hi = check_float(f"data.{prefix}x_max", hp[f"{prefix}x_max"])
            if num > 1 and not lo < hi:
                raise UsageError(f"data.{prefix}x_min must be < data.{prefix}x_max, got [{lo}, {hi}]")
        check_int("data.seed", hp["seed"], 0)
        size = largest_magnitude(hp)
        if size > FLOAT32_MAX:
            about = f" (about {size:.3g})" if math.isfinite(size) else ""
            raise UsageError(
                f"the data settings give samples beyond float32's range {FLOAT32_MAX:.3g}{about}: "
                "scale --data.x_*, --data.slope, --data.intercept or --data.noise_std down"
            )
    except UsageError as err:
        raise UsageError(f"{where}{err}") from None
    return hp


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
            # randperm on the CPU generator keeps the order independent of the device. int32
            # draws the same permutation as int64 in about half the time (measured: ~5 ms
            # against ~9 ms for 1M samples, several percent of a 1M-sample epoch) and halves
            # the copy to a GPU.
            dtype = torch.int32 if n <= torch.iinfo(torch.int32).max else torch.int64
            order = torch.randperm(n, generator=self.generator, dtype=dtype).to(self.x.device)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                yield self.x[idx], self.y[idx]
        else:
            # Contiguous slices are views: no copy at all.
            for start in range(0, n, bs):
                yield self.x[start : start + bs], self.y[start : start + bs]


def shard_indices(n: int, rank: int, world_size: int, pad: bool = True) -> torch.Tensor:
    """Indices of rank ``rank``'s shard: every ``world_size``-th sample.

    With ``pad`` the shards are evened out by wrapping around (as ``DistributedSampler`` does),
    which keeps the ranks' batch counts equal and DDP in step. Without it the shards are exact
    (no sample counted twice), for evaluation sets served as one batch per rank.
    """
    if not pad and n >= world_size:
        return torch.arange(rank, n, world_size)
    per_rank = math.ceil(n / world_size)
    return torch.arange(rank, per_rank * world_size, world_size) % n


def largest_magnitude(settings: Mapping[str, Any], train_only: bool = False) -> float:
    """The largest |x| or |y| the (checked) data settings can give, over every split (or the
    training split alone).

    |y| is bounded by the line at the ends of the range plus :data:`NOISE_SIGMAS` standard
    deviations of noise. Training diverges whatever the learning rate past :data:`SQUARE_SAFE`.
    """
    hp = {**DATA_DEFAULTS, **settings}
    largest = 0.0
    for _, prefix in SPLITS[:1] if train_only else SPLITS:
        x = max(abs(hp[f"{prefix}x_min"]), abs(hp[f"{prefix}x_max"]))
        noise = NOISE_SIGMAS * hp["noise_std"] if prefix == "" else 0.0
        largest = max(largest, x, abs(hp["slope"]) * x + abs(hp["intercept"]) + noise)
    return largest


def line_split(
    settings: Mapping[str, Any], split: str = "train", rank: int = 0, world_size: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split (``train``, ``val`` or ``test``) of the line's samples, this rank's shard only.

    ``settings`` holds the DataModule's arguments (missing keys take :data:`DATA_DEFAULTS`),
    checked by :func:`check_data_settings`.
    x is evenly spaced; only the training targets get the seeded Gaussian noise. Returns
    float32 tensors of shape (n, 1) on the CPU.
    """
    hp = check_data_settings(settings)
    prefix = "" if split == "train" else f"{split}_"
    num = hp["num_samples"] if split == "train" else hp[f"{split}_samples"]
    lo, hi = hp[f"{prefix}x_min"], hp[f"{prefix}x_max"]
    # Training shards are padded to equal length (equal step counts); evaluation shards are
    # exact, so metrics reduced across ranks count every sample once.
    idx = shard_indices(num, rank, world_size, pad=split == "train")
    # Build only this shard's x from the index: no rank holds the whole set.
    step = (hi - lo) / (num - 1) if num > 1 else 0.0
    x = (lo + idx.to(torch.float64) * step).to(torch.float32).unsqueeze(1)
    y = hp["slope"] * x + hp["intercept"]
    if split == "train" and hp["noise_std"] > 0:
        # Noise is drawn for the whole set, so a sample's noise does not depend on the number
        # of ranks; only this shard's part is kept.
        gen = torch.Generator().manual_seed(hp["seed"] + 1)
        y = y + hp["noise_std"] * torch.randn(num, 1, generator=gen)[idx]
    return x, y
