"""The lab's plain PyTorch models: ``MyNN`` (the regressor), ``TinyModel`` (the classifier demo) and ``MyNNStack``,
many ``MyNN`` members evaluated at once with ``torch.func``. No Lightning, so ``predict``, ``serve`` and ``export``
build them with nothing but torch imported. Try it::

    python -c "from regression_lab.models import MyNN, MyNNStack; import torch; \\
        print(MyNN(5), MyNNStack(5, range(3))(torch.ones(2, 1)).shape)"     # (3 members, 2 inputs, 1)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from regression_lab.errors import UsageError, check_int

#: The widest hidden layer accepted (options and checkpoints): ample for the lab, too small for a crafted huge model.
MAX_HIDDEN_SIZE = 10_000
#: The most members one ensemble may hold.
MAX_MEMBERS = 1_000_000
#: The largest seed (``seed_everything`` seeds NumPy too, which takes 32 bits).
MAX_SEED = 2**32 - 1


class MyNN(nn.Module):
    """The lab's regressor: Linear(1, h) -> ReLU -> Linear(h, 1), no output activation."""

    def __init__(self, hidden_size: int = 5) -> None:
        """Build the network.

        Args:
            hidden_size: ReLU units of the single hidden layer, 1 to :data:`MAX_HIDDEN_SIZE`.
        """
        super().__init__()
        self.hidden_size = check_int("hidden_size", hidden_size, 1, MAX_HIDDEN_SIZE)
        self.linear1 = nn.Linear(1, hidden_size)
        self.activation = nn.ReLU()
        # Regression outputs any real number, so the output layer has no activation.
        self.linear2 = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs of shape (N, 1) to predictions of shape (N, 1)."""
        return self.linear2(self.activation(self.linear1(x)))


class TinyModel(nn.Module):
    """The lab's classifier demo: Linear(100, 200) -> ReLU -> Linear(200, 10) -> Softmax."""

    def __init__(self, in_features: int = 100, hidden_size: int = 200, num_classes: int = 10) -> None:
        """Build the network.

        Args:
            in_features: size of each input sample.
            hidden_size: width of the hidden layer.
            num_classes: number of output probabilities.
        """
        super().__init__()
        self.linear1 = nn.Linear(in_features, hidden_size)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(hidden_size, num_classes)
        # The lab's nn.Softmax() had no dim; the class scores are the last dimension.
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs of shape (..., in_features) to class probabilities of shape (..., num_classes)."""
        return self.softmax(self.linear2(self.activation(self.linear1(x))))


def check_seeds(seeds: Iterable[int], what: str = "seeds") -> list[int]:
    """The seeds as a list of distinct ints in ``[0, MAX_SEED]``, or :class:`UsageError`."""
    seeds = list(seeds)
    if not seeds:
        raise UsageError(f"{what} is empty: give at least one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
            raise UsageError(f"{what} must be integers in [0, {MAX_SEED}], got {s!r}")
    if len(set(seeds)) < len(seeds):
        raise UsageError(f"{what} repeats a seed")
    return seeds


def mt19937_streams(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` 32-bit words torch's CPU generator gives after ``manual_seed(seed)``, for each seed: (M, n).

    The generator is MT19937 (Matsumoto and Nishimura, 1998): its seeding recurrence, then its state twisted word by
    word in place and tempered, as the reference algorithm does, on int64 tensors that hold every seed at once."""
    mt = [seeds & 0xFFFFFFFF]
    for j in range(1, 624):
        mt.append((1812433253 * (mt[-1] ^ (mt[-1] >> 30)) + j) & 0xFFFFFFFF)
    words = []
    for k in range(n):  # the twist of word i reads word i + 397: still the old one for i < 227, then the new
        i = k % 624
        mixed = (mt[i] & 0x80000000) | (mt[(i + 1) % 624] & 0x7FFFFFFF)
        mt[i] = mt[(i + 397) % 624] ^ (mixed >> 1) ^ ((mixed & 1) * 0x9908B0DF)
        words.append(mt[i])
    y = torch.stack(words, dim=1)
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    return y ^ (y >> 18)


