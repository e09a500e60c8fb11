"""TensorBoard as a user sees it: a real server on every kind of run, asked through its HTTP data API what tabs show.
Run: pytest tests/test_tensorboard.py"""

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import fit_in_process, free_port, run_main, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def board(tmp_path):
    """Runs of every kind in one ``lightning_logs``, and a function asking the TensorBoard server on it."""
    fit_in_process(tmp_path, "--trainer.max_epochs", "40")  # version_0: the lab's model, then resumed: a row each
    fit_in_process(tmp_path, *"--ckpt_path last --trainer.max_epochs 60".split())
    # version_1: seed 3 for each setting of hidden {4, 8} x lr {0.01, 5} (every lr-5 member diverges)
    ensemble = "--model.hidden_size [4,8] --model.lr [0.01,5] --model.first_seed 3 --trainer.max_epochs 40"
    fit_in_process(tmp_path, *ensemble.split())
    sweep = "sweep --seeds 0-9 --hidden_sizes 4 8 --epochs 20 40 --quiet --out lightning_logs/sweep".split()
    assert run_main(*sweep, cwd=tmp_path).returncode == 0
    landscape = "landscape --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --resolution 5".split()
    assert run_main(*landscape, cwd=tmp_path).returncode == 0
    port = free_port()
    tensorboard = str(Path(sys.executable).with_name("tensorboard"))
    server = subprocess.Popen([tensorboard, "--logdir", str(tmp_path / "lightning_logs"), "--port", str(port), "--host",
                               "127.0.0.1", "--load_fast", "false", "--reload_interval", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def ask(path: str, body: dict | None = None, **query: str):
        url = f"http://127.0.0.1:{port}/data/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"X-XSRF-Protected": "1", "Content-Type": "application/json"}
        request = urllib.request.Request(url, None if body is None else json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def loaded() -> bool:  # every run read: 2 + 4 + 2 x 2 HParams rows, the sweep's Text
        try:
            return len(groups(ask)) == 10 and "sweep/summary" in ask("plugin/text/tags")
        except OSError:
            return False

    try:
        wait_for(loaded, server, "TensorBoard reading the runs")
        yield ask
    finally:
        server.terminate()
        server.wait(timeout=30)


def groups(ask) -> dict[str, dict]:
    """The HParams table's rows by run: the hyperparameters and metric values."""
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    body = {"experimentName": "", "allowedStatuses": statuses, "colParams": [], "startIndex": 0, "sliceSize": 100}
    found = ask("plugin/hparams/session_groups", body).get("sessionGroups", [])
    return {g["name"]: {**g["hparams"], **{m["name"]["tag"]: m["value"] for m in g["metricValues"]}} for g in found}


# One test: under xdist, tests share a fixture only within a worker, and these runs are the cost.
def test_every_tab_shows_what_the_readme_says(board):
    # HParams: one table of the lab's run, the ensemble's settings and the sweep's settings.
    experiment = board("plugin/hparams/experiment", {"experimentName": ""})
    names = "hidden_size lr epochs seeds first_seed seed_everything data.x_min data.slope".split()
    assert set(names) <= {h["name"] for h in experiment["hparamInfos"]}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"hp/val_loss", "hp/train_loss", "hp/prediction", "hp/abs_error"} <= metrics
    rows = groups(board)
    lab, resumed = rows["version_0/hparams/h5_e40_lr0.01"], rows["version_0/hparams/h5_e60_lr0.01"]
    assert lab["hp/prediction"] == pytest.approx(32.6772, abs=1e-4)
    assert [lab[k] for k in ("hidden_size", "epochs", "seeds", "first_seed", "data.x_max")] == [5, 40, 1, 0, 5]
    assert lab["seed_everything"] == 0
    assert resumed["epochs"] == 60 and resumed["hp/prediction"] != lab["hp/prediction"]
    for name, seeds, first in [("version_1/hparams/h4_e40_lr0.01", 1, 3),
                               ("sweep/trial_0/hparams/h8_e40_lr0.01", 10, 0),
                               ("sweep/trial_1/hparams/h4_e20_lr0.01", 10, 0)]:  # fmt: skip
        assert {"hp/val_loss", "hp/prediction", "data.x_max"} <= set(rows[name])
        assert (rows[name]["seeds"], rows[name]["first_seed"]) == (seeds, first)  # the members' seeds
    diverged = rows["version_1/hparams/h8_e40_lr5.0"]  # a setting whose every member diverged keeps its row
    assert diverged["hp/diverged_share"] == 1 and "hp/val_loss" not in diverged
    # Distributions: the members over training; Custom Scalars: their percentiles.
    tags = board("plugin/histograms/tags")
    expected = "members_val_loss_log10/h4 members_prediction/h8 members_top_hessian_eigenvalue/h8".split()
    assert {f"{name}_lr0.01" for name in expected} <= set(tags["version_1"])
    for run, names in tags.items():
        for tag in (t for t in names if not t.startswith("members_top_hessian")):  # that one: at the end
            steps = [point[1] for point in board("plugin/histograms/histograms", run=run, tag=tag)]
            assert len(steps) > 1 and steps == sorted(steps), (run, tag, steps)  # every validation, in order
    charts = {c["title"]: c for cat in board("plugin/custom_scalars/layout")["category"] for c in cat["chart"]}
    margin = charts["val loss, median and 10th-90th percentiles"]["margin"]["series"][0]
    assert margin["value"].endswith("/p50") and margin["lower"].endswith("/p10") and margin["upper"].endswith("/p90")
    assert "train loss, median per setting" in charts
    assert "val_loss_percentiles/h8_lr0.01/p90" in board("plugin/scalars/tags")["version_1"]
    # Text: tables in Markdown, and the verdict standing alone.
    text = lambda run, tag: board("plugin/text/text", run=run, tag=f"{tag}/text_summary")[0]["text"]  # noqa: E731
    html = text("sweep/summary", "sweep/results")  # the columns of results.csv, in two cards
    assert html.count("<table>") == 1 and "<th>all units dead</th>" in html and "<th>a unit dead</th>" in html
    assert "<th>train loss mean</th>" in text("sweep/summary", "sweep/results_spread")
    verdict = text("sweep/summary", "sweep/verdict")
    assert "best: hidden_size=" in verdict and "<table>" not in verdict
    note = text("version_1", "ensemble/mean_and_median")
    assert "median" in note and note.count("<tr>") == 5 and "every member diverged" in note  # a header, 4 settings
    assert text("version_0", "landscape/settings").count("<table>") == 1
    assert "<td>hessian</td>" in text("version_0", "landscape/summary")
