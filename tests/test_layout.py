"""The codebase as a model Lightning project: public Lightning APIs only, the import contract,
no deprecation warning of the project's own, and the size budgets of the redesign. Run: pytest tests/test_layout.py"""

import ast
import re
import warnings

import pytest
from helpers import LAST, REPO, fit_in_process, run_main

PACKAGE = REPO / "src" / "regression_lab"


def test_no_private_name_of_lightning_or_jsonargparse_is_used():
    trees = {path: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}
    private = lambda name: name.startswith("_") and not name.endswith("__")  # noqa: E731
    defs, stored = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef), (ast.Attribute, ast.Name)
    own = set()  # private names this project defines itself are fine
    for node in (n for tree in trees.values() for n in ast.walk(tree)):
        if isinstance(node, defs) or (isinstance(node, stored) and isinstance(node.ctx, ast.Store)):
            own.add(node.name if isinstance(node, defs) else node.attr if isinstance(node, ast.Attribute) else node.id)
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("lightning", "jsonargparse"):
                found += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if private(a.name)]
    assert not found, found


# Deprecations Lightning 2.6 itself triggers in torch, torchmetrics and jsonargparse (also listed in
# pyproject.toml): nothing this project's settings can change.
LIGHTNINGS_OWN = (
    r"This property will be removed in 2\.0\.0",
    r"was deprecated in v4\.",
    r"JsonargparseDeprecationWarning",
)


def test_the_defaults_raise_no_deprecation_warning_and_no_notice(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_in_process(tmp_path, "--trainer.max_epochs", "40")  # the graph is traced here
        fit_in_process(tmp_path, "--ckpt_path", str(tmp_path / LAST), command="validate")
        fit_in_process(tmp_path, *"--ckpt_path last --trainer.max_epochs 60".split())
        fit_in_process(tmp_path, *"--model.num_seeds 3 --trainer.max_epochs 20".split())
        assert run_main("demo", "all", "--logdir", str(tmp_path / "graphs"), cwd=tmp_path).returncode == 0
    theirs = [w for w in caught if any(re.search(p, str(w.message)) for p in LIGHTNINGS_OWN)]
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if w not in theirs]
    assert not [s for s in shown if re.match(r"(Deprecation|Future)Warning", s)], shown
    notices = "logging interval|exists and is not empty|dirpath has changed|computational graph"
    assert not [s for s in shown if re.search(notices, s)], shown


# src/ is over issue 23's 3,000 lines: every promise the README makes, written once and ruff-formatted, needs
# about 3,700 (the closing note of issue 23 says where), and issue 24's guards add to it, as do the fork server and
# the one figure writer (fewer imports and draws). tests/ passed its 2,500 with issue 24's full-disk checkpoint and
# far-probe rows; issue 25's TensorBoard tabs add about 170 lines to src/ and 130 to tests/ (a real TensorBoard
# server) and the review's fixes (rows of resumed runs and diverged settings, two-card tables) another 60 and 20;
# issue 28's exact curvature and trajectory plane about 280 and 80; issue 27's Python API and notebook about 120
# and 50, its data from CSV files (the reader, the split, the file's record and its checks) about 210 and 100. The
# caps keep both from growing unnoticed: a commit that raises one says why. benchmarks/ is back at its 500, with
# issue 26's floors: what Lightning itself costs beside each target (fit's cadences, stacks of 3k and 30k, the sweep).
# 12-02: src/ +30 (members drawn at once), tests/ +29 (torch.func's Hessian); then src/ -74 (LitServe's limit, inlined).
@pytest.mark.parametrize("path, limit", [("src", 4836), ("tests", 2904), ("benchmarks", 500)])  # fmt: skip
def test_the_code_keeps_to_its_budgets(path, limit):
    files = sorted((REPO / path).rglob("*.py"))
    lines = {f.name: len(f.read_text().splitlines()) for f in files}
    assert sum(lines.values()) <= limit, sum(lines.values())
    if path == "src":
        assert max(lines.values()) <= 300, {f: n for f, n in lines.items() if n > 300}
        long = [f"{f.name}:{n.name}" for f in files for n in ast.walk(ast.parse(f.read_text()))
                if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 50]  # fmt: skip
        assert not long, long
