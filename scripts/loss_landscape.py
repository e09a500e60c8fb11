#!/usr/bin/env python
"""Loss landscapes: the same as ``regression-lab landscape`` (no Lightning import).

python scripts/loss_landscape.py                           # newest checkpoint under ./lightning_logs
python scripts/loss_landscape.py --resolution 201 --out landscape/
python scripts/loss_landscape.py --ckpt_path run.ckpt --include_bias --seed 3
"""

import sys

from regression_lab.cli import main

if __name__ == "__main__":
    sys.exit(main(["landscape", *sys.argv[1:]]))
