"""The Lightning layer: RegressionModule, RegressionDataModule, callbacks and the training CLI.

It builds on ``regression_lab.core`` and never imports ``regression_lab.commands``::

    import lightning as L
    from regression_lab.lit.data import RegressionDataModule
    from regression_lab.lit.module import RegressionModule
    L.Trainer(max_epochs=400).fit(RegressionModule(), RegressionDataModule())
"""
