"""The codebase as a model Lightning project: public Lightning APIs only, the layers' import
contract, and no deprecation warnings from this project's own defaults.

Run: pytest tests/test_layout.py
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from helpers import REPO, cli_in_process, run_main

PACKAGE = REPO / "src" / "regression_lab"


def _sources() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_of_lightning_is_used():
    trees = _sources()
    # Private names this project defines itself (its own helpers and attributes) are fine.
    own = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and _private(node.name):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
                own.add(node.id)
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("lightning", "jsonargparse"):
                parts = [*node.module.split("."), *(alias.name for alias in node.names)]
                found += [f"{path.relative_to(REPO)}:{node.lineno} {p}" for p in parts if _private(p)]
    assert not found, "private names of other libraries:\n" + "\n".join(found)


def test_the_layers_import_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"Contracts: 3 kept, 0 broken", proc.stdout)


# Deprecations that Lightning 2.6 itself triggers in torch, torchmetrics and jsonargparse (also
# listed in pyproject.toml): nothing this project's settings can change.
LIGHTNINGS_OWN = (
    r"This property will be removed in 2\.0\.0",
    r"was deprecated in v4\.",
    r"By default only one JsonargparseDeprecationWarning",
)


def test_the_defaults_raise_no_deprecation_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli_in_process(tmp_path, "fit", "--trainer.max_epochs", "40")  # the graph is traced here
        ckpt = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
        cli_in_process(tmp_path, "validate", "--ckpt_path", str(ckpt))
        cli_in_process(tmp_path, "fit", "--ckpt_path", "last", "--trainer.max_epochs", "60")
        assert run_main("demo", "all", "--logdir", str(tmp_path / "graphs"), cwd=tmp_path).returncode == 0
    ours = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
        and not any(re.search(p, str(w.message)) for p in LIGHTNINGS_OWN)
    ]
    assert not ours, "\n".join(ours)
    noisy = [str(w.message) for w in caught if "smaller than the logging interval" in str(w.message)]
    noisy += [
        str(w.message) for w in caught if re.search("exists and is not empty|dirpath has changed", str(w.message))
    ]
    assert not noisy, noisy


@pytest.mark.parametrize("module", ["predict", "demo", "landscape", "export", "serve", "serve_api"])
def test_light_commands_never_import_lightning_even_indirectly(module):
    code = (
        f"import sys; import regression_lab.commands.{module}\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning') "
        "or m.startswith('regression_lab.lit')]\nassert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
