"""One module per ``regression-lab`` command, each with ``build_parser()`` and ``run(cfg)``.

``predict``, ``demo`` and ``landscape`` import only ``regression_lab.core`` (never Lightning),
so they start about as fast as ``import torch``; ``sweep`` trains, so it sits above
``regression_lab.lit``. Run one::

    regression-lab predict --x 10
"""
