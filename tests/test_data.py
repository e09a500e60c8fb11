"""The DataModule: the lab's samples, tensor-indexed batches, seeded noise, shards (bad settings: test_cli's table).
Run: pytest tests/test_data.py"""

import pytest
import torch

from regression_lab.data import RegressionDataModule, TensorBatches
from regression_lab.ensemble import regression_model


def test_defaults_are_the_labs_data():
    dm = RegressionDataModule()
    dm.setup("fit")
    assert dm.train_x.dtype == torch.float32 and dm.train_x.shape == (5, 1)
    got = [t.flatten().tolist() for t in (dm.train_x, dm.train_y, dm.val_x, dm.val_y)]
    assert got == [[1, 2, 3, 4, 5], [5, 8, 11, 14, 17], [6, 7, 8, 9, 10], [20, 23, 26, 29, 32]]
    (batch,) = list(dm.train_dataloader())  # one full batch per epoch, as in the lab
    assert torch.equal(batch[0], dm.train_x)
    dm = RegressionDataModule(slope=-2.0, intercept=0.5, test_samples=3, test_x_min=0.0, test_x_max=1.0)
    dm.setup("test")
    assert dm.test_x.flatten().tolist() == [0.0, 0.5, 1.0] and dm.test_y.flatten().tolist() == [0.5, -0.5, -1.5]


def test_noise_is_seeded_and_only_on_training_targets():
    a, b, c = (RegressionDataModule(num_samples=10_000, noise_std=0.5, seed=s) for s in (7, 7, 8))
    for dm in (a, b, c):
        dm.setup("fit")
    assert torch.equal(a.train_y, b.train_y) and not torch.equal(a.train_y, c.train_y)
    assert (a.train_y - (3 * a.train_x + 2)).std().item() == pytest.approx(0.5, rel=0.05)
    assert torch.equal(a.val_y, 3 * a.val_x + 2)


def test_shuffled_batches_cover_every_sample_once_in_the_seeded_order():
    x = torch.arange(1000, dtype=torch.float32).unsqueeze(1)
    loader = TensorBatches(x, 2 * x, batch_size=300, generator=torch.Generator().manual_seed(7))
    assert len(loader) == 4
    first = torch.cat([bx for bx, _, _ in loader]).flatten().long()
    assert torch.equal(first, torch.randperm(1000, generator=torch.Generator().manual_seed(7)))
    second = torch.cat([bx for bx, _, _ in loader]).flatten().long()
    assert sorted(second.tolist()) == list(range(1000)) and not torch.equal(first, second)  # a new order
    assert all(torch.equal(by, 2 * bx) and share == 1.0 for bx, by, share in loader)


def test_shards_rebuild_the_whole_set_and_evaluation_shards_are_exact():
    dm = RegressionDataModule(num_samples=9, noise_std=0.3, seed=4)
    x, y = dm.samples("train")
    xs, ys = zip(*(dm.samples("train", rank, 3) for rank in range(3)), strict=True)
    order = torch.cat([torch.arange(rank, 9, 3) for rank in range(3)])
    assert torch.equal(torch.cat(xs), x[order]) and torch.equal(torch.cat(ys), y[order])
    lab = RegressionDataModule()
    assert [lab.samples("val", r, 2)[0].flatten().tolist() for r in range(2)] == [[6.0, 8.0, 10.0], [7.0, 9.0]]


@pytest.mark.parametrize("num, batch_size", [(5, None), (7, None), (7, 3), (5, 2)])
def test_ranks_steps_weigh_into_one_process_loss_and_gradient_for_any_number_of_samples(num, batch_size):
    dm, module = RegressionDataModule(num_samples=num, noise_std=0.3), regression_model(hidden_size=5, lr=0.01)
    alone = list(TensorBatches(*dm.samples("train"), batch_size))
    ranks = [list(TensorBatches(*dm.samples("train", r, 2), batch_size, shard=(r, 2, num))) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(alone)  # the ranks step together, as often as one process
    for k, batch in enumerate(alone):
        # DDP averages the ranks' gradients: that of the mean of their losses (an empty part adds nothing).
        ddp, one = sum(module.model_step(r[k])[0] for r in ranks) / 2, module.model_step(batch)[0]
        assert torch.equal(module.model_step(batch[:2])[0], one)  # a plain (x, y) batch, as a DataLoader's, is whole
        grads = [torch.autograd.grad(loss, list(module.parameters())) for loss in (ddp, one)]
        assert torch.allclose(ddp, one) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_a_million_samples_are_generated_without_python_lists():
    dm = RegressionDataModule(num_samples=1_000_000, x_min=0.0, x_max=1.0, batch_size=8192)
    dm.setup("fit")
    assert dm.train_x.shape == (1_000_000, 1) and dm.train_x[-1].item() == pytest.approx(1.0)
    assert len(dm.train_dataloader()) == 123
