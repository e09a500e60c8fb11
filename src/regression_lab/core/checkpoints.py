"""Find and read checkpoints without Lightning: only torch, and only ``weights_only=True``.

``predict`` and ``landscape`` use this to rebuild the plain ``MyNN`` from a Lightning
checkpoint, so they start as fast as ``import torch`` and never unpickle arbitrary objects::

    from regression_lab.core.checkpoints import load_mynn, newest_checkpoint
    model, ckpt = load_mynn(newest_checkpoint("lightning_logs"))
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from regression_lab.core.ensemble import MyNNStack, is_ensemble_state, load_stacks
from regression_lab.core.errors import UsageError
from regression_lab.core.models import MAX_HIDDEN_SIZE, MyNN

#: Where ``fit`` writes its runs by default (relative to the working directory).
DEFAULT_LOG_ROOT = Path("lightning_logs")
#: The prefix of MyNN's weights inside the LightningModule's state dict.
NET_PREFIX = "net."
#: The checkpoint key under which the weights from before training are kept, so the loss
#: landscape can interpolate from them to the trained weights.
INITIAL_STATE_KEY = "initial_state_dict"


def numbered_dirs(root: Path | str, prefix: str) -> list[Path]:
    """The ``{prefix}N`` directories under ``root`` (``version_0``, ``sweep_3``), lowest N first."""
    root = Path(root)
    if not root.is_dir():
        return []
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def run_dirs(root: Path | str = DEFAULT_LOG_ROOT) -> list[Path]:
    """The ``version_N`` run directories under ``root``, oldest (lowest N) first."""
    return numbered_dirs(root, "version_")


def reserve_numbered_dir(root: Path | str, prefix: str = "version_") -> Path:
    """Create the next ``{prefix}N`` under ``root`` (one past the highest) and return it.

    ``mkdir`` is atomic: of two processes reserving at once, the second gets ``FileExistsError``
    and takes the next number, so no two runs ever share a directory.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{root} is not a directory") from None
    existing = numbered_dirs(root, prefix)
    n = int(existing[-1].name[len(prefix) :]) + 1 if existing else 0
    for _ in range(10_000):
        try:
            (root / f"{prefix}{n}").mkdir()
        except FileExistsError:
            n += 1  # another process took it first, or a file of that name is in the way
            continue
        except NotADirectoryError:
            raise UsageError(f"{root} is not a directory") from None
        return root / f"{prefix}{n}"
    raise UsageError(f"cannot find a free {prefix}N name under {root}")


