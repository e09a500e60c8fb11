#!/usr/bin/env python
"""The lab's forward-pass demos: the same as ``regression-lab demo`` (no Lightning import).

python scripts/forward_pass_demo.py                 # every section
python scripts/forward_pass_demo.py forward --seed 3
python scripts/forward_pass_demo.py tinymodel --logdir lightning_logs/graphs
"""

import sys

from regression_lab.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
