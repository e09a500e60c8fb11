"""The Python API beyond what test_notebook runs: the commands' own errors, and a checkpoint as a predictor.
Run: pytest tests/test_api.py"""

import numpy as np
import pytest
import torch

from regression_lab import api
from regression_lab.errors import UsageError
from regression_lab.models import MyNN


def test_bad_settings_raise_the_commands_errors_and_a_checkpoint_loads_as_a_predictor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="model.hidden_size must be an integer >= 1"):
        api.train(model={"hidden_size": 0})
    with pytest.raises(UsageError, match="--seed must be an integer >= 0, got '3'"):
        api.demo("forward", seed="3")
    with pytest.raises(UsageError, match="landscape: .* unexpected keyword argument 'bogus'"):
        api.landscape(bogus=1)
    for bad in ({"span": None}, {"span": (1,)}, {"include_bias": "no"}):  # values the command's parser never makes
        with pytest.raises(UsageError, match=f"--{next(iter(bad))} must be (a range MIN MAX|true or false), got"):
            api.landscape(**bad)
    with pytest.raises(UsageError, match="regression-lab fit: .* does not accept option 'model.hidden_sizes'"):
        api.train(model={"hidden_sizes": 3})  # jsonargparse's refusal, as the command says it
    with pytest.raises(UsageError, match="model takes a dict of --model.\\* settings, got 5"):
        api.train(model=5)  # the command's --model 5 is refused too
    with pytest.raises(UsageError, match="train takes no config file: pass its settings as model="):
        api.train(config="my.yaml")
    with pytest.raises(UsageError, match="--ckpt_path is empty"):
        api.landscape("")  # not the directory "."
    with pytest.raises(UsageError, match="regression-lab sweep: Option 'bogus' is not accepted"):
        api.sweep(config=None, bogus=1)  # an unset config is no config
    with pytest.raises(UsageError, match="--epochs values must be an integer >= 1, got 0"):
        api.sweep(hidden_sizes=4, epochs=0, seeds=0)  # one value for a list: the list of it
    with pytest.raises(UsageError, match=r"--lr_range takes LOW HIGH, got \[0.1\]"):
        api.sweep(sampler="tpe", lr_range=[0.1])
    (tmp_path / "alias.yaml").write_text("hidden_sizes: &h [4]\nepochs: *h\n")
    (tmp_path / "list.yaml").write_text("- 4\n")
    # A --config read as the command reads it:
    for config, refusal in {"alias.yaml": "YAML aliases", "missing.yaml": "cannot read", "list.yaml": "a YAML"}.items():
        with pytest.raises(UsageError, match=refusal):
            api.sweep(config=config)
    torch.manual_seed(0)
    net = MyNN(5)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"hidden_size": 5}}, tmp_path / "m.ckpt")
    with torch.no_grad():
        expected = float(net(torch.tensor([[10.0]])))
    assert api.predict(tmp_path / "m.ckpt", [10.0])[0] == pytest.approx([expected], rel=1e-6)
    assert api.predict(tmp_path / "m.ckpt", 10.0) == api.predict(tmp_path / "m.ckpt", [10.0])
    assert api.predict(tmp_path / "m.ckpt", np.float32(10)) == api.predict(tmp_path / "m.ckpt", [np.float64(10)])
    with pytest.raises(UsageError, match="no x values"):
        api.predict(tmp_path / "m.ckpt", [])
    for x in (float("nan"), True, "10", 10**400):  # what the command's parser refuses, refused here too
        with pytest.raises(UsageError, match=f"x must be a finite number, got {repr(x)[:40]}"):
            api.predict(tmp_path / "m.ckpt", [x])
    for x in ("10", None):  # one x, not its characters
        with pytest.raises(UsageError, match=f"x must be a finite number, got {x!r}$"):
            api.predict(tmp_path / "m.ckpt", x)
    results = api.landscape(tmp_path / "m.ckpt", resolution=5)
    with pytest.raises(UsageError, match="no landscape 'trajectory' in these results: choose from lab_1d, linear_2d"):
        api.figure(results, "trajectory")  # none kept
    assert not list(tmp_path.glob("lightning_logs/*"))  # the refused fit left no run behind


def test_a_resume_through_the_api_trains_on_the_runs_own_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quiet = {"enable_progress_bar": False, "enable_model_summary": False}
    api.train(data={"slope": 5.0}, trainer={"max_epochs": 20, **quiet})
    resumed = api.train(ckpt_path="last", trainer={"max_epochs": 40, **quiet})  # no data given: the run's
    assert resumed.datamodule.hparams.slope == 5.0 and resumed.trainer.current_epoch == 40
    assert api.predict(None, 10.0) == api.predict(resumed.checkpoint, 10.0)  # None: the newest, as the command's
