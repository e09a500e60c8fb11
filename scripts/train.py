#!/usr/bin/env python
"""Train the lab model: the same as ``regression-lab fit`` (all its options work here).

python scripts/train.py
python scripts/train.py --model.hidden_size 8 --trainer.max_epochs 200
"""

import sys

from regression_lab.cli import main

if __name__ == "__main__":
    sys.exit(main(["fit", *sys.argv[1:]]))
