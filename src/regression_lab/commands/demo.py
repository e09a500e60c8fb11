"""The lab's part A and model walk-through: forward passes by hand, with NumPy and with torch.

Each section is a function that computes its values and returns them in a :class:`Section`;
one printer shows any section as text, ``--json`` as JSON. No Lightning import: this is a
torch/NumPy lesson and starts fast. Run it::

    regression-lab demo                 # every section
    regression-lab demo forward         # perceptron ... the ReLU exercise
    regression-lab demo tinymodel --logdir lightning_logs/graphs   # and the model graph for TensorBoard
    regression-lab demo linear --json
    python scripts/forward_pass_demo.py forward --seed 3
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import NonNegativeInt
from torch import nn

from regression_lab.commands.options import new_parser
from regression_lab.core.errors import UsageError
from regression_lab.core.graphs import quiet_tracing
from regression_lab.core.models import MyNN, TinyModel

# The lab's numbers: one sample of four features, three neurons, and a batch of three samples.
INPUTS = [0.8, 1.3, 2.5, 2.0]
WEIGHTS = [[2.5, 1.7, -0.5, 1.0], [0.5, -0.91, 0.26, -0.5], [-0.26, -0.27, 0.17, 0.87]]
BIASES = [2.0, 3.0, 0.5]
BATCH = [[0.8, 1.3, 2.5, 2.0], [2.3, 1.5, 3.8, 4.5], [-1.5, 2.7, 3.3, -0.8]]


@dataclass
class Section:
    """What a demo section computed: a title, its teaching point, and named values."""

    title: str
    note: str
    values: dict[str, Any] = field(default_factory=dict)


def perceptron() -> Section:
    """One neuron with three inputs, a bias, and a step function."""
    inputs, weights, bias = [0.8, 1.3, 2.5], [2.5, 1.7, -0.5], 2.0
    weighted_sum = inputs[0] * weights[0] + inputs[1] * weights[1] + inputs[2] * weights[2] + bias
    return Section(
        "The perceptron (one neuron)",
        "Each input is scaled by its weight, the neuron adds its one bias, and a step function "
        "turns the sum into 0 or 1 (1 when the sum is >= 0).",
        {
            "inputs": inputs,
            "weights": weights,
            "bias": bias,
            "weighted_sum": weighted_sum,
            "step_output": int(weighted_sum >= 0),
        },
    )


def three_neurons() -> Section:
    """Three neurons over four inputs, every product written out."""
    x, (w1, w2, w3), (b1, b2, b3) = INPUTS, WEIGHTS, BIASES
    outputs = [
        x[0] * w1[0] + x[1] * w1[1] + x[2] * w1[2] + x[3] * w1[3] + b1,
        x[0] * w2[0] + x[1] * w2[1] + x[2] * w2[2] + x[3] * w2[3] + b2,
        x[0] * w3[0] + x[1] * w3[1] + x[2] * w3[2] + x[3] * w3[3] + b3,
    ]
    return Section(
        "Three neurons, written out",
        "Every neuron has its own weight for each input and one bias of its own: three neurons, three biases, "
        "three outputs.",
        {"inputs": x, "outputs": outputs},
    )


def loops_and_dot() -> Section:
    """The same layer with loops over weights and biases, then with NumPy's dot product."""
    looped = []
    for weights, bias in zip(WEIGHTS, BIASES, strict=True):
        total = 0.0
        for x, w in zip(INPUTS, weights, strict=True):
            total += x * w
        looped.append(total + bias)
    one_neuron = float(np.dot(np.array(WEIGHTS[0]), np.array(INPUTS)) + BIASES[0])
    layer = np.dot(np.array(WEIGHTS), np.array(INPUTS)) + np.array(BIASES)
    return Section(
        "Loops, then NumPy dot products",
        "A loop over (weights, bias) pairs gives the same layer; np.dot(weights, inputs) does it at once "
        "(weights first: matrix . vector), like y = w x + b for each neuron.",
        {"looped": looped, "numpy_one_neuron": one_neuron, "numpy_layer": layer},
    )


def batch_of_samples() -> Section:
    """A batch of three samples through the layer: inputs @ weights.T + biases."""
    inputs, weights = np.array(BATCH), np.array(WEIGHTS)
    out = inputs @ weights.T + np.array(BIASES)
    return Section(
        "A batch: inputs @ weights.T + biases",
        "Each row of the input is a sample and each row of the output that sample's three neuron outputs; "
        "the weights are transposed so the inner sizes (4) match.",
        {"outputs": out, "shape": list(out.shape)},
    )


