"""The lab's part A: every printed number, the loop, NumPy and torch agreeing, TinyModel, nn.Linear, the graphs.
Run: pytest tests/test_demos.py"""

import json

import numpy as np
import pytest
import torch
from helpers import LAST, events, run_main

from regression_lab import demo as demos
from regression_lab.checkpoint import INITIAL_STATE_KEY

LAB_LAYER = [6.96, 1.867, 2.106]
LAB_BATCH = [[6.96, 1.867, 2.106], [12.9, 1.523, 4.058], [0.39, 1.051, 0.026]]


def test_the_forward_pass_sections_give_the_labs_numbers():
    perceptron, looped = demos.perceptron().values, demos.loops_and_dot().values
    batch, t = demos.batch_of_samples().values, demos.tensors().values
    assert perceptron["weighted_sum"] == pytest.approx(4.96) and perceptron["step_output"] == 1
    assert demos.three_neurons().values["outputs"] == pytest.approx(LAB_LAYER)
    assert looped["looped"] == pytest.approx(LAB_LAYER) and looped["numpy_one_neuron"] == pytest.approx(6.96)
    np.testing.assert_allclose(looped["numpy_layer"], LAB_LAYER)
    np.testing.assert_allclose(batch["outputs"], LAB_BATCH, atol=1e-12)
    assert batch["shape"] == [3, 3] and t["all_three_equal"] is True
    for key in ("batch_matmul", "batch_mm", "batch_at"):
        np.testing.assert_allclose(t[key].numpy(), LAB_BATCH, atol=1e-5)
    assert t["torch_dot"].item() == 7 and t["torch_mm"].tolist() == t["np_dot_2d"].tolist() == [[3, 7], [5, 12]]
    assert t["torch_dot_2d"].startswith("RuntimeError") and "1D tensors expected" in t["torch_dot_2d"]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_relu_exercise_is_vectorised_relu_and_reproducible(seed):
    v = demos.relu_exercise(seed).values
    assert v["inputs"].shape == (5,) and v["weights"].shape == (2, 5) and v["biases"].shape == (2,)
    assert torch.all((v["inputs"] >= 0) & (v["inputs"] < 1)) and torch.all(v["outputs"] >= 0)
    torch.testing.assert_close(v["outputs"], torch.clamp(v["weights"] @ v["inputs"] + v["biases"], min=0))
    for j in range(2):  # each neuron by hand: max(0, sum_i w_ji x_i + b_j)
        by_hand = max(0.0, sum(float(v["weights"][j, i] * v["inputs"][i]) for i in range(5)) + float(v["biases"][j]))
        assert v["outputs"][j].item() == pytest.approx(by_hand, abs=1e-6)
    assert torch.equal(demos.relu_exercise(seed).values["outputs"], v["outputs"])


def test_tinymodel_counts_and_probabilities_and_linear_is_x_wt_plus_b():
    v = demos.tinymodel().values
    assert v["total_parameters"] == 22210 == 100 * 200 + 200 + 200 * 10 + 10
    assert v["parameter_counts"]["linear2.weight"] == 2000 and v["linear2_weight_shape"] == [10, 200]
    assert v["requires_grad"] is True and v["batch_output_shape"] == [4, 10] and "Softmax(dim=-1)" in v["architecture"]
    torch.testing.assert_close(v["row_sums"], torch.ones(4))
    v = demos.linear_layer(seed=3).values
    assert v["weight_shape"] == [2, 3] and v["identity_holds"] is True and v["requires_grad"] is True
    torch.testing.assert_close(v["output"], v["input"] @ v["weight"].T + v["bias"])


def test_text_and_json_output_show_the_labs_numbers(tmp_path):
    proc = run_main("demo", "forward", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for expected in ("weighted_sum: 4.96", "step_output: 1", "[6.96, 1.867, 2.106]", "torch_dot: 7", "[ 5 12]",
                     "[12.9    1.523  4.058]"):  # fmt: skip
        assert expected in proc.stdout, expected
    proc = run_main(*"demo all --json --seed 5".split(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sections = json.loads(proc.stdout)["sections"]
    assert len(sections) == 9 and sections[0]["title"].startswith("The perceptron")
    by_title = {s["title"]: s["values"] for s in sections}
    exercise = by_title["Exercise: 5 inputs, 2 ReLU neurons"]
    assert exercise["seed"] == 5
    assert exercise["outputs"] == pytest.approx(demos.relu_exercise(5).values["outputs"].tolist())


def test_logdir_writes_model_graphs_tensorboard_can_read(tmp_path):
    proc = run_main("demo", "tinymodel", "--logdir", str(tmp_path / "graphs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for run in [tmp_path / "graphs" / "tinymodel", *demos.write_graphs(tmp_path / "more", ["mynn", "tinymodel"], 0)]:
        (file,) = run.glob("events.out.tfevents.*")
        acc = events(file)
        assert acc.Tags()["graph"] is True
        names = " ".join(node.name for node in acc.Graph().node)
        assert "linear1" in names and "linear2" in names


def test_mynn_shows_the_weights_a_fit_of_its_seed_starts_from(lab_run, tmp_path):
    shown = [json.loads(run_main(*f"demo mynn --json --seed {s}".split(), cwd=tmp_path).stdout) for s in (0, 5)]
    start = [d["sections"][0]["values"]["initial_weights"] for d in shown]
    state = torch.load(lab_run[0] / LAST, weights_only=True)[INITIAL_STATE_KEY]  # the lab's fit: seed 0
    assert start[0] == torch.cat([t.flatten() for t in state.values()]).tolist() and start[1] != start[0]
