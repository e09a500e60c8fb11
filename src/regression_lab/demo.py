"""The ``demo`` command: the lab's part A, forward passes by hand, with NumPy and with torch, and
walk-throughs of ``TinyModel``, ``nn.Linear`` and ``MyNN``. No Lightning: it starts fast. Run it::

    regression-lab demo                 # every section (forward, tinymodel, linear, mynn)
    regression-lab demo tinymodel --seed 3 --json --logdir lightning_logs/graphs   # and its graph for TensorBoard
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace
from torch import nn

from regression_lab.errors import UsageError, check_int, command_parser, refused_os_errors
from regression_lab.models import MAX_SEED, MyNN, TinyModel
from regression_lab.notices import quiet_notices

# The lab's numbers: one sample of four features, three neurons, and a batch of three samples.
INPUTS = [0.8, 1.3, 2.5, 2.0]
WEIGHTS = [[2.5, 1.7, -0.5, 1.0], [0.5, -0.91, 0.26, -0.5], [-0.26, -0.27, 0.17, 0.87]]
BIASES = [2.0, 3.0, 0.5]
BATCH = [[0.8, 1.3, 2.5, 2.0], [2.3, 1.5, 3.8, 4.5], [-1.5, 2.7, 3.3, -0.8]]


class Section(NamedTuple):
    """What a demo section computed: a title, its teaching point, and named values."""

    title: str
    note: str
    values: dict[str, Any]


def perceptron(seed: int = 0) -> Section:
    """One neuron with three inputs, a bias, and a step function."""
    inputs, weights, bias = [0.8, 1.3, 2.5], [2.5, 1.7, -0.5], 2.0
    total = inputs[0] * weights[0] + inputs[1] * weights[1] + inputs[2] * weights[2] + bias
    note = ("Each input is scaled by its weight, the neuron adds its one bias, and a step function turns the sum "
            "into 0 or 1 (1 when the sum is >= 0).")  # fmt: skip
    values = dict(inputs=inputs, weights=weights, bias=bias, weighted_sum=total, step_output=int(total >= 0))
    return Section("The perceptron (one neuron)", note, values)


def three_neurons(seed: int = 0) -> Section:
    """Three neurons over four inputs, every product written out."""
    x, (w1, w2, w3), (b1, b2, b3) = INPUTS, WEIGHTS, BIASES
    outputs = [
        x[0] * w1[0] + x[1] * w1[1] + x[2] * w1[2] + x[3] * w1[3] + b1,
        x[0] * w2[0] + x[1] * w2[1] + x[2] * w2[2] + x[3] * w2[3] + b2,
        x[0] * w3[0] + x[1] * w3[1] + x[2] * w3[2] + x[3] * w3[3] + b3,
    ]
    note = "Every neuron has its own weight for each input and one bias: three neurons, three biases, three outputs."
    return Section("Three neurons, written out", note, dict(inputs=x, outputs=outputs))


def loops_and_dot(seed: int = 0) -> Section:
    """The same layer with loops over weights and biases, then with NumPy's dot product."""
    looped = []
    for weights, bias in zip(WEIGHTS, BIASES, strict=True):
        total = 0.0
        for x, w in zip(INPUTS, weights, strict=True):
            total += x * w
        looped.append(total + bias)
    note = ("A loop over (weights, bias) pairs gives the same layer; np.dot(weights, inputs) does it at once "
            "(weights first: matrix . vector), like y = w x + b for each neuron.")  # fmt: skip
    one = float(np.dot(np.array(WEIGHTS[0]), np.array(INPUTS)) + BIASES[0])
    layer = np.dot(np.array(WEIGHTS), np.array(INPUTS)) + np.array(BIASES)
    return Section("Loops, then NumPy dot products", note, dict(looped=looped, numpy_one_neuron=one, numpy_layer=layer))


def batch_of_samples(seed: int = 0) -> Section:
    """A batch of three samples through the layer: inputs @ weights.T + biases."""
    out = np.array(BATCH) @ np.array(WEIGHTS).T + np.array(BIASES)
    note = ("Each row of the input is a sample and each row of the output that sample's three neuron outputs; the "
            "weights are transposed so the inner sizes (4) match.")  # fmt: skip
    return Section("A batch: inputs @ weights.T + biases", note, dict(outputs=out, shape=list(out.shape)))


