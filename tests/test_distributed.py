"""Scale-out on Lightning's own engine: DDP with two CPU processes (gloo) against one process; bf16 on a CPU.
Run: pytest tests/test_distributed.py"""

import contextlib
import os
import signal

import pytest
import torch
from helpers import LAST, RUN, events, fit_in_process, free_port, run_cli, start, wait_for

from regression_lab.data import RegressionDataModule
from regression_lab.models import MyNN

COMMON = (
    "--trainer.accelerator cpu --data.num_samples 7 --data.x_min 0 --data.x_max 4 --data.batch_size 3 "
    "--trainer.max_epochs 10 --trainer.check_val_every_n_epoch 5 --seed_everything 3"
).split()


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    (tmp_path / "ddp").mkdir()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    ddp = "--trainer.strategy ddp --trainer.devices 2".split()
    proc = run_cli("fit", *COMMON, *ddp, cwd=tmp_path / "ddp", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    single = fit_in_process(tmp_path / "single", *COMMON, "--trainer.devices", "1")
    # One set of logs and checkpoints, written by rank 0.
    assert sorted(p.name for p in (tmp_path / "ddp" / "lightning_logs").iterdir()) == ["version_0"]
    assert len(list((tmp_path / "ddp" / RUN).glob("events.out.tfevents.*"))) == 1
    ckpt = torch.load(tmp_path / "ddp" / LAST, map_location="cpu", weights_only=True)
    # Each epoch: the 7 samples once across shards of 4 and 3, 3 steps of the global batch 3 (one rank's last empty).
    assert ckpt["global_step"] == single.trainer.global_step == 30
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=1e-4, atol=1e-5)
    # Validation metrics are reduced across the ranks' shards of the 5 validation points.
    accs = [events(tmp_path / name / RUN, scalars=0) for name in ("ddp", "single")]
    ddp_val, single_val = ([acc.Scalars(f"val/{m}")[-1].value for m in ("loss", "r2")] for acc in accs)
    assert ddp_val == pytest.approx(single_val, rel=1e-3)  # the last val/loss and val/r2


@pytest.mark.slow
def test_a_sigint_to_the_first_of_two_processes_stops_both(tmp_path):
    # The signal reaches rank 0 alone (kill PID, not Ctrl-C's process group): both ranks must stop at one step.
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    saves = "--last_checkpoint.train_time_interval 0:00:01 --trainer.max_epochs 1000000"  # a save once it trains
    proc = start("fit", *COMMON, *"--trainer.strategy ddp --trainer.devices 2".split(), *saves.split(), cwd=tmp_path,
                 env=env, start_new_session=True)  # fmt: skip
    try:
        wait_for((tmp_path / LAST).exists, proc, "the first timed last.ckpt", timeout=300)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)  # not a hang: the other rank stopped too
    finally:
        with contextlib.suppress(ProcessLookupError):  # after a failure: neither rank left running
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and err.strip().splitlines()[-1].startswith("interrupted by SIGINT"), err[-2000:]


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    bf16 = "--trainer.accelerator cpu --trainer.precision bf16-mixed --trainer.max_epochs 50".split()
    cli = fit_in_process(tmp_path, *bf16)
    assert cli.trainer.precision == "bf16-mixed"
    x, y = RegressionDataModule().samples("train")
    initial = MyNN(5)
    initial.load_state_dict(cli.model.initial_state)
    with torch.no_grad():
        before, after = (torch.mean((net(x) - y) ** 2).item() for net in (initial, cli.model.net))
    assert cli.model.net.linear1.weight.dtype == torch.float32  # weights stay fp32, compute in bf16
    assert after < 0.05 * before
