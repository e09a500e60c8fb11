"""The serving benchmark's parts: a bare FastAPI + uvicorn baseline and a load generator.

The baseline is what a user would write without LitServe: one handler that runs ``MyNN`` on
each request. The load generator runs several client processes, each with keep-alive
connections on threads, for a fixed time, and returns requests/s and latency percentiles.
Run the baseline alone with::

    python benchmarks/serving.py CKPT PORT
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import statistics
import sys
import threading
import time
from typing import Any


def bare_app(ckpt: str) -> Any:
    """A FastAPI app answering POST /predict {"x": number} with the checkpoint's MyNN, per request."""
    import torch
    from fastapi import FastAPI

    from regression_lab.core.checkpoints import load_mynn

    model, _ = load_mynn(ckpt)
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict) -> dict:
        with torch.no_grad():
            return {"prediction": float(model(torch.tensor([[float(body["x"])]])).item())}

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app


def _client(port: int, threads: int, seconds: float, headers: dict, out: Any) -> None:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop(seed: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad, i = [], 0, seed
        while time.monotonic() < stop_at:
            body = json.dumps({"x": float(i % 100)})
            start = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - start)
            bad += response.status != 200
            i += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((latencies, errors[0]))


def load(port: int, clients: int = 32, processes: int = 4, seconds: float = 5.0, api_key: str | None = None) -> dict:
    """``clients`` keep-alive clients in ``processes`` processes for ``seconds``: requests/s, p50, p99."""
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    per = [clients // processes + (k < clients % processes) for k in range(processes)]
    procs = [ctx.Process(target=_client, args=(port, n, seconds, headers, queue)) for n in per if n]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    latencies = sorted(t for lat, _ in results for t in lat)
    errors = sum(e for _, e in results)
    return {
        "requests_per_s": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else float("nan"),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3 if latencies else float("nan"),
        "errors": errors,
    }


def wait_healthy(port: int, proc: Any, api_key: str | None = None, timeout: float = 90) -> None:
    """Wait until GET /health answers 200 (or fail if the server process ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read()[-1000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health", headers={"X-API-Key": api_key} if api_key else {})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not come up")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(bare_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
