#!/usr/bin/env python
"""The lab's epochs x hidden-size sweep: the same as ``regression-lab sweep``.

python scripts/sweep.py                                   # hidden 4 5 8 x epochs 100 200 400 x seeds 0-999
python scripts/sweep.py --hidden_sizes 4 8 --epochs 100 400 --seeds 0-99
"""

import sys

from regression_lab.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