def uniform_from(words: torch.Tensor, bound: float) -> torch.Tensor:
    """What float32 ``uniform_(-bound, bound)`` makes of the generator's ``words``: u from each word's low 24 bits,
    then u * (to - from) + from, exact in float64 and rounded once (where :func:`uniform_rounds_once`)."""
    b = float(torch.tensor(bound, dtype=torch.float32))  # uniform_ takes its bounds as float32
    return ((words & 0xFFFFFF).double() * 2**-24 * (2 * b) - b).float()


@functools.cache
def uniform_rounds_once() -> bool:
    """Whether this torch's CPU ``uniform_`` is :func:`uniform_from`: rounded once (the fused multiply-add its AVX2 and
    AVX-512 kernels compile to; its baseline kernel rounds twice)."""
    drawn = torch.empty(64).uniform_(-1 / math.sqrt(5), 1 / math.sqrt(5), generator=torch.Generator().manual_seed(0))
    return torch.equal(drawn, uniform_from(mt19937_streams(torch.tensor([0]), 64)[0], 1 / math.sqrt(5)))


class MyNNStack(nn.Module):
    """M members of ``MyNN``, possibly of different hidden sizes; x (N, 1) gives (M, N, 1).

    All weights are one parameter ``weights`` (M, 3H + 1): per member ``linear1.weight``, ``linear1.bias``,
    ``linear2.weight`` (H each, padded to the largest hidden size H) and ``linear2.bias``. Padding is exact for SGD,
    momentum and weight decay too: a padding unit's ReLU is off, so it adds 0 and gets zero gradient. The buffers
    ``seeds`` and ``hidden_sizes`` name the members; ``diverged`` marks those gone non-finite (:meth:`retire`)."""

    def __init__(
        self, hidden_sizes: int | Sequence[int], seeds: Iterable[int], weights: torch.Tensor | None = None
    ) -> None:
        """Build the members.

        Args:
            hidden_sizes: ReLU units of every member, or one hidden size per member.
            seeds: one member per seed, initialised as ``torch.manual_seed(seed); MyNN(h)`` is.
            weights: the members' stacked weights (M, 3H + 1) instead of initialising them (a checkpoint's, checked).
        """
        super().__init__()
        seeds = list(seeds)
        sizes = [hidden_sizes] * len(seeds) if isinstance(hidden_sizes, int) else list(hidden_sizes)
        if len(sizes) != len(seeds):
            raise UsageError(f"got {len(sizes)} hidden sizes for {len(seeds)} seeds")
        for h in set(sizes):
            check_int("hidden_size", h, 1, MAX_HIDDEN_SIZE)
        self.width = width = max(sizes)
        if weights is None:  # drawn on the CPU, where `torch.manual_seed(s); MyNN(h)` draws, whatever the default
            with torch.device("cpu"):
                weights = self._initial_weights(sizes, seeds, width)
            weights = weights.to(torch.get_default_device())
        self.weights = nn.Parameter(weights)
        self.register_buffer("seeds", torch.tensor(seeds, dtype=torch.int64))
        self.register_buffer("hidden_sizes", torch.tensor(sizes, dtype=torch.int64))
        self.register_buffer("diverged", torch.zeros(len(seeds), dtype=torch.bool))

    @staticmethod
    def _initial_weights(sizes: list[int], seeds: list[int], width: int) -> torch.Tensor:
        # Member i gets exactly what `torch.manual_seed(seed); MyNN(h)` draws: nn.Linear's kaiming_uniform_ on each
        # weight and U(+-1/sqrt(fan_in)) on each bias, layer by layer. All members at once from the CPU generator's
        # stream (mt19937_streams) where uniform_ is known to round as reproduced here; else (a float64 default dtype
        # too), and for members past one state's 624 words, one by one by torch's init (the global RNG restored after).
        weights = torch.zeros(len(seeds), 3 * width + 1)
        at_once = {h for h in sizes if weights.dtype == torch.float32 and uniform_rounds_once() and 3 * h + 1 <= 624}
        state = torch.get_rng_state()
        try:
            with torch.no_grad():
                for i in [i for i, h in enumerate(sizes) if h not in at_once]:
                    row, h = weights[i], sizes[i]
                    torch.default_generator.manual_seed(seeds[i])  # the CPU's only, as MyNN's init draws
                    nn.init.kaiming_uniform_(row[:h].view(h, 1), a=math.sqrt(5))
                    nn.init.uniform_(row[width : width + h], -1.0, 1.0)  # fan_in 1
                    nn.init.kaiming_uniform_(row[2 * width : 2 * width + h].view(1, h), a=math.sqrt(5))
                    nn.init.uniform_(row[3 * width :], -1 / math.sqrt(h), 1 / math.sqrt(h))
        finally:
            torch.set_rng_state(state)
        gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))
        sizes_t, seeds_t = torch.tensor(sizes), torch.tensor(seeds)
        for h in at_once:
            kaiming = [math.sqrt(3.0) * (gain / math.sqrt(fan)) for fan in (1, h)]  # kaiming_uniform_'s bound
            bounds = [(0, h, kaiming[0]), (width, h, 1.0), (2 * width, h, kaiming[1]), (3 * width, 1, 1 / math.sqrt(h))]
            chunk = 2**23 // (624 + 3 * h)  # members whose generator words (int64) fill 64 MiB
            for rows in (sizes_t == h).nonzero().squeeze(1).split(chunk):
                words, drawn = mt19937_streams(seeds_t[rows], 3 * h + 1), 0
                for column, count, bound in bounds:
                    weights[rows, column : column + count] = uniform_from(words[:, drawn : drawn + count], bound)
                    drawn += count
        return weights

    def __len__(self) -> int:
        return int(self.seeds.numel())

    def params(self) -> dict[str, torch.Tensor]:
        """The members' weights as views with MyNN's names and shapes, behind a member axis."""
        w, h = self.weights, self.width
        return {
            "linear1.weight": w[:, :h].unsqueeze(2),
            "linear1.bias": w[:, h : 2 * h],
            "linear2.weight": w[:, 2 * h : 3 * h].unsqueeze(1),
            "linear2.bias": w[:, 3 * h :],
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's prediction: x of shape (N, 1) gives (M, N, 1). MyNN's two layers as batched matrix products
        over the members: the arithmetic of ``MyNN`` on each member's weights, in three kernels for all of them."""
        p = self.params()
        hidden = torch.baddbmm(p["linear1.bias"].unsqueeze(1), x.expand(len(self), -1, -1), p["linear1.weight"].mT)
        return torch.baddbmm(p["linear2.bias"].unsqueeze(1), torch.relu(hidden), p["linear2.weight"].mT)

    def member(self, i: int) -> MyNN:
        """Member ``i`` as a lone ``MyNN`` of its own hidden size (a copy of its weights)."""
        net, row, h = MyNN(int(self.hidden_sizes[i])), self.weights[i].detach(), self.width
        parts = zip((0, h, 2 * h, 3 * h), net.named_parameters(), strict=True)
        net.load_state_dict({n: row[s : s + p.numel()].reshape(p.shape).clone() for s, (n, p) in parts})
        return net

    @torch.no_grad()
    def active_units(self, x: torch.Tensor) -> torch.Tensor:
        """Per member, the hidden units on for at least one input of ``x``, shape (M,) (never a padding unit)."""
        p = self.params()
        pre = torch.baddbmm(p["linear1.bias"].unsqueeze(2), p["linear1.weight"], x.T.expand(len(self), 1, -1))
        return (pre > 0).any(dim=2).sum(dim=1)

    @torch.no_grad()
    def retire(self) -> None:
        """Mark members with a non-finite weight diverged and zero them all (they get no gradient). No host sync."""
        # A row's sum is non-finite exactly when one of its weights is (in float64 no sum of float32s overflows):
        # one reduction over each row, where isfinite(...).all(dim=1) is an element-wise pass and a boolean one.
        self.diverged |= ~torch.isfinite(self.weights.sum(dim=1, dtype=torch.float64))
        self.weights.masked_fill_(self.diverged.unsqueeze(1), 0.0)