def newest_checkpoint(root: Path | str = DEFAULT_LOG_ROOT, name: str | None = None) -> Path:
    """The newest run's checkpoint: ``last.ckpt`` if it has one, else its newest ``.ckpt``.

    Runs without checkpoints (e.g. a ``validate`` run) are skipped. ``name`` asks for one
    file name only (``"last.ckpt"`` when resuming). Raises :class:`UsageError` if none exists.
    """
    for run in reversed(run_dirs(root)):
        ckpt_dir = run / "checkpoints"
        if name is not None:
            if (ckpt_dir / name).is_file():
                return ckpt_dir / name
            continue
        if (ckpt_dir / "last.ckpt").is_file():
            return ckpt_dir / "last.ckpt"
        found = sorted(ckpt_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if ckpt_dir.is_dir() else []
        if found:
            return found[-1]
    what = name or "checkpoint"
    raise UsageError(
        f"no {what} found under {Path(root)}/version_*/checkpoints/: "
        "train one with 'regression-lab fit' or pass --ckpt_path"
    )


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``, on the CPU) or raise :class:`UsageError`."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise UsageError(f"checkpoint path is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise UsageError(f"checkpoint file is empty: {path}")
    if not zipfile.is_zipfile(path):
        # torch.save has written zip archives since torch 1.6; a file cut short loses the zip's
        # directory at its end, so it fails here too.
        raise UsageError(f"not a readable checkpoint (truncated, corrupt, or not a torch file): {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any object it does not know: a tampered or foreign file.
        # torch names the refused global in its message ("... GLOBAL posix.mkdir ...").
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"an object of type {found.group(1)}" if found else "objects"
        raise UsageError(
            f"refusing to load {path}: it holds {what} that a weights-only load does not allow; "
            "only tensors and plain values are loaded from checkpoints"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise UsageError(
            f"not a readable checkpoint (truncated, corrupt, or not a torch file): {path} ({type(err).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UsageError(f"not a Lightning checkpoint (no state_dict): {path}")
    return ckpt


def mynn_state(
    ckpt: dict[str, Any], source: Path | str, key: str = "state_dict"
) -> tuple[int, dict[str, torch.Tensor]]:
    """MyNN's hidden size and weights from a checkpoint's ``key`` entry, checked for shape."""
    state = ckpt.get(key)
    if not isinstance(state, dict):
        raise UsageError(f"checkpoint has no {key}: {source}")
    # Lightning checkpoints prefix the weights with the attribute name; a bare MyNN state dict has none.
    net = {k[len(NET_PREFIX) :]: v for k, v in state.items() if k.startswith(NET_PREFIX)} or dict(state)
    w1 = net.get("linear1.weight")
    if not isinstance(w1, torch.Tensor) or w1.dim() != 2 or w1.shape[1] != 1:
        raise UsageError(f"not a regression-lab MyNN checkpoint (no linear1 weight of shape (h, 1)): {source}")
    # Checked on the shapes, before any tensor is copied: a crafted file can hold a tiny
    # storage expanded to a huge shape.
    if not 1 <= w1.shape[0] <= MAX_HIDDEN_SIZE:
        raise UsageError(f"checkpoint's hidden size {w1.shape[0]:,} is outside [1, {MAX_HIDDEN_SIZE:,}]: {source}")
    for name, t in net.items():
        if isinstance(t, torch.Tensor) and t.numel() > 3 * MAX_HIDDEN_SIZE + 1:
            raise UsageError(f"checkpoint's {name} has {t.numel():,} values, more than any MyNN: {source}")
        if isinstance(t, torch.Tensor) and (not t.is_floating_point() or t.is_complex()):
            raise UsageError(f"checkpoint's {name} holds {t.dtype} values, not real numbers: {source}")
        if isinstance(t, torch.Tensor) and not bool(torch.isfinite(t).all()):
            raise UsageError(f"checkpoint's {name} holds NaN or infinite values (a diverged run?): {source}")
    return int(w1.shape[0]), net


def load_mynn(path: Path | str) -> tuple[MyNN, dict[str, Any]]:
    """Rebuild the trained ``MyNN`` (eval mode, CPU) from a checkpoint; return it and the checkpoint."""
    ckpt = read_checkpoint(path)
    if is_ensemble_state(ckpt["state_dict"]):
        raise UsageError(f"{path} holds an ensemble (fit --model.num_seeds N); this needs a single-model checkpoint")
    return _mynn_from(ckpt, path), ckpt


def load_model(path: Path | str) -> tuple[MyNN | list[MyNNStack], dict[str, Any]]:
    """A checkpoint's model (CPU, eval mode): a ``MyNN``, or an ensemble's stacks of members."""
    ckpt = read_checkpoint(path)
    if is_ensemble_state(ckpt["state_dict"]):
        return [s.eval() for s in load_stacks(ckpt["state_dict"], str(path))], ckpt
    return _mynn_from(ckpt, path), ckpt


def _mynn_from(ckpt: dict[str, Any], path: Path | str) -> MyNN:
    hidden, net = mynn_state(ckpt, path)
    hp = ckpt.get("hyper_parameters") or {}
    saved = hp.get("hidden_size") if isinstance(hp, dict) else None
    if saved is not None and (isinstance(saved, bool) or not isinstance(saved, int)):
        raise UsageError(f"checkpoint's hyper_parameters.hidden_size is not an integer ({saved!r}): {path}")
    if isinstance(hp, dict) and hp.get("hidden_size") not in (None, hidden):
        raise UsageError(
            f"checkpoint is inconsistent: hidden_size {hp['hidden_size']} but weights for {hidden}: {path}"
        )
    model = MyNN(hidden)
    try:
        model.load_state_dict(net, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:200]
        raise UsageError(f"checkpoint does not fit MyNN({hidden}): {path} ({detail})") from None
    return model.eval()
