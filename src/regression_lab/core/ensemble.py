"""Many ``MyNN`` members of one hidden size, stacked and evaluated together with ``torch.func``.

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
from regression_lab.core.models import MyNN

#: MyNN's parameter names, as functional_call wants them, and their names as attributes here
#: (a module's attribute names cannot hold dots).
PARAM_NAMES = ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias")
#: The largest seed a lone fit accepts (``seed_everything`` seeds numpy too, which takes 32 bits).
MAX_SEED = 2**32 - 1
#: The most members one ensemble may hold: about 40 MiB of weights at hidden size 8, and the
#: point past which building the members alone takes minutes on a CPU.
MAX_MEMBERS = 1_000_000
#: The most seeds a range like ``0-999`` may expand to (a sweep trains them in chunks).
MAX_SEEDS = 10_000_000


def _attr(name: str) -> str:
    return name.replace(".", "_")


def seeded_mynn(hidden_size: int, seed: int) -> MyNN:
    """``MyNN(hidden_size)`` initialised as after ``torch.manual_seed(seed)``; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MyNN(hidden_size)


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
    """M members of ``MyNN(hidden_size)``; ``forward`` maps x of shape (N, 1) to (M, N, 1).

    The weights are parameters of shape (M, ...) (``linear1_weight`` is (M, h, 1)), so one
    optimizer step updates every member, and each member's gradient is its own. The buffer
    ``seeds`` names the members; ``diverged`` marks those whose loss went non-finite (their
    weights are zeros from then on, see :meth:`retire`).
    """

    def __init__(self, hidden_size: int, seeds: Iterable[int]) -> None:
        """Build the members.

        Args:
            hidden_size: ReLU units of every member.
            seeds: one member per seed, initialised as ``torch.manual_seed(seed); MyNN(hidden_size)``.
        """
        super().__init__()
        check_int("hidden_size", hidden_size, 1)
        seeds = check_seeds(list(seeds))
        self.hidden_size = hidden_size
        # Member s gets the weights `torch.manual_seed(s); MyNN(h)` gives: one MyNN whose layers
        # are re-initialised in construction order after each seed draws exactly what building
        # a new one would, at a third of the cost. The global RNG is restored afterwards.
        state = torch.get_rng_state()
        try:
            net = MyNN(hidden_size)
            layers = [m for m in net.modules() if hasattr(m, "reset_parameters")]
            stacked = {name: torch.empty(len(seeds), *p.shape) for name, p in net.named_parameters()}
            with torch.no_grad():
                for i, seed in enumerate(seeds):
                    torch.manual_seed(seed)
                    for layer in layers:
                        layer.reset_parameters()
                    for name, p in net.named_parameters():
                        stacked[name][i] = p
        finally:
            torch.set_rng_state(state)
        for name in PARAM_NAMES:
            self.register_parameter(_attr(name), nn.Parameter(stacked[name]))
        self.register_buffer("seeds", torch.tensor(seeds, dtype=torch.int64))
        self.register_buffer("diverged", torch.zeros(len(seeds), dtype=torch.bool))
        # A stateless MyNN on the meta device that functional_call fills with each member's
        # weights; kept in a tuple so it is neither a submodule nor part of the state dict.
        self._skeleton = (net.to("meta"),)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], source: str = "checkpoint") -> MyNNStack:
        """Rebuild a stack from its state dict (keys without prefix), checking every shape."""
        w1 = state.get(_attr("linear1.weight"))
        seeds = state.get("seeds")
        if not isinstance(w1, torch.Tensor) or w1.dim() != 3 or w1.shape[2] != 1 or not isinstance(seeds, torch.Tensor):
            raise UsageError(f"not a regression-lab ensemble checkpoint (no stacked linear1 weight): {source}")
        members, hidden = int(w1.shape[0]), int(w1.shape[1])
        if members < 1 or hidden < 1 or members > MAX_MEMBERS:
            raise UsageError(f"ensemble checkpoint has an impossible shape {tuple(w1.shape)}: {source}")
        stack = cls.__new__(cls)
        nn.Module.__init__(stack)
        stack.hidden_size = hidden
        shapes = {
            "linear1.weight": (members, hidden, 1),
            "linear1.bias": (members, hidden),
            "linear2.weight": (members, 1, hidden),
            "linear2.bias": (members, 1),
        }
        for name, shape in shapes.items():
            t = state.get(_attr(name))
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or not t.is_floating_point():
                raise UsageError(f"ensemble checkpoint's {name} is not a float tensor of shape {shape}: {source}")
            stack.register_parameter(_attr(name), nn.Parameter(t.detach().float().clone()))
        diverged = state.get("diverged")
        if diverged is None or tuple(diverged.shape) != (members,) or tuple(seeds.shape) != (members,):
            raise UsageError(f"ensemble checkpoint's seeds or diverged flags do not match its weights: {source}")
        stack.register_buffer("seeds", seeds.to(torch.int64))
        stack.register_buffer("diverged", diverged.to(torch.bool))
        stack._skeleton = (MyNN(hidden).to("meta"),)
        return stack

    def __len__(self) -> int:
        return int(self.seeds.numel())

    def params(self) -> dict[str, torch.Tensor]:
        """The stacked weights under MyNN's own names, as ``functional_call`` takes them."""
        return {name: getattr(self, _attr(name)) for name in PARAM_NAMES}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's prediction: x of shape (N, 1) gives (M, N, 1)."""
        skeleton = self._skeleton[0]

        def one(params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(skeleton, params, (inputs,))

        return vmap(one, in_dims=(0, None))(self.params(), x)

    def member(self, i: int) -> MyNN:
        """Member ``i`` as a lone ``MyNN`` (a copy of its weights)."""
        net = MyNN(self.hidden_size)
        net.load_state_dict({name: t[i].detach().clone() for name, t in self.params().items()})
        return net

    @torch.no_grad()
    def active_units(self, x: torch.Tensor) -> torch.Tensor:
        """Per member, the hidden units that are on for at least one input of ``x``: shape (M,)."""
        pre = torch.baddbmm(self.linear1_bias.unsqueeze(2), self.linear1_weight, x.T.expand(len(self), 1, -1))
        return (pre > 0).any(dim=2).sum(dim=1)

    @torch.no_grad()
    def retire(self, diverged: torch.Tensor | None = None) -> None:
        """Mark members as diverged (those in ``diverged`` and any with non-finite weights) and
        set their weights to zeros.

        A zero member predicts 0, gets zero gradient through its ReLUs and stays zero, so its
        non-finite weights never reach a checkpoint and never touch another member. No host sync.
        """
        for p in self.params().values():
            self.diverged |= ~torch.isfinite(p).flatten(1).all(dim=1)
        if diverged is not None:
            self.diverged |= diverged
        for p in self.params().values():
            p.masked_fill_(self.diverged.view(-1, *([1] * (p.dim() - 1))), 0.0)


#: The prefix of the stacks' weights inside an ensemble LightningModule's state dict.
STACKS_PREFIX = "stacks."


def is_ensemble_state(state: dict[str, object]) -> bool:
    """Whether a checkpoint's state dict holds an ensemble's stacks."""
    return any(isinstance(k, str) and k.startswith(STACKS_PREFIX) for k in state)


def load_stacks(state: dict[str, torch.Tensor], source: str = "checkpoint") -> list[MyNNStack]:
    """The stacks of an ensemble checkpoint's state dict (``stacks.0.linear1_weight`` ...), in order."""
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