def tensors(seed: int = 0) -> Section:
    """torch's dot, mm, matmul and @, and how torch.dot differs from np.dot."""
    a, b = torch.tensor([[0, 1, 2], [1, 2, 3]]), torch.tensor([[0, 1], [1, 1], [1, 3]])
    x, w, bias = torch.tensor(BATCH), torch.tensor(WEIGHTS), torch.tensor(BIASES)
    matmul, mm, at = torch.matmul(x, torch.transpose(w, 0, 1)) + bias, x.mm(w.T) + bias, x @ w.T + bias
    try:  # np.dot multiplies 2-D arrays as matrices; torch.dot only takes 1-D vectors
        torch.dot(a, b)
        refused = "no error"
    except RuntimeError as err:
        refused = f"RuntimeError: {str(err).splitlines()[0]}"
    note = ("torch.dot is the inner product of two 1-D vectors; for matrices use torch.mm, torch.matmul, .mm or @, "
            "which all give the same batch output. np.dot on 2-D arrays is a matrix product; "
            "torch.dot refuses them.")  # fmt: skip
    same = bool(torch.equal(matmul, mm) and torch.equal(mm, at))
    values = dict(torch_dot=torch.dot(torch.tensor([1, 2]), torch.tensor([3, 2])), torch_mm=torch.mm(a, b),
                  batch_matmul=matmul, batch_mm=mm, batch_at=at, all_three_equal=same,
                  np_dot_2d=np.dot(a.numpy(), b.numpy()), torch_dot_2d=refused)  # fmt: skip
    return Section("Tensors: dot, mm, matmul and @", note, values)


def relu_exercise(seed: int = 0) -> Section:
    """The lab's exercise done right: 5 random inputs, 2 ReLU neurons, one matmul."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.rand(5, generator=gen)
    weights, biases = torch.randn(2, 5, generator=gen), torch.randn(2, generator=gen)
    total = weights @ inputs + biases
    note = ("Inputs from torch.rand (0..1), weights and biases from torch.randn; one matrix product for both "
            "neurons, then ReLU: a negative weighted sum becomes 0, a positive one passes unchanged.")  # fmt: skip
    values = dict(seed=seed, inputs=inputs, weights=weights, biases=biases, weighted_sum=total,
                  outputs=torch.relu(total))  # fmt: skip
    return Section("Exercise: 5 inputs, 2 ReLU neurons", note, values)


def tinymodel(seed: int = 0) -> Section:
    """TinyModel inspected: its layers, the last layer's parameters, counts, a forward pass."""
    torch.manual_seed(seed)  # nn.Linear initialises from the global generator
    model = TinyModel()
    with torch.no_grad():
        probs = model(torch.rand(4, 100, generator=torch.Generator().manual_seed(seed)))
    counts = {name: p.numel() for name, p in model.named_parameters()}
    note = ("print(model) shows the layers; each Linear holds a weight (out, in) and a bias (out). Parameters have "
            "requires_grad=True so training can follow their gradients. Softmax over the last dimension turns each "
            "row of 10 scores into probabilities.")  # fmt: skip
    values = dict(architecture=str(model), one_layer=str(model.linear2),
                  linear2_weight_shape=list(model.linear2.weight.shape), linear2_bias=model.linear2.bias.detach(),
                  requires_grad=all(p.requires_grad for p in model.parameters()), parameter_counts=counts,
                  total_parameters=sum(counts.values()), batch_output_shape=list(probs.shape),
                  row_sums=probs.sum(dim=-1))  # fmt: skip
    return Section("TinyModel: 100 -> 200 -> 10, softmax", note, values)


def linear_layer(seed: int = 0) -> Section:
    """nn.Linear(3, 2) on a (1, 3) input, checked against x @ W.T + b."""
    torch.manual_seed(seed)
    lin, x = nn.Linear(3, 2), torch.rand(1, 3)
    with torch.no_grad():
        y, by_hand = lin(x), x @ lin.weight.T + lin.bias
    note = ("The weight is stored as (out_features, in_features) = (2, 3), so the layer computes x @ W.T + b; "
            "weights scale the inputs, the biases shift the outputs.")  # fmt: skip
    values = dict(input=x, weight=lin.weight.detach(), bias=lin.bias.detach(), weight_shape=list(lin.weight.shape),
                  output=y, x_WT_plus_b=by_hand, identity_holds=bool(torch.allclose(y, by_hand)),
                  requires_grad=lin.weight.requires_grad and lin.bias.requires_grad)  # fmt: skip
    return Section("nn.Linear(3, 2)", note, values)


