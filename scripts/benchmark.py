#!/usr/bin/env python
"""Benchmark regression-lab against plain PyTorch baselines measured in the same run.

python scripts/benchmark.py                  # every row, full sizes (a few minutes on 2 cores)
python scripts/benchmark.py --quick          # tiny sizes
python scripts/benchmark.py --json bench.json --rows lab_epochs landscape
"""

import sys

from regression_lab.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
