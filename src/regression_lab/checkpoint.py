"""The one checkpoint reader: ``torch.load(..., weights_only=True)``, then every value checked before use, for
``predict``, ``serve``, ``export``, ``landscape``, ``validate``, ``test`` and resume. Torch only::

    from regression_lab.checkpoint import load_model
    model, ckpt = load_model("lightning_logs/version_0/checkpoints/last.ckpt")   # MyNN, or stacks
"""

from __future__ import annotations

import contextlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from regression_lab.errors import UsageError
from regression_lab.models import MAX_HIDDEN_SIZE, MAX_MEMBERS, MyNN, MyNNStack

#: Where ``fit`` keeps the weights from before training (the landscape's interpolation starts there).
INITIAL_STATE_KEY = "initial_state_dict"
#: Where ``fit --trajectory_every N`` keeps the weights every N epochs, in its run (not in every checkpoint).
TRAJECTORY_FILE = "trajectory.pt"
#: The paths Lightning's ModelCheckpoint keeps in its state; resumed, it removes files by them as it saves new ones.
CALLBACK_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")
#: An ensemble setting's tensors (``stacks.N.<name>``) for M members of width H.
STACK_SHAPES = {"weights": ("M", "3H+1"), "seeds": ("M",), "hidden_sizes": ("M",), "diverged": ("M",)}
STACK_KEY = re.compile(rf"stacks\.(\d{{1,6}})\.({'|'.join(STACK_SHAPES)})")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file as a dict, loaded weights-only on the CPU, or :class:`UsageError`."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise UsageError(f"checkpoint path is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise UsageError(f"checkpoint file is empty: {path}")
    unreadable = f"not a readable checkpoint (truncated, corrupt, or not a torch file): {path}"
    try:  # torch.save writes zip archives (a cut one loses its directory): opened first, a foreign file fails here
        with zipfile.ZipFile(path) as archive:  # torch.load would hand a TorchScript archive to torch.jit.load
            if any(name.endswith("/constants.pkl") for name in archive.namelist()):
                raise UsageError(f"{path} is a TorchScript export, not a checkpoint: give the .ckpt it came from")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any object it does not know, and names the global it refused.
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"an object of type {found.group(1)}" if found else "objects"
        raise UsageError(
            f"refusing to load {path}: it holds {what} that a weights-only load does not allow; "
            "only tensors and plain values are loaded from checkpoints"
        ) from None
    except UsageError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise UsageError(f"{unreadable} ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UsageError(f"not a Lightning checkpoint (no state_dict): {path}")
    return ckpt


def read_trajectory(path: Path) -> dict[str, torch.Tensor]:
    """A run's ``trajectory.pt``, ``{"epochs": (T,), "weights": (T, P)}``, loaded weights-only and checked."""
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
        epochs, weights = saved["epochs"], saved["weights"]
        if epochs.dim() != 1 or weights.dim() != 2 or len(epochs) != len(weights) or not weights.is_floating_point():
            raise ValueError("shapes")
    except Exception as err:  # noqa: BLE001 (a damaged or foreign file: whatever torch or the checks raise)
        what = type(err).__name__
        raise UsageError(f"{path} is not a trajectory ({what}): fit again with --trajectory_every") from None
    return {"epochs": epochs, "weights": weights}


def _tensor(state: dict, key: str, shape: tuple[int, ...], source: Path, real: bool = True) -> torch.Tensor:
    """``state[key]`` if a plain CPU tensor of this shape (checked first: a crafted file can view a tiny storage as a
    huge shape) with finite real values."""
    t = state.get(key)
    name = key.removeprefix("net.")
    if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type != "cpu":
        raise UsageError(f"checkpoint's {name} is missing or not a plain tensor: {source}")
    if tuple(t.shape) != shape:
        raise UsageError(f"checkpoint's {name} has shape {tuple(t.shape)}, not {shape}: {source}")
    if real and t.dtype not in (torch.float32, torch.float64):
        raise UsageError(f"checkpoint's {name} holds {t.dtype} values, not real numbers: {source}")
    if real and not bool(torch.isfinite(t).all()):
        raise UsageError(f"checkpoint's {name} holds NaN or infinite values (a diverged run?): {source}")
    return t


def _stack(state: dict[str, Any], i: int, source: Path) -> MyNNStack:
    """Setting ``i`` of an ensemble checkpoint, its shapes checked before anything is copied."""
    w = state.get(f"stacks.{i}.weights")
    m, cols = w.shape if isinstance(w, torch.Tensor) and w.dim() == 2 else (0, 0)
    if not (1 <= m <= MAX_MEMBERS and 4 <= cols <= 3 * MAX_HIDDEN_SIZE + 1 and (cols - 1) % 3 == 0):
        raise UsageError(f"ensemble checkpoint's weights have an impossible shape: {source}")
    t = {
        name: _tensor(state, f"stacks.{i}.{name}", (m, cols) if name == "weights" else (m,), source, name == "weights")
        for name in STACK_SHAPES
    }
    sizes = t["hidden_sizes"].long()
    if not bool(((sizes >= 1) & (sizes <= (cols - 1) // 3)).all()):
        raise UsageError(f"ensemble checkpoint's hidden sizes do not fit its weights: {source}")
    stack = MyNNStack(sizes.tolist(), t["seeds"].long().tolist(), weights=t["weights"].float().clone())
    stack.diverged.copy_(t["diverged"].bool())
    return stack


def load_model(path: str | Path) -> tuple[MyNN | list[MyNNStack], dict[str, Any]]:
    """A checkpoint's model (a ``MyNN``, or ``MyNNStack``s) in eval mode on the CPU, and the checkpoint itself."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    state = ckpt["state_dict"]
    if any(not isinstance(k, str) for k in state):
        raise UsageError(f"checkpoint's state_dict has keys that are not names: {path}")
    hp = ckpt.get("hyper_parameters", {})
    if not isinstance(hp, dict):
        raise UsageError(f"checkpoint's hyper_parameters are a {type(hp).__name__}, not a mapping: {path}")
    stacks = sorted({int(m.group(1)) for k in state if (m := STACK_KEY.fullmatch(k))})
    if stacks:
        if unknown := [k for k in state if not STACK_KEY.fullmatch(k)]:
            raise UsageError(f"checkpoint's state_dict has keys its model has not ({unknown[0][:60]!r}): {path}")
        if stacks != list(range(len(stacks))):
            raise UsageError(f"ensemble checkpoint's stacks are not numbered 0..{len(stacks) - 1}: {path}")
        models = [_stack(state, i, path).eval() for i in stacks]
        if sum(len(s) for s in models) > MAX_MEMBERS:
            raise UsageError(f"ensemble checkpoint has more than {MAX_MEMBERS:,} members: {path}")
        return models, ckpt
    w1 = state.get("net.linear1.weight")
    if not isinstance(w1, torch.Tensor) or w1.dim() != 2 or w1.shape[1] != 1:
        raise UsageError(f"not a regression-lab MyNN checkpoint (no linear1 weight of shape (h, 1)): {path}")
    if not 1 <= (h := int(w1.shape[0])) <= MAX_HIDDEN_SIZE:
        raise UsageError(f"checkpoint's hidden size {h:,} is outside [1, {MAX_HIDDEN_SIZE:,}]: {path}")
    model = MyNN(h)
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    weights = {name: _tensor(state, f"net.{name}", shape, path).float() for name, shape in shapes.items()}
    if unknown := sorted(set(state) - {f"net.{name}" for name in shapes}):
        raise UsageError(f"checkpoint's state_dict has keys its model has not ({unknown[0][:60]!r}): {path}")
    saved = hp.get("hidden_size")  # validate, test and resume rebuild the model from it (missing: the default)
    if isinstance(saved, bool) or not isinstance(saved, int):
        what = "missing" if saved is None else f"not an integer ({saved!r})"
        raise UsageError(f"checkpoint's hyper_parameters.hidden_size is {what}: {path}")
    if saved != h:
        raise UsageError(f"checkpoint is inconsistent: hidden_size {saved} but weights for {h}: {path}")
    if (initial := ckpt.get(INITIAL_STATE_KEY)) is not None:  # the landscape's start: shaped as the weights
        flat = {f"{INITIAL_STATE_KEY}.{k}": v for k, v in initial.items()} if isinstance(initial, dict) else {}
        ckpt[INITIAL_STATE_KEY] = {n: _tensor(flat, f"{INITIAL_STATE_KEY}.{n}", s, path) for n, s in shapes.items()}
    model.load_state_dict(weights)
    return model.eval(), ckpt


def resume_problem(ckpt: dict[str, Any]) -> str | None:
    """Why ``fit`` must not resume from this checkpoint, or None. A callback state naming a file outside its own
    checkpoint directory (``dir/../../victim``) would have Lightning remove that file: it checks the path as written,
    not where it leads."""
    if not isinstance(ckpt.get("optimizer_states"), list) or not isinstance(ckpt.get("loops"), dict):
        return "holds no training state (saved with --checkpoint.save_weights_only?): validate, test or predict from it"
    callbacks = ckpt.get("callbacks", {})
    if not isinstance(callbacks, dict):
        return f"holds callback states as a {type(callbacks).__name__}, not a mapping"
    for state in callbacks.values():
        if not isinstance(state, dict) or "dirpath" not in state:
            continue
        top_k = state.get("best_k_models")
        paths = [state.get(k) for k in CALLBACK_PATH_KEYS] + (list(top_k) if isinstance(top_k, dict) else [top_k])
        for path in (p for p in paths if p not in (None, "")):
            with contextlib.suppress(TypeError, OSError, ValueError, RuntimeError):  # no str, NUL, a loop: outside
                if Path(path).resolve().parent == Path(state["dirpath"]).resolve():
                    continue
            return f"names a file outside its checkpoint directory in its callback state ({str(path)[:200]!r})"
    return None