def mynn(seed: int = 0) -> Section:
    """MyNN inspected: the regressor the rest of the project trains."""
    torch.manual_seed(seed)
    model = MyNN(5)
    counts = {name: p.numel() for name, p in model.named_parameters()}
    note = ("One input, one output, a ReLU hidden layer and no output activation: a regression network. "
            "`regression-lab fit` trains it on y = 3x + 2.")  # fmt: skip
    # The weights `fit --seed_everything SEED` starts from, in MyNN's order (a checkpoint's initial_state).
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    values = dict(architecture=str(model), parameter_counts=counts, total_parameters=len(start), initial_weights=start)
    return Section("MyNN(5): 1 -> 5 -> 1", note, values)


#: Sections per demo name; ``all`` runs every one in this order.
DEMOS = {
    "forward": [perceptron, three_neurons, loops_and_dot, batch_of_samples, tensors, relu_exercise],
    "tinymodel": [tinymodel],
    "linear": [linear_layer],
    "mynn": [mynn],
}
#: The model (and the shape of an example input) whose graph ``--logdir`` writes, per demo.
GRAPHS = {"tinymodel": (TinyModel, (1, 100)), "mynn": (MyNN, (1, 1))}


def run_demo(name: str, seed: int) -> list[Section]:
    """The sections of demo ``name`` (``forward``, ``tinymodel``, ``linear``, ``mynn`` or ``all``)."""
    if name != "all" and name not in DEMOS:
        raise UsageError(f"unknown demo {name!r}: choose from {', '.join([*DEMOS, 'all'])}")
    check_int("--seed", seed, 0, MAX_SEED)
    return [fn(seed) for n in (DEMOS if name == "all" else [name]) for fn in DEMOS[n]]


def format_section(section: Section) -> str:
    """A section as readable text: title, teaching point, then each value."""
    lines = [f"== {section.title} ==", section.note, ""]
    for key, value in section.values.items():
        # Six significant digits hide float noise (6.960000000000001) yet keep the lab's 1.867.
        if isinstance(value, (torch.Tensor, np.ndarray)):
            text = np.array2string(np.asarray(value.tolist()), precision=4, suppress_small=True, floatmode="maxprec")
        elif isinstance(value, float):
            text = f"{value:.6g}"
        elif isinstance(value, list) and value and all(isinstance(v, float) for v in value):
            text = "[" + ", ".join(f"{v:.6g}" for v in value) + "]"
        else:
            text = str(value)
        lines += [f"{key}:", *("    " + line for line in text.splitlines())] if "\n" in text else [f"{key}: {text}"]
    return "\n".join(lines) + "\n"


def write_graphs(logdir: Path, names: list[str], seed: int) -> list[Path]:
    """The graphs of the named demos' models, a TensorBoard run each under ``logdir``."""
    from torch.utils.tensorboard import SummaryWriter

    written = [logdir / name for name in names if name in GRAPHS]
    for path in written:
        torch.manual_seed(seed)
        model, shape = GRAPHS[path.name]
        with refused_os_errors(f"cannot write TensorBoard events under {logdir}"):
            with SummaryWriter(log_dir=str(path)) as writer, quiet_notices():  # torch.jit.trace's deprecation
                writer.add_graph(model(), torch.rand(shape))
    return written


def build_parser() -> ArgumentParser:
    parser = command_parser("demo", __doc__)
    add = parser.add_argument
    add("section", nargs="?", default="all", help="forward, tinymodel, linear, mynn or all (default)")
    add("--seed", type=int, default=0, help="seed for the random parts (the exercise, models)")
    add("--json", action="store_true", help="print the values as JSON instead of text")
    add("--logdir", type=str | None, help="also write the model graphs (tinymodel, mynn) for TensorBoard")
    return parser


def run(args: Namespace) -> None:
    """Compute the sections, print them, and write the graphs with ``--logdir``."""
    sections = run_demo(args.section, args.seed)
    names = list(DEMOS) if args.section == "all" else [args.section]
    graphs = write_graphs(Path(args.logdir), names, args.seed) if args.logdir else []
    if args.logdir and not graphs:
        raise UsageError(f"--logdir writes model graphs, and demo {args.section!r} has no model: use tinymodel or mynn")
    if args.json:
        payload = {"sections": [{"title": s.title, "note": s.note, "values": s.values} for s in sections]}
        payload.update({"graphs": [str(p) for p in graphs]} if graphs else {})
        print(json.dumps(payload, indent=2, default=lambda v: v.tolist()))  # tensors and arrays as lists
        return
    sys.stdout.write("\n".join(format_section(s) for s in sections))
    for path in graphs:
        sys.stdout.write(f"\nModel graph written to {path} (tensorboard --logdir {path.parent}, Graphs tab)\n")
