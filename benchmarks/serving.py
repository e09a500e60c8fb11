"""The serve row's servers, its load (keep-alive clients on threads in a few processes) and its baseline, what a
user writes without LitServe (a FastAPI handler running MyNN per request)::

    python benchmarks/serving.py lightning_logs/version_0/checkpoints/last.ckpt 8001     # the baseline alone
"""

import contextlib
import http.client
import json
import multiprocessing as mp
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


def start_server(stack: contextlib.ExitStack, args: list[str]) -> int:
    """``python ARGS`` (``{port}``: a free port) until ``stack`` closes; its port, once /health answers 200."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, *(a.format(port=port) for a in args)]
    proc = stack.enter_context(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    stack.callback(proc.terminate)  # SIGTERM stops either server; leaving the Popen then waits for it
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return port  # urlopen raises (an OSError) for anything but a 2xx answer
        time.sleep(0.2)  # not listening, or not healthy, yet
    why = "timed out" if proc.poll() is None else f"exit {proc.returncode}: {proc.stderr.read()[-1000:]}"
    raise RuntimeError(f"{' '.join(args)} did not come up ({why})")


def _client(port: int, threads: int, seconds: float) -> list[tuple[int, int]]:
    """``threads`` keep-alive connections posting for ``seconds``: each one's answers, and those other than 200."""
    stop_at = time.monotonic() + seconds

    def loop(seed: int) -> tuple[int, int]:
        conn, answers, errors = http.client.HTTPConnection("127.0.0.1", port, timeout=30), 0, 0
        while time.monotonic() < stop_at:
            body = json.dumps({"x": (seed + answers) % 100})
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            (response := conn.getresponse()).read()
            answers, errors = answers + 1, errors + (response.status != 200)
        return answers, errors

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(loop, range(threads)))


def load(port: int, errors: list[int], processes: int = 4, seconds: float = 5.0, clients: int = 32) -> float:
    """``clients`` clients in ``processes`` processes for ``seconds``: requests/s (the failed count to ``errors``)."""
    per = [clients // processes + (k < clients % processes) for k in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:  # spawned: clean interpreters
        done = [c for part in pool.map(_client, [port] * processes, per, [seconds] * processes) for c in part]
    errors.append(sum(e for _, e in done))
    return sum(a for a, _ in done) / seconds


if __name__ == "__main__":
    import torch
    import uvicorn
    from fastapi import FastAPI

    from regression_lab.checkpoint import load_model

    model, app = load_model(sys.argv[1])[0], FastAPI()
    app.get("/health")(lambda: "ok")

    @app.post("/predict")
    def predict(body: dict) -> dict:
        with torch.no_grad():
            return {"prediction": float(model(torch.tensor([[float(body["x"])]])).item())}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
