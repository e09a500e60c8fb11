"""Two ``sweep`` commands sharing one study on a real PostgreSQL server (a throwaway cluster of Debian's ``postgresql``
on a Unix socket, as ``postgres`` under root); skipped without one unless REGRESSION_LAB_REQUIRE_POSTGRES=1.
Run: pytest tests/test_sweep_postgres.py"""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from helpers import fingerprint, one_error_line, run_main, start
from optuna.trial import TrialState

GRID = "--hidden_sizes 4 5 8 --lrs 0.01 0.02 --epochs 20 40 --seeds 0-19 --quiet".split()


def _unavailable(reason: str) -> None:
    if os.environ.get("REGRESSION_LAB_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_url():
    """A database on a fresh PostgreSQL cluster; its URL's password (ignored by trust auth) must never show."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        _unavailable("no PostgreSQL server binaries (apt-get install postgresql)")
    bindir, root, runuser = Path(initdb[-1]).parent, os.geteuid() == 0, shutil.which("runuser")
    if root and runuser is None:
        _unavailable("running as root without runuser")
    as_postgres = [runuser, "-u", "postgres", "--"] if root else []
    base = Path(tempfile.mkdtemp(prefix="regression-lab-pg-", dir="/tmp"))
    if root:
        shutil.chown(base, "postgres", "postgres")
    data = base / "data"

    def pg(tool: str, *args: str, check: bool = True) -> None:
        subprocess.run([*as_postgres, str(bindir / tool), *args], check=check, capture_output=True, timeout=120)

    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        pg("pg_ctl", "-D", str(data), "-w", "-l", str(base / "log"),
           "-o", f"-k {base} -c listen_addresses='' -p 5433", "start")  # fmt: skip
        pg("createdb", "-h", str(base), "-p", "5433", "-U", "postgres", "optuna")
    except (subprocess.CalledProcessError, OSError) as err:
        shutil.rmtree(base, ignore_errors=True)
        detail = getattr(err, "stderr", b"") or b""
        _unavailable(f"the server did not start: {err} {detail.decode(errors='replace')[-500:]}")
    try:
        yield f"postgresql+psycopg://postgres:s3cret@/optuna?host={base}&port=5433"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_two_commands_share_one_postgres_study_and_train_each_setting_once(postgres_url, tmp_path):
    args = ["sweep", *GRID, "--storage", postgres_url, "--study_name", "lab"]
    # Two "machines": two separate commands, started together, each with its own directory.
    procs = [start(*args, "--out", name, cwd=tmp_path) for name in ("machine_a", "machine_b")]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outputs]
    study = optuna.load_study(study_name="lab", storage=postgres_url)
    trained = {(t.params["hidden_size"], t.params["lr"]) for t in study.trials if t.state == TrialState.COMPLETE}
    assert trained == {(h, lr) for h in (4, 5, 8) for lr in (0.01, 0.02)}
    # Both took part (trial run directories on each "machine"), and both print the whole table.
    ran = {name: len(list((tmp_path / name).glob("trial_*"))) for name in ("machine_a", "machine_b")}
    assert sum(ran.values()) >= 6 and all(ran.values()), ran
    tables = [[line for line in out.splitlines() if not line.startswith("results: ")] for out, _ in outputs]
    assert tables[0] == tables[1] and len([line for line in tables[0] if line[:4].strip().isdigit()]) == 12
    # The password never shows: not in output, messages or files.
    for out, err in outputs:
        assert "s3cret" not in out + err and "postgres:***@" in err
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".csv", ".yaml")]
    assert not [p for p in written if "s3cret" in p.read_text(errors="replace")]  # both machines' directories
    # Any machine can report the study from the storage alone (here in-process, as can the refusal below).
    report = run_main("sweep", "--storage", postgres_url, "--study_name", "lab", "--report", cwd=tmp_path)
    assert report.returncode == 0 and report.stdout.splitlines() == tables[0], report.stderr[-2000:]
    # Another search space under the same name is refused, the study and the files left as they were.
    before, files = [(t.number, t.state, t.params) for t in study.trials], fingerprint(tmp_path)
    other = "--hidden_sizes 3 --seeds 0-19 --study_name lab --out machine_a".split()
    proc = run_main("sweep", *other, "--storage", postgres_url, cwd=tmp_path)
    line = one_error_line(proc, "searches another space")
    assert line.startswith("error: study 'lab' in postgresql+psycopg://postgres:***@") and "s3cret" not in proc.stderr
    after = optuna.load_study(study_name="lab", storage=postgres_url).trials
    assert [(t.number, t.state, t.params) for t in after] == before and fingerprint(tmp_path) == files
