"""MyNN and TinyModel: structure and the numbers the lab states. Run: pytest tests/test_models.py"""

import pytest
import torch
from torch import nn

from regression_lab.core.errors import UsageError
from regression_lab.core.models import MyNN, TinyModel


def test_mynn_has_the_labs_layers_and_shapes():
    model = MyNN(4)
    assert isinstance(model.linear1, nn.Linear) and (model.linear1.in_features, model.linear1.out_features) == (1, 4)
    assert isinstance(model.activation, nn.ReLU)
    assert (model.linear2.in_features, model.linear2.out_features) == (4, 1)
    assert sum(p.numel() for p in model.parameters()) == 4 + 4 + 4 + 1
    assert model(torch.zeros(7, 1)).shape == (7, 1)


def test_mynn_forward_is_linear_relu_linear():
    model = MyNN(3)
    with torch.no_grad():
        model.linear1.weight.copy_(torch.tensor([[1.0], [-1.0], [2.0]]))
        model.linear1.bias.copy_(torch.tensor([0.0, 1.0, -4.0]))
        model.linear2.weight.copy_(torch.tensor([[1.0, 10.0, 100.0]]))
        model.linear2.bias.copy_(torch.tensor([0.5]))
    # x = 3: hidden pre-activations [3, -2, 2] -> ReLU [3, 0, 2] -> 3 + 0 + 200 + 0.5
    assert model(torch.tensor([[3.0]])).item() == pytest.approx(203.5)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5"])
def test_mynn_rejects_bad_hidden_size(bad):
    with pytest.raises(UsageError, match="hidden_size"):
        MyNN(bad)


def test_tinymodel_counts_22210_parameters_and_outputs_probabilities():
    model = TinyModel()
    counts = {name: p.numel() for name, p in model.named_parameters()}
    assert counts == {"linear1.weight": 20000, "linear1.bias": 200, "linear2.weight": 2000, "linear2.bias": 10}
    assert sum(counts.values()) == 22210
    out = model(torch.rand(8, 100))
    assert out.shape == (8, 10)
    assert torch.all(out >= 0)
    torch.testing.assert_close(out.sum(dim=-1), torch.ones(8))
    assert model.softmax.dim == -1
