"""serve: a real LitServe server as a subprocess on a free loopback port, and a real HTTP client.
Good requests answer what ``predict`` answers, bad ones a 4xx with a one-line JSON error and the
server goes on; the API key; loopback only; a load of 10,000 requests from 32 clients with 10%
malformed; SIGTERM drains, then one line and 143; bad start-up is one line and exit 2. Slow tier.

Run: pytest tests/test_serve.py
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli_command, free_port, one_error_line, run_main

from regression_lab.predict import Predictor

KEY = "test-key-1"


def start(ckpt: Path, port: int, *extra: str, key: str | None = KEY) -> subprocess.Popen:
    args = [*cli_command(), "serve", "--ckpt_path", str(ckpt), "--port", str(port), *extra]
    env = {**os.environ, "REGRESSION_LAB_API_KEY": key or ""}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the server did not come up"
        try:
            status, _ = call(port, "GET", "/health")
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, dict | str]:  # fmt: skip
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"X-API-Key": KEY, **(headers or {})})
        response = conn.getresponse()
        raw = response.read().decode()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw
    finally:
        if own:
            conn.close()


def post(port: int, payload: object, conn: http.client.HTTPConnection | None = None, **headers: str):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return call(port, "POST", "/predict", body, {"Content-Type": "application/json", **headers}, conn)


@pytest.fixture(scope="module")
def server(lab_run):
    workdir, _ = lab_run
    ckpt = workdir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    port = free_port()
    proc = start(ckpt, port)
    yield port, ckpt, proc
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)


@pytest.mark.slow
def test_good_requests_answer_what_predict_answers(server):
    port, ckpt, _ = server
    xs = [10.0, -3.5, 0.0, 1234567.0]
    expected, _ = Predictor(ckpt)(xs)
    status, body = post(port, {"x": 10})
    assert status == 200 and body == {"prediction": pytest.approx(expected[0], abs=1e-5)}
    status, body = post(port, {"x": xs})
    assert status == 200 and body["prediction"] == pytest.approx(expected, abs=1e-3)


BAD = [
    (b"not json", 400),
    (b'{"x": 1', 400),
    ({"y": 1}, 422),
    ({"x": 1, "extra": 2}, 422),
    ({"x": "ten"}, 422),
    ({"x": True}, 422),
    (b'{"x": NaN}', 422),
    (b'{"x": Infinity}', 422),
    ({"x": 1e39}, 422),
    ({"x": []}, 422),
    (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),  # 200 kB nested 100,000 deep
    ({"x": [1, "a"]}, 422),
    ({"x": list(range(10_001))}, 422),
    ([1, 2], 422),
    (b"{" + b" " * 1_100_000 + b"}", 413),
]


@pytest.mark.slow
@pytest.mark.parametrize("payload, status", BAD, ids=range(len(BAD)))
def test_bad_requests_get_a_4xx_with_one_line_and_the_server_goes_on(server, payload, status):
    port, _, _ = server
    got, body = post(port, payload)
    assert got == status, body
    assert isinstance(body, dict) and set(body) == {"detail"} and "\n" not in json.dumps(body["detail"])
    assert post(port, {"x": 1})[0] == 200


@pytest.mark.slow
def test_the_key_the_content_type_and_the_address(server):
    port, _, proc = server
    assert post(port, {"x": 1}, **{"X-API-Key": ""})[0] == 401
    assert post(port, {"x": 1}, **{"X-API-Key": "wrong"})[0] == 401
    assert post(port, {"x": 1}, **{"X-API-Key": "cl\xe9"})[0] == 401  # a byte outside ASCII
    assert call(port, "GET", "/health", headers={"X-API-Key": "wrong"})[0] == 401
    assert post(port, {"x": 1}, **{"Content-Type": "text/plain"})[0] == 415
    # Bound to the loopback interface only: 127.0.0.1 in the kernel's table of listening sockets.
    listening = [
        line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:] if line.split()[3] == "0A"
    ]
    assert f"0100007F:{port:04X}" in listening and f"00000000:{port:04X}" not in listening


def _rss_kb(pid: int) -> int:
    """Resident memory of a process and its children (the server's workers)."""
    total = 0
    for p in [pid, *[int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


@pytest.mark.slow
def test_load_32_clients_10000_requests_10_percent_malformed(server):
    port, ckpt, proc = server
    xs = [float(i % 97) - 40.0 for i in range(10_000)]
    expected = dict(zip(sorted(set(xs)), Predictor(ckpt)(sorted(set(xs)))[0], strict=True))

    def client(part: int) -> list[tuple[int, bool]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # keep-alive, as real clients
        results = []
        for i in range(part, 10_000, 32):
            if i % 10 == 0:
                status, _ = post(port, {"x": "bad"} if i % 20 else b"{oops", conn=conn)
                results.append((status, 400 <= status < 500))
            else:
                status, body = post(port, {"x": xs[i]}, conn=conn)
                results.append((status, status == 200 and abs(body["prediction"] - expected[xs[i]]) <= 1e-5))
        conn.close()
        return results

    client(0)  # warm up, then measure memory around the load
    before = _rss_kb(proc.pid)
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = [r for part in pool.map(client, range(32)) for r in part]
    after = _rss_kb(proc.pid)
    assert len(results) == 10_000
    assert all(ok for _, ok in results), [s for s, ok in results if not ok][:10]
    assert sum(1 for s, _ in results if 400 <= s < 500) == 1000
    assert not [s for s, _ in results if s >= 500]
    assert after - before < 100_000, (before, after)  # kB: no growth with the number of requests


@pytest.mark.slow
def test_sigterm_finishes_the_requests_in_flight_then_says_so_and_exits_143(lab_run):
    workdir, _ = lab_run
    ckpt = workdir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    port = free_port()
    proc = start(ckpt, port)

    def one(_: int) -> int | str:
        try:
            return post(port, {"x": [1.0] * 5000})[0]
        except OSError as err:  # refused once the server stopped listening: never a wrong answer
            return type(err).__name__

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(200)]
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted by SIGTERM (the requests in flight were answered)"
    assert "Traceback" not in err
    statuses = [a for a in answers if isinstance(a, int)]
    assert statuses and set(statuses) == {200}  # answered ones are answered right; none is a 5xx


@pytest.mark.slow
def test_an_ensemble_checkpoint_answers_the_spread(tmp_path):
    from helpers import fit_in_process

    fit_in_process(tmp_path, "--model.num_seeds", "5", "--trainer.max_epochs", "100")
    ckpt = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    port = free_port()
    proc = start(ckpt, port, key=None)
    try:
        preds, stds = Predictor(ckpt)([10.0, 3.0])
        status, body = post(port, {"x": [10, 3]})
        assert status == 200
        assert body["prediction"] == pytest.approx(preds, abs=1e-5) and body["std"] == pytest.approx(stds, abs=1e-5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--ckpt_path", "missing.ckpt"], "checkpoint not found: missing.ckpt"),
        (["--ckpt_path", "junk.ckpt"], "not a readable checkpoint"),
        ([], "no checkpoint found"),
        (["--port", "80"], "--port must be an integer >= 1024"),
        (["--host", "10.0.0.1"], "host"),
        (["--port", "70000"], "--port must be <= 65,535"),
        (["--max_batch_size", "0"], "--max_batch_size must be an integer >= 1"),
        (["--batch_timeout", "-1"], "--batch_timeout must be a finite number >= 0"),
    ],
)
def test_bad_start_up_is_one_line_exit_2(tmp_path, args, phrase):
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    proc = run_main("serve", *args, cwd=tmp_path)
    one_error_line(proc, phrase)
    assert proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_a_port_in_use_is_one_line_exit_2(server, lab_run):
    port, ckpt, _ = server
    proc = run_main("serve", "--ckpt_path", str(ckpt), "--port", str(port), cwd=ckpt.parent)
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr
