"""serve: a real LitServe process on a free loopback port and an HTTP client: predict's answers, one-line 4xx errors,
the API key, loopback only, a load 10% malformed, SIGTERM draining (the last test on the module's one server);
every interface without a key, and SIGINT, on a server of its own.
Run: pytest tests/test_serve.py"""

import concurrent.futures
import http.client
import json
import os
import signal
from pathlib import Path

import pytest
from helpers import LAST, fit_in_process, free_port, run_main, start, wait_for

from regression_lab.predict import Predictor
from regression_lab.serve import PredictRequest, RegressionAPI

KEY = "test-key-1"


def healthy(port: int) -> bool:
    try:
        return call(port, "GET", "/health")[0] == 200
    except OSError:
        return False


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
    """``regression-lab serve`` of the lab's run with the API key, once it answers /health."""
    port, ckpt = free_port(), lab_run[0] / LAST
    env = {**os.environ, "REGRESSION_LAB_API_KEY": KEY}
    proc = start("serve", "--ckpt_path", str(ckpt), "--port", str(port), cwd=None, env=env)
    wait_for(lambda: healthy(port), proc, "the server's start", timeout=90)
    yield port, ckpt, proc
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)


BAD = [  # (the body, the status, a phrase of the detail)
    (b"not json", 400, "JSON decode error"), (b'{"x": 1', 400, "JSON decode"), ({"y": 1}, 422, "x: Field required"),
    ({"x": 1, "extra": 2}, 422, "body: Extra inputs are not permitted"),
    ({"x": "ten"}, 422, "x: Input should be a valid number"), ({"x": True}, 422, "x: Input should be a valid number"),
    (b'{"x": NaN}', 422, "x: Input should be a finite number"), (b'{"x": Infinity}', 422, "should be a finite number"),
    ({"x": 1e39}, 422, "x: Input should be less than or equal to 3402823466"),
    ({"x": []}, 422, "x: Value error, x must hold 1 to 10000 values, got 0"),
    ({"x": [10, 3e38]}, 422, "further out this model's prediction overflows float32"),  # a float32 x, too far
    (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "error parsing the body"),  # 200 kB nested 100,000 deep
    ({"x": [1, "a"]}, 422, "x[1]: Input should be a valid number"), ({"x": list(range(10_001))}, 422, "got 10001"),
    ([1, 2], 422, "body: Input should be a valid dictionary"), (b"{" + b" " * 1_100_000 + b"}", 413, "too large"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("payload, status, phrase", BAD, ids=range(len(BAD)))
def test_bad_requests_get_a_4xx_with_one_line_and_the_server_goes_on(server, payload, status, phrase):
    port, _, _ = server
    got, body = post(port, payload)
    assert got == status, body
    assert set(body) == {"detail"} and phrase in body["detail"] and "\n" not in json.dumps(body["detail"])
    assert post(port, {"x": 1})[0] == 200


@pytest.mark.slow
def test_the_key_the_content_type_the_address_and_a_port_in_use(server):
    port, ckpt, _ = server
    for key in ("", "wrong", "cl\xe9"):  # the last: a byte outside ASCII
        assert post(port, {"x": 1}, **{"X-API-Key": key})[0] == 401, key
    assert call(port, "GET", "/health", headers={"X-API-Key": "wrong"})[0] == 401
    assert post(port, {"x": 1}, **{"Content-Type": "text/plain"})[0] == 415
    assert call(port, "GET", "/predict")[0] == 405  # only a POST's body is checked
    # Bound to the loopback interface only: 127.0.0.1 in the kernel's table of listening sockets.
    sockets = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    listening = [fields[1] for fields in sockets if fields[3] == "0A"]
    assert f"0100007F:{port:04X}" in listening and f"00000000:{port:04X}" not in listening
    proc = run_main("serve", "--ckpt_path", str(ckpt), "--port", str(port), cwd=ckpt.parent)  # a second server
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def _rss_kb(pid: int) -> int:
    """Resident memory of a process and its children (the server's workers)."""
    pids = [pid, *Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    lines = (line for p in pids for line in Path(f"/proc/{p}/status").read_text().splitlines())
    return sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))


@pytest.mark.slow
def test_good_requests_answer_what_predict_answers_alone_and_in_a_load_of_32_clients_10_percent_malformed(server):
    port, ckpt, proc = server
    alone = [10.0, -3.5, 0.0, 1234567.0]
    predicted, _ = Predictor(ckpt)(alone)
    status, body = post(port, {"x": 10})
    assert status == 200 and body == {"prediction": pytest.approx(predicted[0], abs=1e-5)}
    status, body = post(port, {"x": alone})
    assert status == 200 and body["prediction"] == pytest.approx(predicted, abs=1e-3)
    n = 1600  # then the load: 1,600 requests from 32 clients
    xs = [float(i % 97) - 40.0 for i in range(n)]
    expected = dict(zip(sorted(set(xs)), Predictor(ckpt)(sorted(set(xs)))[0], strict=True))

    def client(part: int) -> list[tuple[int, bool]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # keep-alive, as real clients
        results = []
        for i in range(part, n, 32):
            if i % 10 == 0:
                status, _ = post(port, {"x": "bad"} if i % 20 else b"{oops", conn=conn)
                results.append((status, 400 <= status < 500))
            else:
                status, body = post(port, {"x": xs[i]}, conn=conn)
                # Within float32's rounding: a batch of other requests may be summed in another order.
                same = status == 200 and body["prediction"] == pytest.approx(expected[xs[i]], rel=3e-7, abs=1e-5)
                results.append((status, same))
        conn.close()
        return results

    client(0)  # warm up, then measure memory around the load
    before = _rss_kb(proc.pid)
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = [r for part in pool.map(client, range(32)) for r in part]
    after = _rss_kb(proc.pid)
    assert len(results) == n
    # Every good one is a 200 with predict's number and every malformed one (n // 10 of them) a 4xx: none is a 5xx.
    assert all(ok for _, ok in results), [s for s, ok in results if not ok][:10]
    assert after - before < 100_000, (before, after)  # kB: no growth with the number of requests


@pytest.mark.slow
def test_sigterm_finishes_the_requests_in_flight_then_says_so_and_exits_143(server):
    port, _, proc = server  # the module's server, stopped here: the last test to use it

    def one(_: int) -> int | str:
        try:
            return post(port, {"x": [1.0] * 5000})[0]
        except OSError as err:  # refused once the server stopped listening: never a wrong answer
            return type(err).__name__

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(200)]
        wait_for(lambda: any(f.done() for f in futures), proc, "a first answer")  # the others are in flight
        proc.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted by SIGTERM (the requests in flight were answered)"
    assert "Traceback" not in err
    statuses = [a for a in answers if isinstance(a, int)]
    assert statuses and set(statuses) == {200}  # answered ones are answered right; none is a 5xx


@pytest.mark.slow
def test_on_every_interface_without_a_key_it_warns_answers_anyone_and_sigint_ends_it(lab_ckpt):
    port, env = free_port(), {k: v for k, v in os.environ.items() if k != "REGRESSION_LAB_API_KEY"}
    proc = start("serve", "--ckpt_path", str(lab_ckpt), "--host", "0.0.0.0", "--port", str(port), cwd=None, env=env)
    wait_for(lambda: healthy(port), proc, "the server's start", timeout=90)
    status, body = post(port, {"x": 10}, **{"X-API-Key": ""})  # no key asked for, none given
    assert status == 200 and body == {"prediction": pytest.approx(Predictor(lab_ckpt)([10.0])[0][0], abs=1e-5)}
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "warning: serving on 0.0.0.0 without an API key: anyone who can reach this machine" in err
    assert err.strip().splitlines()[-1] == "interrupted by SIGINT (the requests in flight were answered)"


def test_an_ensemble_checkpoint_answers_the_spread_and_batched_requests_keep_their_shapes(tmp_path):
    fit_in_process(tmp_path, *"--model.num_seeds 5 --trainer.max_epochs 100".split())
    ckpt = tmp_path / LAST
    api = RegressionAPI(str(ckpt))  # what each LitServe worker runs, on a batch of two requests
    api.setup("cpu")
    preds, stds = Predictor(ckpt)([10.0, 3.0, 7.0])
    answers = api.predict([PredictRequest(x=[10, 3]), PredictRequest(x=7)])
    assert answers[0] == {"prediction": pytest.approx(preds[:2], abs=1e-6), "std": pytest.approx(stds[:2], abs=1e-6)}
    assert answers[1] == {"prediction": pytest.approx(preds[2], abs=1e-6), "std": pytest.approx(stds[2], abs=1e-6)}
