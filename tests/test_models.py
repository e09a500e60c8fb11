"""MyNN and MyNNStack (TinyModel: test_demos): structure, the lab's numbers, members equal to lone models.
Run: pytest tests/test_models.py"""

import pytest
import torch
from torch import nn

from regression_lab.errors import UsageError
from regression_lab.models import MyNN, MyNNStack


def test_mynn_has_the_labs_layers_and_computes_linear_relu_linear():
    model = MyNN(3)
    assert isinstance(model.linear1, nn.Linear) and isinstance(model.activation, nn.ReLU)
    assert (model.linear1.in_features, model.linear1.out_features, model.linear2.out_features) == (1, 3, 1)
    assert sum(p.numel() for p in model.parameters()) == 3 + 3 + 3 + 1
    with torch.no_grad():
        model.linear1.weight.copy_(torch.tensor([[1.0], [-1.0], [2.0]]))
        model.linear1.bias.copy_(torch.tensor([0.0, 1.0, -4.0]))
        model.linear2.weight.copy_(torch.tensor([[1.0, 10.0, 100.0]]))
        model.linear2.bias.copy_(torch.tensor([0.5]))
    # x = 3: hidden pre-activations [3, -2, 2] -> ReLU [3, 0, 2] -> 3 + 0 + 200 + 0.5
    assert model(torch.tensor([[3.0]])).item() == pytest.approx(203.5)
    assert model(torch.zeros(7, 1)).shape == (7, 1)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5", 10_001])
def test_mynn_rejects_bad_hidden_size(bad):
    with pytest.raises(UsageError, match="hidden_size"):
        MyNN(bad)


def test_stack_members_start_as_seeded_lone_models_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    members = [(5, 0), (8, 42), (5, 7), (1, 2**32 - 1), (300, 9)]  # 300: 901 draws, more than the stream computes
    stack = MyNNStack(*zip(*members, strict=True))
    assert torch.equal(torch.get_rng_state(), before)
    for i, (h, seed) in enumerate(members):
        torch.manual_seed(seed)
        lone = MyNN(h)
        pairs = zip(stack.member(i).state_dict().values(), lone.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
        x = torch.linspace(-3, 9, 11).unsqueeze(1)
        torch.testing.assert_close(stack(x)[i], lone(x))  # padding units add nothing
    assert stack(torch.ones(4, 1)).shape == (5, 4, 1)


def test_a_stack_counts_active_units_and_retires_non_finite_members():
    stack = MyNNStack(4, [0, 1])
    x = torch.linspace(1, 5, 5).unsqueeze(1)
    lone = stack.member(0)
    assert int(stack.active_units(x)[0]) == int((torch.relu(lone.linear1(x)) > 0).any(dim=0).sum())
    with torch.no_grad():
        stack.weights[1, 0] = float("nan")
    stack.retire()
    assert stack.diverged.tolist() == [False, True]
    assert float(stack.weights[1].detach().abs().sum()) == 0.0 and bool(torch.isfinite(stack.weights).all())
