"""``python -m regression_lab`` is the ``regression-lab`` command: ``python -m regression_lab fit``."""

from regression_lab.cli import entry

entry()
