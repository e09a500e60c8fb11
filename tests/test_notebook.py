"""notebooks/lab3.ipynb run top to bottom in a real Jupyter kernel, its outputs checked against the lab's numbers.
Run: pytest tests/test_notebook.py"""

import nbformat
import pytest
from helpers import REPO
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


def test_the_lab_notebook_runs_top_to_bottom_and_shows_the_labs_numbers(tmp_path):
    notebook = nbformat.read(REPO / "notebooks" / "lab3.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code)  # committed without outputs: none can be stale
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in code for o in c.outputs]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "weighted_sum: 4.96" in text  # part A's perceptron
    assert "prediction for 10: 31.9979" in text and "x = 20: 61.99" in text
    assert "MSE at w = -1: 176; minimum 0 at w = 3.0000" in text and "least squares: w = 3.0000, b = 2.0000" in text
    assert "best: hidden 8, 400 epochs" in text and "hidden_size" in text  # the sweep's table
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # the three landscapes, inline
