"""Shared fixtures (the lab's run, trained once per session) and how ``-n`` deals out the tests (``make test``)."""

import os
import shutil
from pathlib import Path

import pytest
from helpers import LAST

os.environ.setdefault("MPLBACKEND", "Agg")
SHARED_FIXTURES = ("test_serve.py", "test_sweep.py", "test_ensemble.py")


@pytest.fixture(scope="session")
def lab_run(tmp_path_factory: pytest.TempPathFactory):
    """The lab's default training (hidden 5, lr 0.01, 400 full-batch epochs), trained once per session by
    ``api.train()`` with no arguments (the API's first example; ``test_cli`` runs the command's)."""
    from regression_lab import api

    workdir, old_cwd = tmp_path_factory.mktemp("lab_run"), Path.cwd()
    os.chdir(workdir)
    try:
        return workdir, api.train()
    finally:
        os.chdir(old_cwd)


@pytest.fixture
def lab_ckpt(lab_run, tmp_path: Path) -> Path:
    """A private copy of the lab run's last checkpoint, in a run directory of its own."""
    dst = tmp_path / LAST
    dst.parent.mkdir(parents=True)
    shutil.copy2(lab_run[0] / LAST, dst)
    return dst


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (a stable sort): with ``-n N`` the long ones start early instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``-n N``: the tests sharing a module's costly fixture (a server, sweeps) run on one worker, others one by one."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFixture(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return module if (module := nodeid.split("::")[0]).endswith(SHARED_FIXTURES) else nodeid

    return ByFixture(config, log) if config.getvalue("dist") == "load" else None  # xdist's own for any other --dist
