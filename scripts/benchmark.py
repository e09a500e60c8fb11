#!/usr/bin/env python
"""Benchmark regression-lab against plain baselines and yardsticks measured in the same run.

The benchmarks live in ``benchmarks/`` beside the package, not in it (they are not shipped).

python scripts/benchmark.py                  # every row, full sizes
python scripts/benchmark.py --quick --markdown   # tiny sizes, the README's Performance table
python scripts/benchmark.py --json bench.json --rows lab_epochs landscape
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for benchmarks/

from benchmarks.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
