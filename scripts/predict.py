#!/usr/bin/env python
"""Predict from a checkpoint: the same as ``regression-lab predict`` (no Lightning import).

python scripts/predict.py --x 10
python scripts/predict.py --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --input xs.txt
"""

import sys

from regression_lab.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
