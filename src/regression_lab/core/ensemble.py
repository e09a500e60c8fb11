"""Many ``MyNN`` members, stacked and evaluated together with ``torch.func``.

The standard PyTorch recipe for model ensembles: build each member as a lone ``MyNN`` (so
member ``s`` starts from exactly the weights ``torch.manual_seed(s); MyNN(h)`` gives, which is
what ``regression-lab fit --seed_everything s`` trains), stack their weights (as
``torch.func.stack_module_state`` does) and evaluate all of them in one call with ``vmap`` over
``functional_call``. Torch only, so ``predict`` loads ensemble checkpoints without Lightning::

    python -c "from regression_lab.core.ensemble import MyNNStack; import torch; \\
        print(MyNNStack(5, range(3))(torch.ones(2, 1)).shape)"     # (3 members, 2 inputs, 1)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from regression_lab.core.errors import UsageError, check_int
from regression_lab.core.models import MAX_HIDDEN_SIZE, MyNN

#: The largest seed a lone fit accepts (``seed_everything`` seeds numpy too, which takes 32 bits).
MAX_SEED = 2**32 - 1
#: The most members one ensemble may hold: about 40 MiB of weights at hidden size 8, and the
#: point past which building the members alone takes minutes on a CPU.
MAX_MEMBERS = 1_000_000
#: The most seeds a range like ``0-999`` may expand to.
MAX_SEEDS = 10_000_000


def check_seeds(seeds: Sequence[int], what: str = "seeds") -> list[int]:
    """The seeds as a list of ints in ``[0, MAX_SEED]``, or :class:`UsageError`."""
    seeds = list(seeds)
    if not seeds:
        raise UsageError(f"{what} is empty: give at least one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
            raise UsageError(f"{what} must be integers in [0, {MAX_SEED}], got {s!r}")
    return seeds


def parse_seeds(values: Iterable[str | int]) -> list[int]:
    """Seeds from the command line: integers and inclusive ranges, ``["0-999"]`` or ``["0", "1", "7"]``.

    Raises :class:`UsageError` for an empty or reversed range, a negative seed, or more than
    :data:`MAX_SEEDS` seeds in all.
    """
    seeds: list[int] = []
    for value in values:
        text = str(value).strip()
        first, sep, last = text.partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise UsageError(f"--seeds takes integers >= 0 or ranges like 0-999, got {text!r}") from None
        if not 0 <= lo <= MAX_SEED or not 0 <= hi <= MAX_SEED:
            raise UsageError(f"--seeds must lie in [0, {MAX_SEED}], got {text!r}")
        if hi < lo:
            raise UsageError(f"--seeds range {text!r} is reversed: write {hi}-{lo}")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise UsageError(f"--seeds asks for more than {MAX_SEEDS:,} seeds")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise UsageError("--seeds is empty: give at least one seed")
    return seeds


def check_memory(members: int, hidden_size: int, samples: int, what: str = "the ensemble") -> None:
    """Refuse, with :class:`UsageError`, an ensemble whose training would not fit in memory.

    The estimate counts weights, gradients, momentum and the initial weights (4 copies of
    ``3h + 1`` floats a member) and the activations of one batch kept for the backward pass
    (about 4 tensors of ``samples x h`` a member), against half of this machine's memory.
    """
    if members > MAX_MEMBERS:
        raise UsageError(f"{what} has {members:,} members, more than the {MAX_MEMBERS:,} allowed; use fewer seeds")
    need = 4 * members * (4 * (3 * hidden_size + 1) + 4 * samples * hidden_size + 2 * samples)
    try:
        budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # not a POSIX system: trust the member cap
        return
    if need > budget:
        raise UsageError(
            f"{what} of {members:,} members on {samples:,} samples at once needs about "
            f"{need / 2**30:.1f} GiB, more than half of this machine's memory: use fewer seeds or fewer samples"
        )


class MyNNStack(nn.Module):
    """M members of ``MyNN``, possibly of different hidden sizes; ``forward`` maps x (N, 1) to (M, N, 1).

    All weights are one parameter ``weights`` of shape (M, 3H + 1), a row per member, padded
    to the largest hidden size H: ``linear1.weight`` (H), ``linear1.bias`` (H),
    ``linear2.weight`` (H), ``linear2.bias`` (1), viewed as MyNN's shapes in :meth:`params`.
    One optimizer step updates every member, each with exactly its own gradient, and one check
    finds every member with a non-finite weight. Padding is exact for SGD, with or without
    momentum and weight decay: a padding unit has zero weights and bias, so its ReLU is off, it
    adds 0 to the output and gets zero gradient, and it stays zero. The buffers ``seeds`` and
    ``hidden_sizes`` name the members; ``diverged`` marks those whose loss or weights went
    non-finite (their weights are zeros from then on, see :meth:`retire`).
    """

    def __init__(self, hidden_sizes: int | Sequence[int], seeds: Iterable[int]) -> None:
        """Build the members.

        Args:
            hidden_sizes: ReLU units of every member, or one hidden size per member.
            seeds: one member per seed, initialised as ``torch.manual_seed(seed); MyNN(hidden_size)``.
        """
        super().__init__()
        seeds = check_seeds(list(seeds))
        sizes = [hidden_sizes] * len(seeds) if isinstance(hidden_sizes, int) else list(hidden_sizes)
        if len(sizes) != len(seeds):
            raise UsageError(f"got {len(sizes)} hidden sizes for {len(seeds)} seeds")
        for h in sizes:
            check_int("hidden_size", h, 1)
        self.width = width = max(sizes)
        weights = torch.zeros(len(seeds), 3 * width + 1)
        # Member i gets the weights `torch.manual_seed(seed); MyNN(h)` gives: one MyNN per size
        # whose layers are re-initialised in construction order after each seed, which draws
        # exactly what building a new one would, at a third of the cost. The global RNG is
        # restored afterwards.
        state = torch.get_rng_state()
        try:
            nets = {h: MyNN(h) for h in sorted(set(sizes))}
            with torch.no_grad():
                for i, (h, seed) in enumerate(zip(sizes, seeds, strict=True)):
                    # Only the CPU generator, which MyNN's init draws from: torch.manual_seed
                    # also queues a seed for every CUDA device, about 1 ms a call.
                    torch.default_generator.manual_seed(seed)
                    net = nets[h]
                    for layer in net.modules():
                        if hasattr(layer, "reset_parameters"):
                            layer.reset_parameters()
                    row = weights[i]
                    for start, p in zip(self._offsets(width), net.parameters(), strict=True):
                        row[start : start + p.numel()] = p.flatten()
        finally:
            torch.set_rng_state(state)
        self.weights = nn.Parameter(weights)
        self.register_buffer("seeds", torch.tensor(seeds, dtype=torch.int64))
        self.register_buffer("hidden_sizes", torch.tensor(sizes, dtype=torch.int64))
        self.register_buffer("diverged", torch.zeros(len(seeds), dtype=torch.bool))
        self._make_skeleton()

    @staticmethod
    def _offsets(width: int) -> tuple[int, int, int, int]:
        """Where each of MyNN's parameters (in its own order) starts in a row, for ``width`` units."""
        return 0, width, 2 * width, 3 * width

    def _make_skeleton(self) -> None:
        # A stateless MyNN that functional_call fills with each member's weights, on the meta
        # device (no weights drawn, no RNG used); a tuple keeps it out of the state dict.
        with torch.device("meta"):
            self._skeleton = (MyNN(self.width),)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], source: str = "checkpoint") -> MyNNStack:
        """Rebuild a stack from its state dict (keys without prefix), checking every shape."""
        weights = state.get("weights")
        if not isinstance(weights, torch.Tensor) or weights.dim() != 2 or not weights.is_floating_point():
            raise UsageError(f"not a regression-lab ensemble checkpoint (no stacked weights): {source}")
        members, columns = int(weights.shape[0]), int(weights.shape[1])
        if (
            members < 1
            or members > MAX_MEMBERS
            or columns < 4
            or (columns - 1) % 3
            or columns > 3 * MAX_HIDDEN_SIZE + 1
        ):
            raise UsageError(f"ensemble checkpoint's weights have an impossible shape {tuple(weights.shape)}: {source}")
        if weights.is_complex() or not bool(torch.isfinite(weights).all()):
            raise UsageError(f"ensemble checkpoint's weights are not all finite real numbers: {source}")
        stack = cls.__new__(cls)
        nn.Module.__init__(stack)
        stack.width = (columns - 1) // 3
        stack.weights = nn.Parameter(weights.detach().float().clone())
        for name, dtype in (("seeds", torch.int64), ("hidden_sizes", torch.int64), ("diverged", torch.bool)):
            t = state.get(name)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != (members,):
                raise UsageError(f"ensemble checkpoint's {name} does not match its {members} members: {source}")
            stack.register_buffer(name, t.to(dtype))
        if not bool(((stack.hidden_sizes >= 1) & (stack.hidden_sizes <= stack.width)).all()):
            raise UsageError(f"ensemble checkpoint's hidden sizes do not fit its weights: {source}")
        stack._make_skeleton()
        return stack

    def __len__(self) -> int:
        return int(self.seeds.numel())

    def params(self) -> dict[str, torch.Tensor]:
        """The members' weights as views under MyNN's own names and shapes (with a member axis)."""
        w, h = self.weights, self.width
        w1, b1, w2, b2 = self._offsets(h)
        return {
            "linear1.weight": w[:, w1 : w1 + h].unsqueeze(2),
            "linear1.bias": w[:, b1 : b1 + h],
            "linear2.weight": w[:, w2 : w2 + h].unsqueeze(1),
            "linear2.bias": w[:, b2 : b2 + 1],
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's prediction: x of shape (N, 1) gives (M, N, 1)."""
        skeleton = self._skeleton[0]

        def one(params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(skeleton, params, (inputs,))

        return vmap(one, in_dims=(0, None))(self.params(), x)

    def member(self, i: int) -> MyNN:
        """Member ``i`` as a lone ``MyNN`` of its own hidden size (a copy of its weights)."""
        net = MyNN(int(self.hidden_sizes[i]))
        row = self.weights[i].detach()
        net.load_state_dict(
            {
                name: row[start : start + p.numel()].reshape(p.shape).clone()
                for start, (name, p) in zip(self._offsets(self.width), net.named_parameters(), strict=True)
            }
        )
        return net

    @torch.no_grad()
    def active_units(self, x: torch.Tensor) -> torch.Tensor:
        """Per member, the hidden units that are on for at least one input of ``x``: shape (M,).

        Padding units are never on (their pre-activation is 0), so they never count.
        """
        p = self.params()
        pre = torch.baddbmm(p["linear1.bias"].unsqueeze(2), p["linear1.weight"], x.T.expand(len(self), 1, -1))
        return (pre > 0).any(dim=2).sum(dim=1)

    @torch.no_grad()
    def retire(self) -> None:
        """Mark members with a non-finite weight as diverged, and set every diverged member's
        weights to zeros.

        A zero member predicts 0, gets zero gradient through its ReLUs and stays zero, so its
        non-finite weights never reach a checkpoint and never touch another member. No host sync.
        """
        self.diverged |= ~torch.isfinite(self.weights).all(dim=1)
        self.weights.masked_fill_(self.diverged.unsqueeze(1), 0.0)


#: The prefix of the stacks' weights inside an ensemble LightningModule's state dict.
STACKS_PREFIX = "stacks."


def is_ensemble_state(state: dict[str, object]) -> bool:
    """Whether a checkpoint's state dict holds an ensemble's stacks."""
    return any(isinstance(k, str) and k.startswith(STACKS_PREFIX) for k in state)


def load_stacks(state: dict[str, torch.Tensor], source: str = "checkpoint") -> list[MyNNStack]:
    """The stacks of an ensemble checkpoint's state dict (``stacks.0.weights`` ...), in order."""
    groups: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if not key.startswith(STACKS_PREFIX):
            continue
        index, _, name = key[len(STACKS_PREFIX) :].partition(".")
        if not index.isdigit() or len(index) > 6:
            raise UsageError(f"ensemble checkpoint has an unexpected key {key!r}: {source}")
        groups.setdefault(int(index), {})[name] = value
    if sorted(groups) != list(range(len(groups))):
        raise UsageError(f"ensemble checkpoint's stacks are not numbered 0..{len(groups) - 1}: {source}")
    stacks = [MyNNStack.from_state(groups[i], source) for i in range(len(groups))]
    if sum(len(s) for s in stacks) > MAX_MEMBERS:
        raise UsageError(f"ensemble checkpoint has more than {MAX_MEMBERS:,} members: {source}")
    return stacks