def tensors() -> Section:
    """torch's dot, mm, matmul and @, and how torch.dot differs from np.dot."""
    dot = torch.dot(torch.tensor([1, 2]), torch.tensor([3, 2]))
    a = torch.tensor([[0, 1, 2], [1, 2, 3]])
    b = torch.tensor([[0, 1], [1, 1], [1, 3]])
    x, w, bias = torch.tensor(BATCH), torch.tensor(WEIGHTS), torch.tensor(BIASES)
    via_matmul = torch.matmul(x, torch.transpose(w, 0, 1)) + bias
    via_mm = x.mm(w.T) + bias
    via_at = x @ w.T + bias
    # np.dot multiplies 2-D arrays as matrices; torch.dot only takes 1-D vectors.
    np_2d = np.dot(a.numpy(), b.numpy())
    try:
        torch.dot(a, b)
        torch_2d = "no error"
    except RuntimeError as err:
        torch_2d = f"RuntimeError: {str(err).splitlines()[0]}"
    return Section(
        "Tensors: dot, mm, matmul and @",
        "torch.dot is the inner product of two 1-D vectors; for matrices use torch.mm, torch.matmul, .mm or @, "
        "which all give the same batch output. np.dot on 2-D arrays is a matrix product; torch.dot refuses them.",
        {
            "torch_dot": dot,
            "torch_mm": torch.mm(a, b),
            "batch_matmul": via_matmul,
            "batch_mm": via_mm,
            "batch_at": via_at,
            "all_three_equal": bool(torch.equal(via_matmul, via_mm) and torch.equal(via_mm, via_at)),
            "np_dot_2d": np_2d,
            "torch_dot_2d": torch_2d,
        },
    )


def relu_exercise(seed: int = 0) -> Section:
    """The lab's exercise done right: 5 random inputs, 2 ReLU neurons, one matmul."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.rand(5, generator=gen)
    weights = torch.randn(2, 5, generator=gen)
    biases = torch.randn(2, generator=gen)
    weighted = weights @ inputs + biases
    return Section(
        "Exercise: 5 inputs, 2 ReLU neurons",
        "Inputs from torch.rand (0..1), weights and biases from torch.randn; one matrix product for both neurons, "
        "then ReLU: a negative weighted sum becomes 0, a positive one passes unchanged.",
        {
            "seed": seed,
            "inputs": inputs,
            "weights": weights,
            "biases": biases,
            "weighted_sum": weighted,
            "outputs": torch.relu(weighted),
        },
    )


def _parameter_counts(model: nn.Module) -> dict[str, int]:
    return {name: p.numel() for name, p in model.named_parameters()}


def tinymodel(seed: int = 0) -> Section:
    """TinyModel inspected: architecture, one layer, the last layer's parameters, counts, a forward pass."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # nn.Linear initialises from the global generator
    model = TinyModel()
    batch = torch.rand(4, 100, generator=gen)
    with torch.no_grad():
        probs = model(batch)
    counts = _parameter_counts(model)
    return Section(
        "TinyModel: 100 -> 200 -> 10, softmax",
        "print(model) shows the layers; each Linear holds a weight (out, in) and a bias (out). Parameters have "
        "requires_grad=True so training can follow their gradients. Softmax over the last dimension turns each "
        "row of 10 scores into probabilities.",
        {
            "architecture": str(model),
            "one_layer": str(model.linear2),
            "linear2_weight_shape": list(model.linear2.weight.shape),
            "linear2_bias": model.linear2.bias.detach(),
            "requires_grad": all(p.requires_grad for p in model.parameters()),
            "parameter_counts": counts,
            "total_parameters": sum(counts.values()),
            "batch_output_shape": list(probs.shape),
            "row_sums": probs.sum(dim=-1),
        },
    )


def linear_layer(seed: int = 0) -> Section:
    """nn.Linear(3, 2) on a (1, 3) input, checked against x @ W.T + b."""
    torch.manual_seed(seed)
    lin = nn.Linear(3, 2)
    x = torch.rand(1, 3)
    with torch.no_grad():
        y = lin(x)
        by_hand = x @ lin.weight.T + lin.bias
    return Section(
        "nn.Linear(3, 2)",
        "The weight is stored as (out_features, in_features) = (2, 3), so the layer computes x @ W.T + b; "
        "weights scale the inputs, the biases shift the outputs.",
        {
            "input": x,
            "weight": lin.weight.detach(),
            "bias": lin.bias.detach(),
            "weight_shape": list(lin.weight.shape),
            "output": y,
            "x_WT_plus_b": by_hand,
            "identity_holds": bool(torch.allclose(y, by_hand)),
            "requires_grad": lin.weight.requires_grad and lin.bias.requires_grad,
        },
    )


