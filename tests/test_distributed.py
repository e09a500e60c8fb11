"""Scale-out on Lightning's own engine: DDP with two CPU processes (gloo) against one process.

Run: pytest tests/test_distributed.py
"""

import pytest
import torch
from helpers import fit_in_process, free_port, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

COMMON = [
    "--trainer.accelerator", "cpu",
    "--data.num_samples", "64", "--data.x_min", "0", "--data.x_max", "4",
    "--data.batch_size", "16",  # the global batch: 8 per rank under DDP
    "--trainer.max_epochs", "10", "--trainer.check_val_every_n_epoch", "5",
    "--seed_everything", "3",
]  # fmt: skip


def final_val_loss(run_dir):
    (events,) = run_dir.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    return acc.Scalars("val/loss")[-1].value, acc.Scalars("val/r2")[-1].value


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    proc = run_cli(
        "fit",
        *COMMON,
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        cwd=tmp_path / "ddp",
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    single = fit_in_process(tmp_path / "single", *COMMON, "--trainer.devices", "1")

    # One set of logs and checkpoints, written by rank 0.
    runs = sorted(p.name for p in (tmp_path / "ddp" / "lightning_logs").iterdir())
    assert runs == ["version_0"]
    run = tmp_path / "ddp" / "lightning_logs" / "version_0"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)

    # Each epoch covers the 64 samples once across the ranks: 4 steps of the global batch 16,
    # not 4 steps per rank over a copy of everything (which would be 8 steps of 8).
    assert ckpt["global_step"] == single.trainer.global_step == 40
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=1e-4, atol=1e-5)

    # Validation metrics are reduced across the ranks' shards of the 5 validation points.
    ddp_loss, ddp_r2 = final_val_loss(run)
    single_loss, single_r2 = final_val_loss(tmp_path / "single" / "lightning_logs" / "version_0")
    assert ddp_loss == pytest.approx(single_loss, rel=1e-3)
    assert ddp_r2 == pytest.approx(single_r2, rel=1e-3)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    cli = fit_in_process(
        tmp_path, "--trainer.accelerator", "cpu", "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "50"
    )
    from regression_lab.data import RegressionDataModule
    from regression_lab.models import MyNN

    assert cli.trainer.precision == "bf16-mixed"
    x, y = RegressionDataModule().samples("train")
    initial = MyNN(5)
    initial.load_state_dict(cli.model.initial_state)
    with torch.no_grad():
        before = torch.mean((initial(x) - y) ** 2).item()
        after = torch.mean((cli.model.net(x) - y) ** 2).item()
    assert cli.model.net.linear1.weight.dtype == torch.float32  # weights stay fp32, compute in bf16
    assert after < 0.05 * before
