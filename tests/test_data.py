"""The DataModule: the lab's samples, tensor-indexed batches, shards. Run: pytest tests/test_data.py"""

import pytest
import torch

from regression_lab.core.errors import UsageError
from regression_lab.core.samples import TensorBatches, line_split, shard_indices
from regression_lab.lit.data import RegressionDataModule


def test_defaults_are_the_labs_data():
    dm = RegressionDataModule()
    dm.setup("fit")
    assert dm.train_x.dtype == torch.float32 and dm.train_x.shape == (5, 1)
    assert dm.train_x.flatten().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert dm.train_y.flatten().tolist() == [5.0, 8.0, 11.0, 14.0, 17.0]
    assert dm.val_x.flatten().tolist() == [6.0, 7.0, 8.0, 9.0, 10.0]
    assert dm.val_y.flatten().tolist() == [20.0, 23.0, 26.0, 29.0, 32.0]
    batches = list(dm.train_dataloader())
    assert len(batches) == 1  # one full batch per epoch, as in the lab
    assert torch.equal(batches[0][0], dm.train_x)


def test_test_split_and_custom_line():
    dm = RegressionDataModule(slope=-2.0, intercept=0.5, test_samples=3, test_x_min=0.0, test_x_max=1.0)
    dm.setup("test")
    assert dm.test_x.flatten().tolist() == [0.0, 0.5, 1.0]
    assert dm.test_y.flatten().tolist() == [0.5, -0.5, -1.5]


def test_noise_is_seeded_and_only_on_training_targets():
    a, b, c = (RegressionDataModule(num_samples=10_000, noise_std=0.5, seed=s) for s in (7, 7, 8))
    for dm in (a, b, c):
        dm.setup("fit")
    assert torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.train_y, c.train_y)
    residual = a.train_y - (3 * a.train_x + 2)
    assert residual.std().item() == pytest.approx(0.5, rel=0.05)
    assert torch.equal(a.val_y, 3 * a.val_x + 2)


def test_batches_by_indexing_cover_every_sample_once_per_epoch():
    x = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    loader = TensorBatches(x, 2 * x, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 3
    epoch1 = torch.cat([bx for bx, _ in loader]).flatten()
    epoch2 = torch.cat([bx for bx, _ in loader]).flatten()
    assert sorted(epoch1.tolist()) == list(range(10)) == sorted(epoch2.tolist())
    assert not torch.equal(epoch1, epoch2)  # a new order each epoch
    for bx, by in loader:
        assert torch.equal(by, 2 * bx)


def test_shuffled_order_is_the_seeded_permutation():
    # The loader draws its order as int32 for speed; it must be the same permutation that
    # torch.randperm gives with the same seed (orders recorded before the change stay valid).
    x = torch.arange(1000, dtype=torch.float32).unsqueeze(1)
    loader = TensorBatches(x, x, batch_size=300, shuffle=True, generator=torch.Generator().manual_seed(7))
    served = torch.cat([bx for bx, _ in loader]).flatten().long()
    assert torch.equal(served, torch.randperm(1000, generator=torch.Generator().manual_seed(7)))


def test_shards_are_disjoint_equal_sized_and_cover_the_data():
    shards = [shard_indices(10, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert set(torch.cat(shards).tolist()) == set(range(10))
    even = [shard_indices(8, r, 2) for r in range(2)]
    assert sorted(torch.cat(even).tolist()) == list(range(8))


def test_a_million_samples_are_generated_without_python_lists():
    dm = RegressionDataModule(num_samples=1_000_000, x_min=0.0, x_max=1.0, batch_size=8192)
    dm.setup("fit")
    assert dm.train_x.shape == (1_000_000, 1)
    assert dm.train_x[-1].item() == pytest.approx(1.0)
    assert len(dm.train_dataloader()) == 123


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_samples": 0}, "num_samples"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"x_min": 5.0, "x_max": 1.0}, "x_min"),
        ({"batch_size": 0}, "batch_size"),
        ({"slope": float("nan")}, "slope"),
        ({"val_x_max": float("inf")}, "val_x_max"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(UsageError, match=message):
        RegressionDataModule(**kwargs)


def test_light_sample_defaults_match_the_datamodule_signature():
    import inspect

    from regression_lab.core.samples import DATA_DEFAULTS

    params = inspect.signature(RegressionDataModule.__init__).parameters
    assert {k: params[k].default for k in DATA_DEFAULTS} == DATA_DEFAULTS


def test_line_split_shards_rebuild_the_whole_noisy_set():
    settings = {"num_samples": 9, "noise_std": 0.3, "seed": 4}
    x, y = line_split(settings, "train")
    parts = [line_split(settings, "train", rank, 3) for rank in range(3)]
    order = torch.cat([shard_indices(9, rank, 3) for rank in range(3)])
    assert torch.equal(torch.cat([p[0] for p in parts]), x[order])
    assert torch.equal(torch.cat([p[1] for p in parts]), y[order])


def test_evaluation_shards_are_exact_and_training_shards_padded():
    val = [line_split({}, "val", rank, 2)[0].flatten().tolist() for rank in range(2)]
    assert val == [[6.0, 8.0, 10.0], [7.0, 9.0]]
    train = [line_split({}, "train", rank, 2)[0].flatten().tolist() for rank in range(2)]
    assert train == [[1.0, 3.0, 5.0], [2.0, 4.0, 1.0]]