def mynn(seed: int = 0, hidden_size: int = 5) -> Section:
    """MyNN inspected: the regressor the rest of the project trains."""
    torch.manual_seed(seed)
    model = MyNN(hidden_size)
    counts = _parameter_counts(model)
    return Section(
        f"MyNN({hidden_size}): 1 -> {hidden_size} -> 1",
        "One input, one output, a ReLU hidden layer and no output activation: a regression network. "
        "`regression-lab fit` trains it on y = 3x + 2.",
        {"architecture": str(model), "parameter_counts": counts, "total_parameters": sum(counts.values())},
    )


#: Sections per demo name; ``all`` runs every one in this order.
DEMOS: dict[str, list[Callable[..., Section]]] = {
    "forward": [perceptron, three_neurons, loops_and_dot, batch_of_samples, tensors, relu_exercise],
    "tinymodel": [tinymodel],
    "linear": [linear_layer],
    "mynn": [mynn],
}
_SEEDED = {relu_exercise, tinymodel, linear_layer, mynn}


def run_demo(name: str, seed: int = 0) -> list[Section]:
    """Compute the sections of demo ``name`` (``forward``, ``tinymodel``, ``linear``, ``mynn`` or ``all``)."""
    if name != "all" and name not in DEMOS:
        raise UsageError(f"unknown demo {name!r}: choose from {', '.join([*DEMOS, 'all'])}")
    names = list(DEMOS) if name == "all" else [name]
    return [fn(seed) if fn in _SEEDED else fn() for n in names for fn in DEMOS[n]]


def to_plain(value: Any) -> Any:
    """Tensors and arrays as (nested) lists, so a section's values serialise to JSON."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _format_value(value: Any) -> str:
    # Six significant digits hide float noise (6.960000000000001) yet keep the lab's 1.867.
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return np.array2string(np.asarray(value.tolist()), precision=4, suppress_small=True, floatmode="maxprec")
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return str(value)


def format_section(section: Section) -> str:
    """A section as readable text: title, teaching point, then each value."""
    lines = [f"== {section.title} ==", section.note, ""]
    for key, value in section.values.items():
        text = _format_value(value)
        if "\n" in text:
            lines.append(f"{key}:")
            lines.extend("    " + line for line in text.splitlines())
        else:
            lines.append(f"{key}: {text}")
    return "\n".join(lines) + "\n"


def write_graphs(logdir: Path, names: list[str], seed: int = 0) -> list[Path]:
    """Write the model graphs of the named demos' models for TensorBoard's Graphs tab.

    Each model gets its own run directory under ``logdir`` (``tinymodel/``, ``mynn/``).
    """
    from torch.utils.tensorboard import SummaryWriter

    models = {"tinymodel": (TinyModel, torch.rand(1, 100)), "mynn": (MyNN, torch.zeros(1, 1))}
    written = []
    for name in names:
        if name not in models:
            continue
        torch.manual_seed(seed)
        factory, example = models[name]
        run = logdir / name
        try:
            with SummaryWriter(log_dir=str(run)) as writer, quiet_tracing():
                writer.add_graph(factory(), example)
        except OSError as err:
            raise UsageError(f"cannot write TensorBoard events under {logdir}: {err.strerror or err}") from None
        written.append(run)
    return written


def build_parser() -> ArgumentParser:
    """The ``demo`` command's options."""
    parser = new_parser("demo", "the lab's forward passes by hand and model walk-throughs")
    parser.add_argument("section", nargs="?", default="all", help="forward, tinymodel, linear, mynn or all (default)")
    parser.add_argument(
        "--seed", type=NonNegativeInt, default=0, help="seed for the random parts (the exercise, models)"
    )
    parser.add_argument("--json", action="store_true", help="print the values as JSON instead of text")
    parser.add_argument(
        "--logdir", type=str | None, help="also write the model graphs (tinymodel, mynn) for TensorBoard"
    )
    return parser


def run(args: Namespace) -> int:
    """Run ``demo``: compute the sections, print them, optionally write the graphs."""
    sections = run_demo(args.section, args.seed)
    graphs: list[Path] = []
    if args.logdir:
        names = list(DEMOS) if args.section == "all" else [args.section]
        graphs = write_graphs(Path(args.logdir), names, args.seed)
        if not graphs:
            raise UsageError(
                f"--logdir writes model graphs, and demo {args.section!r} has no model: use tinymodel or mynn"
            )
    if args.json:
        payload = {"sections": [{"title": s.title, "note": s.note, "values": to_plain(s.values)} for s in sections]}
        if graphs:
            payload["graphs"] = [str(p) for p in graphs]
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(format_section(s) for s in sections))
        for path in graphs:
            sys.stdout.write(f"\nModel graph written to {path} (tensorboard --logdir {path.parent}, Graphs tab)\n")
    return 0
