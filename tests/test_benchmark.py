"""The benchmark runs on tiny sizes and reports every row (its numbers are not asserted: it is
a benchmark, not a timed test). Run: pytest tests/test_benchmark.py"""

import json
import subprocess
import sys

from helpers import REPO

from regression_lab.benchmark import ROWS


def test_quick_benchmark_prints_and_writes_every_row(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    results = json.loads(out.read_text())
    assert list(results) == list(ROWS)
    for row in ROWS:
        assert any(line.startswith(row) for line in table.splitlines()), row
        entry = results[row]
        assert entry["ratio"] > 0 and entry["target"] and isinstance(entry["ok"], bool)
    assert results["landscape"]["points"] == 121
    assert results["lab_epochs"]["plain_epoch_us"] > 0 and results["lab_epochs"]["fit_epoch_us"] > 0
